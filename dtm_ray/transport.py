"""The transport's rules, defined once: what one message and one call may carry between parties.

The Ray host (``actors/host.py``) and the simulated network (``dtm_ray/sim/network.py``) both
enforce these, so a message too big for the real cluster is too big in the simulator, and a run
that would wedge on Ray shows its drops in the simulator's counters.

- **One message** is at most ``max_message_bytes``: the decoder's limit on one field
  (``wire.MAX_FIELD_BYTES``). Every payload is an ``Envelope`` whose ``body`` field holds the
  whole inner message, so a payload any larger would carry a body the decoder refuses, at every
  receiver, forever. A larger message is dropped where it is sent and counted.
- **One call** (the messages a party sends one destination in one turn, coalesced) carries at
  most ``max_messages_per_call`` messages and ``max_bytes_per_call`` bytes: a sender splits a
  longer batch into several calls (``calls``); a receiver looks at no more than one call's worth
  (``admit``) and counts the rest as dropped.
- **Inbound budget.** Each receiver charges a call's messages to a token bucket per sender
  (``inbound_rate_per_s`` sustained, ``inbound_burst`` at once; ``InboundBudget``); a call over
  budget is dropped whole and counted. Both are far above what a correct peer sends.

Pure: no clock (callers pass ``now_ms``), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.errors import ConfigError
from dtm_ray.limits import TokenBucket
from dtm_ray.wire import MAX_FIELD_BYTES


@dataclass(frozen=True, slots=True)
class TransportRules:
    max_message_bytes: int = MAX_FIELD_BYTES
    max_messages_per_call: int = 4096
    max_bytes_per_call: int = 16 * 1024 * 1024
    inbound_rate_per_s: int = 50_000
    inbound_burst: int = 20_000

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_messages_per_call", "max_bytes_per_call",
                     "inbound_rate_per_s", "inbound_burst"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TransportRules.{name} must be positive, got {getattr(self, name)}")
        if self.max_message_bytes > self.max_bytes_per_call:
            raise ConfigError(f"max_message_bytes {self.max_message_bytes} exceeds max_bytes_per_call "
                              f"{self.max_bytes_per_call}: such a message could never be sent")

    def fits(self, payload: bytes) -> bool:
        """Whether one message may travel at all."""
        return len(payload) <= self.max_message_bytes

    def calls(self, payloads: list[bytes]) -> list[list[bytes]]:
        """A sender's batch for one destination, split into calls within the per-call caps
        (every payload already ``fits``); order is kept."""
        return [payloads[part.start:part.stop] for part in self.split([len(p) for p in payloads])]

    def split(self, sizes: list[int]) -> list[range]:
        """``calls`` by index: the ranges of a batch of messages of these sizes, one per call."""
        out: list[range] = []
        start, size = 0, 0
        for index, n in enumerate(sizes):
            if index > start and (index - start == self.max_messages_per_call or size + n > self.max_bytes_per_call):
                out.append(range(start, index))
                start, size = index, 0
            size += n
        if start < len(sizes):
            out.append(range(start, len(sizes)))
        return out

    def admit(self, payloads: list | tuple) -> tuple[list, int]:
        """The part of one incoming call a receiver looks at, and how many payloads it drops."""
        kept = list(payloads[: self.max_messages_per_call])
        size = 0
        for index, payload in enumerate(kept):
            size += len(payload) if isinstance(payload, (bytes, bytearray)) else 0
            if size > self.max_bytes_per_call:
                kept = kept[:index]
                break
        return kept, len(payloads) - len(kept)


DEFAULT_RULES = TransportRules()


class InboundBudget:
    """A receiver's per-sender budget: a call of ``n`` messages costs ``n`` tokens."""

    def __init__(self, rules: TransportRules) -> None:
        self._bucket = TokenBucket(rules.inbound_rate_per_s, rules.inbound_burst)

    def allow(self, sender: str, messages: int, now_ms: int) -> bool:
        return self._bucket.allow(sender, now_ms, cost=max(1, messages))
