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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from dtm_ray.errors import ConfigError


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
    by_sender: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"messages": self.messages, "bytes": self.bytes, "delivered": self.delivered,
                "dropped": self.dropped, "blocked": self.blocked, "duplicated": self.duplicated}


class Network:
    def __init__(self, rng: random.Random, config: NetworkConfig | None = None) -> None:
        self._rng = rng
        self._initial = config or NetworkConfig()
        self.config = self._initial
        self._group_of: dict[str, int] = {}
        self._cut: set[tuple[str, str]] = set()
        self._slow: dict[str, int] = {}  # party -> extra delay on everything it sends
        self.counters = NetworkCounters()

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

    # -- the one decision -----------------------------------------------------------------------
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
