"""When to resend something that has not been answered yet: exponential backoff.

A fixed resend period turns a slow system into a flooded one: when a queue makes every answer
take seconds, each waiting request, PREPARE and decision is sent again every period, by every
replica, and the resends (each verified, decoded, deduplicated) eat the CPU the queue needed to
drain (measured on the Ray runtime: latency of 7 s with 200 and 400 ms resend periods). So each
key waits ``base_ms`` before its first resend and twice as long before each next one, up to
``base_ms * max_factor``. A lost message is still resent (liveness over a lossy network); a slow
answer costs a handful of resends instead of one per period.
"""

from __future__ import annotations

from typing import Generic, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_FACTOR = 16


class Backoff(Generic[K]):
    def __init__(self, base_ms: int, max_factor: int = MAX_FACTOR) -> None:
        self.base_ms = base_ms
        self.cap_ms = base_ms * max_factor
        self._sent: dict[K, tuple[int, int]] = {}  # key -> (last sent at, wait before the next send)

    def sent(self, key: K, now_ms: int) -> None:
        """``key`` left now: its first send waits ``base_ms`` before a resend; each resend doubles it."""
        previous = self._sent.get(key)
        wait = self.base_ms if previous is None else min(previous[1] * 2, self.cap_ms)
        self._sent[key] = (now_ms, wait)

    def due(self, key: K, now_ms: int) -> bool:
        """True when ``key`` was never sent or its wait has passed."""
        entry = self._sent.get(key)
        return entry is None or now_ms - entry[0] >= entry[1]

    def forget(self, key: K) -> None:
        """Answered: the next send of ``key`` (if any) starts from ``base_ms`` again."""
        self._sent.pop(key, None)

    def keep_only(self, keys: Iterable[K]) -> None:
        keep = set(keys)
        self._sent = {k: v for k, v in self._sent.items() if k in keep}

    def __contains__(self, key: object) -> bool:
        return key in self._sent

    def __len__(self) -> int:
        return len(self._sent)
