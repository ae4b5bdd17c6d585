"""f+1 matching claims from distinct replicas: the rule a participant acts by.

Each replica has at most one claim per slot (its latest replaces the previous one, so a faulty
replica cannot vote twice); a claim wins when ``threshold`` distinct replicas made it with the
same canonical bytes. With at most f faulty replicas, f+1 matching claims include a correct one.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Claims(Generic[T]):
    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._by_slot: dict[int, dict[str, tuple[bytes, T]]] = {}

    def add(self, slot: int, replica: str, key: bytes, item: T) -> T | None:
        """Record ``replica``'s claim ``item`` (canonical bytes ``key``); returns the winning item
        once ``threshold`` replicas agree on it."""
        claims = self._by_slot.setdefault(slot, {})
        claims[replica] = (key, item)
        return self.winner(slot)

    def winner(self, slot: int) -> T | None:
        claims = self._by_slot.get(slot)
        if not claims or len(claims) < self.threshold:
            return None
        counts: dict[bytes, int] = {}
        for key, item in claims.values():
            counts[key] = counts.get(key, 0) + 1
            if counts[key] >= self.threshold:
                return item
        return None

    def drop(self, slot: int) -> None:
        self._by_slot.pop(slot, None)

    def slots(self) -> list[int]:
        return list(self._by_slot)

    def __len__(self) -> int:
        return len(self._by_slot)
