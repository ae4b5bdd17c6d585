"""The simulated network: what happens to one message between two parties.

The network decides, for every message a party sends, how many copies arrive (none if it is
dropped or the link is down, two if it is duplicated) and after how long. Reordering is not a
separate mechanism: every copy draws its own delay, so two messages on one link overtake each
other whenever the later one draws a shorter delay (``reorder_rate`` adds an occasional long
detour to make that frequent).

Rules of this module:
- All randomness comes from the ``random.Random`` the simulation hands in; the network owns no
  clock and no queue (the simulation schedules the deliveries it returns).
- Partitions are groups: two parties listed in different groups cannot talk. A party that no
  group lists (a client, a participant) is unaffected and reaches everybody, which is what a
  test usually means by "partition the replicas".
- Cuts are per directed link and independent of partitions; ``heal`` removes both and resets
  the lossy settings to the network's initial ``NetworkConfig``.
- Everything offered to the network is counted (messages, bytes, drops, duplicates), so a
  benchmark can report messages and bytes per committed request.
- The host's transport rules (``dtm_ray.transport.TransportRules``) hold here too, before any
  fault: what one party sends one destination in one step is one call, as the Ray host
  coalesces it; a message over the size limit is dropped and counted (``oversized``), a batch is
  split into calls within the per-call caps, and each call is charged to the receiver's budget
  for that sender (over budget: ``rate_limited``). Nothing the real cluster refuses arrives here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from dtm_ray.errors import ConfigError
from dtm_ray.transport import DEFAULT_RULES, InboundBudget, TransportRules


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How a healthy (or deliberately lossy) network behaves; times in virtual ms."""

    min_delay_ms: int = 1
    max_delay_ms: int = 8
    drop_rate: float = 0.0  # probability a message is lost
    duplicate_rate: float = 0.0  # probability a message arrives twice
    reorder_rate: float = 0.0  # probability a message takes a long detour (arrives late)
    reorder_extra_ms: int = 40  # the longest detour

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ConfigError(f"need 0 <= min_delay_ms <= max_delay_ms, got {self.min_delay_ms}, {self.max_delay_ms}")
        for name in ("drop_rate", "duplicate_rate", "reorder_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {rate}")
        if self.reorder_extra_ms < 0:
            raise ConfigError(f"reorder_extra_ms must be >= 0, got {self.reorder_extra_ms}")


@dataclass(slots=True)
class NetworkCounters:
    messages: int = 0  # offered by senders
    bytes: int = 0
    delivered: int = 0  # copies scheduled for delivery (duplicates count twice)
    dropped: int = 0  # lost to drop_rate
    blocked: int = 0  # lost to a partition or a cut
    duplicated: int = 0
    calls: int = 0  # host calls the messages travelled in (a long batch takes several)
    oversized: int = 0  # refused by the transport rules: over max_message_bytes
    rate_limited: int = 0  # refused by the transport rules: over the receiver's inbound budget
    by_sender: dict[str, int] = field(default_factory=dict)
    oversized_by_link: dict[tuple[str, str], int] = field(default_factory=dict)  # (src, dest) -> largest

    def as_dict(self) -> dict:
        return {"messages": self.messages, "bytes": self.bytes, "delivered": self.delivered,
                "dropped": self.dropped, "blocked": self.blocked, "duplicated": self.duplicated,
                "calls": self.calls, "oversized": self.oversized, "rate_limited": self.rate_limited}


class Network:
    def __init__(self, rng: random.Random, config: NetworkConfig | None = None,
                 rules: TransportRules = DEFAULT_RULES) -> None:
        self._rng = rng
        self.rules = rules
        self._budgets: dict[str, InboundBudget] = {}  # per receiver
        self._initial = config or NetworkConfig()
        self.config = self._initial
        self._group_of: dict[str, int] = {}
        self._cut: set[tuple[str, str]] = set()
        self._slow: dict[str, int] = {}  # party -> extra delay on everything it sends
        self.counters = NetworkCounters()

    def set_rules(self, rules: TransportRules) -> None:
        """Other transport rules from now on (a test's smaller limits); budgets start afresh."""
        self.rules = rules
        self._budgets.clear()

    # -- faults ---------------------------------------------------------------------------------
    def set_lossy(self, **changes) -> None:
        """Change the lossy settings (drop_rate=..., duplicate_rate=..., delays...) until ``heal``."""
        self.config = replace(self.config, **changes)

    def partition(self, *groups: list[str] | tuple[str, ...] | set[str]) -> None:
        """Split the listed parties into ``groups`` that cannot reach each other (replaces any
        earlier partition). Parties in no group are unaffected."""
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            for party in group:
                if party in group_of:
                    raise ConfigError(f"{party!r} is in two partition groups")
                group_of[party] = index
        self._group_of = group_of

    def cut(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Lose every message from ``a`` to ``b`` (and back, unless ``both_ways=False``)."""
        self._cut.add((a, b))
        if both_ways:
            self._cut.add((b, a))

    def restore(self, a: str, b: str) -> None:
        self._cut.discard((a, b))
        self._cut.discard((b, a))

    def slow(self, party: str, extra_ms: int) -> None:
        """Everything ``party`` sends takes ``extra_ms`` longer (a slow node, or a ``delay`` fault
        done by the network rather than by a behaviour); 0 makes it normal again."""
        if extra_ms < 0:
            raise ConfigError(f"extra_ms must be >= 0, got {extra_ms}")
        if extra_ms:
            self._slow[party] = extra_ms
        else:
            self._slow.pop(party, None)

    def heal(self) -> None:
        """No partitions, no cuts, no slow parties, and the lossy settings the network started with."""
        self._group_of = {}
        self._cut.clear()
        self._slow.clear()
        self.config = self._initial

    def can_reach(self, src: str, dest: str) -> bool:
        if (src, dest) in self._cut:
            return False
        g_src, g_dest = self._group_of.get(src), self._group_of.get(dest)
        return g_src is None or g_dest is None or g_src == g_dest

    # -- the transport rules, then the one decision per message --------------------------------
    def route_step(self, src: str, messages: list[tuple[str, bytes]], now_ms: int) -> list[tuple[str, bytes, int]]:
        """What ``src`` sends in one step, as the host would carry it: ``(dest, payload, delay)``
        for every copy that arrives. The rules decide per destination (one call each, split by
        the caps); the faults then decide per message, in the order they were sent."""
        by_dest: dict[str, list[int]] = {}
        for index, (dest, _) in enumerate(messages):
            by_dest.setdefault(dest, []).append(index)
        admitted = [False] * len(messages)
        for dest, indices in by_dest.items():
            for index in self._admitted(src, dest, [(i, messages[i][1]) for i in indices], now_ms):
                admitted[index] = True
        return [(dest, payload, delay) for (dest, payload), ok in zip(messages, admitted) if ok
                for delay in self.route(src, dest, payload)]

    def _admitted(self, src: str, dest: str, call: list[tuple[int, bytes]], now_ms: int) -> list[int]:
        """The indices of the messages of one call that the transport rules let through."""
        rules, c = self.rules, self.counters
        sendable = []
        for index, payload in call:
            if rules.fits(payload):
                sendable.append((index, payload))
            else:
                self._refused(src, payload)
                c.oversized += 1
                c.oversized_by_link[(src, dest)] = max(c.oversized_by_link.get((src, dest), 0), len(payload))
        budget = self._budgets.get(dest) or self._budgets.setdefault(dest, InboundBudget(rules))
        out = []
        for part in rules.split([len(payload) for _, payload in sendable]):
            c.calls += 1
            if budget.allow(src, len(part), now_ms):
                out.extend(sendable[i][0] for i in part)
            else:
                for i in part:
                    self._refused(src, sendable[i][1])
                c.rate_limited += len(part)
        return out

    def _refused(self, src: str, payload: bytes) -> None:
        """Offered, so counted as offered, but never routed."""
        c = self.counters
        c.messages += 1
        c.bytes += len(payload)
        c.by_sender[src] = c.by_sender.get(src, 0) + 1

    def route(self, src: str, dest: str, payload: bytes) -> list[int]:
        """The delays (ms) after which copies of this message arrive: [] lost, 2 items duplicated."""
        c = self.counters
        c.messages += 1
        c.bytes += len(payload)
        c.by_sender[src] = c.by_sender.get(src, 0) + 1
        if not self.can_reach(src, dest):
            c.blocked += 1
            return []
        cfg, rng = self.config, self._rng
        if cfg.drop_rate and rng.random() < cfg.drop_rate:
            c.dropped += 1
            return []
        copies = 2 if cfg.duplicate_rate and rng.random() < cfg.duplicate_rate else 1
        if copies == 2:
            c.duplicated += 1
        extra = self._slow.get(src, 0)
        delays = [extra + self._delay() for _ in range(copies)]
        c.delivered += copies
        return delays

    def _delay(self) -> int:
        cfg, rng = self.config, self._rng
        delay = rng.randint(cfg.min_delay_ms, cfg.max_delay_ms)
        if cfg.reorder_rate and rng.random() < cfg.reorder_rate:
            delay += rng.randint(0, cfg.reorder_extra_ms)
        return delay

    def describe(self) -> str:
        groups: dict[int, list[str]] = {}
        for party, g in self._group_of.items():
            groups.setdefault(g, []).append(party)
        parts = [f"partition={sorted(map(sorted, groups.values()))}"] if groups else []
        if self._cut:
            parts.append(f"cuts={sorted(self._cut)}")
        if self._slow:
            parts.append(f"slow={sorted(self._slow.items())}")
        cfg = self.config
        parts.append(f"drop={cfg.drop_rate} dup={cfg.duplicate_rate} reorder={cfg.reorder_rate}")
        return " ".join(parts)
