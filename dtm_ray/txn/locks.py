"""Deterministic locking (as in Calvin): locks are queued in participant sequence order.

A participant enqueues a transaction's lock requests when it accepts its prepare, strictly in
``pseq`` order, and a transaction runs once it is at the head of every queue it is in. Every
correct participant therefore grants locks in one global order: no deadlock is possible and no
transaction ever aborts because of a lock conflict; transactions on disjoint keys never wait for
each other. Locks are exclusive (a read locks its key too): simple, and serializable.
"""

from __future__ import annotations

from collections import deque


class LockTable:
    def __init__(self) -> None:
        self._queues: dict[str, deque[int]] = {}
        self._held_by: dict[int, tuple[str, ...]] = {}

    def enqueue(self, pseq: int, keys: tuple[str, ...]) -> None:
        """Queue ``pseq`` behind everything already queued on ``keys`` (callers go in pseq order)."""
        self._held_by[pseq] = keys
        for key in keys:
            self._queues.setdefault(key, deque()).append(pseq)

    def granted(self, pseq: int) -> bool:
        """Does ``pseq`` hold every lock it asked for?"""
        keys = self._held_by.get(pseq)
        return keys is not None and all(self._queues[k][0] == pseq for k in keys)

    def release(self, pseq: int) -> list[int]:
        """Drop ``pseq`` from its queues; returns the transactions that moved to a queue's head."""
        promoted = []
        for key in self._held_by.pop(pseq, ()):
            queue = self._queues[key]
            was_head = queue[0] == pseq
            queue.remove(pseq)
            if not queue:
                del self._queues[key]
            elif was_head:
                promoted.append(queue[0])
        return promoted

    def locked_keys(self) -> int:
        return len(self._queues)

    def waiting(self) -> int:
        """Transactions queued behind another one on some key."""
        return sum(1 for p in self._held_by if not self.granted(p))
