"""f+1 matching claims from distinct replicas: the rule a participant acts by.

Each replica has at most one claim per slot (its latest replaces the previous one, so a faulty
replica cannot vote twice); a claim wins when ``threshold`` distinct replicas made it with the
same canonical bytes. With at most f faulty replicas, f+1 matching claims include a correct one.

What one replica's claims may hold is bounded in bytes (``max_bytes_per_replica``: the sum of
its claims' canonical bytes over all slots not yet decided), so a faulty replica filling every
slot of the window with huge claims exhausts its own budget, never another replica's.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Claims(Generic[T]):
    def __init__(self, threshold: int, max_bytes_per_replica: int | None = None) -> None:
        self.threshold = threshold
        self.max_bytes = max_bytes_per_replica
        self._by_slot: dict[int, dict[str, tuple[bytes, T]]] = {}
        self._bytes: dict[str, int] = {}  # replica -> bytes of its claims held

    def fits(self, slot: int, replica: str, size: int) -> bool:
        """Whether a claim of ``size`` bytes by ``replica`` at ``slot`` stays within its budget."""
        if self.max_bytes is None:
            return True
        old = self._by_slot.get(slot, {}).get(replica)
        return self._bytes.get(replica, 0) - (len(old[0]) if old else 0) + size <= self.max_bytes

    def add(self, slot: int, replica: str, key: bytes, item: T) -> T | None:
        """Record ``replica``'s claim ``item`` (canonical bytes ``key``); returns the winning item
        once ``threshold`` replicas agree on it."""
        claims = self._by_slot.setdefault(slot, {})
        old = claims.get(replica)
        self._bytes[replica] = self._bytes.get(replica, 0) - (len(old[0]) if old else 0) + len(key)
        claims[replica] = (key, item)
        return self.winner(slot)

    def held_bytes(self, replica: str) -> int:
        return self._bytes.get(replica, 0)

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

    def keys_at(self, slot: int) -> dict[str, bytes]:
        """Each replica's claim at ``slot``, as canonical bytes."""
        return {replica: key for replica, (key, _item) in self._by_slot.get(slot, {}).items()}

    def drop(self, slot: int) -> None:
        for replica, (key, _item) in self._by_slot.pop(slot, {}).items():
            self._bytes[replica] -= len(key)

    def slots(self) -> list[int]:
        return list(self._by_slot)

    def __len__(self) -> int:
        return len(self._by_slot)
