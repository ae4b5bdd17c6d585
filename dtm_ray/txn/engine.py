"""What a participant's data is and what a transaction's ops do to it.

A participant runs a transaction's ops only once it holds the locks on every key they touch
(``locks``), so the committed data it reads here cannot change until the transaction is decided.
Executing produces a vote: YES with the values read and the *intents* (the writes to make on
COMMIT), or NO with a reason (a guard that fails, a type error). Nothing is changed before the
decision: COMMIT applies the intents, ABORT drops them.

Storage layout (one participant's own store):

- kv:    ``d/<key>`` -> ``Cell(value)``
- queue: ``q/<index, 20 digits>`` -> ``Cell(item)``; the head is the lowest index
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dtm_ray.node import Storage, Write
from dtm_ray.txn.messages import Cell, KeyWrite
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode, encode

DATA_PREFIX = b"d/"
QUEUE_PREFIX = b"q/"


@dataclass
class Outcome:
    """The result of executing one transaction's ops at one participant."""

    yes: bool
    reads: list[Any] = field(default_factory=list)
    reason: str | None = None
    writes: tuple[KeyWrite, ...] = ()
    dequeues: int = 0
    enqueues: list[Any] = field(default_factory=list)


def _cell(value: Any) -> bytes:
    return encode(Cell(value))


def _uncell(raw: bytes) -> Any:
    return decode(raw, Cell).value


class KvData:
    """A database: committed key -> value."""

    def __init__(self, name: str, storage: Storage) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            k[len(DATA_PREFIX):].decode(): _uncell(v) for k, v in storage.items(DATA_PREFIX)}

    def execute(self, ops: tuple[Op, ...]) -> Outcome:
        """Run ``ops`` against the committed data plus this transaction's own earlier writes."""
        overlay: dict[str, tuple[bool, Any]] = {}  # key -> (present, value)
        reads: list[Any] = []
        for op in ops:
            present, current = overlay.get(op.key, (op.key in self.data, self.data.get(op.key)))
            where = f"{self.name} {op.key}"
            if op.kind == "get":
                reads.append(current if present else None)
                continue
            if op.kind == "put":
                overlay[op.key] = (True, op.value)
            elif op.kind == "delete":
                overlay[op.key] = (False, None)
            elif op.kind == "append":
                base = current if present else []
                if type(base) is not list:
                    return Outcome(False, reason=f"type error: {where} is not a list")
                overlay[op.key] = (True, base + [op.value])
            elif op.kind == "add":
                base = current if present else 0
                if type(base) is not int:
                    return Outcome(False, reason=f"type error: {where} is not an integer")
                new = base + op.value
                if op.min is not None and new < op.min:
                    return Outcome(False, reason=f"guard failed: {where} would go below min {op.min}")
                if op.max is not None and new > op.max:
                    return Outcome(False, reason=f"guard failed: {where} would go above max {op.max}")
                overlay[op.key] = (True, new)
                reads.append(new)
                continue
            else:
                return Outcome(False, reason=f"{op.kind} is not a kv operation")
            reads.append(None)
        writes = tuple(KeyWrite(k, not present, value) for k, (present, value) in overlay.items())
        return Outcome(True, reads, writes=writes)

    def apply(self, writes: tuple[KeyWrite, ...], dequeues: int, enqueues: list[Any]) -> list[Write]:
        out: list[Write] = []
        for w in writes:
            key = DATA_PREFIX + w.key.encode()
            if w.deleted:
                self.data.pop(w.key, None)
                out.append((key, None))
            else:
                self.data[w.key] = w.value
                out.append((key, _cell(w.value)))
        return out

    def state(self) -> dict[str, Any]:
        return dict(self.data)


class QueueData:
    """A message queue: committed items, head first, each stored under its own index."""

    def __init__(self, name: str, storage: Storage) -> None:
        self.name = name
        self.items: deque[tuple[int, Any]] = deque(
            (int(k[len(QUEUE_PREFIX):]), _uncell(v)) for k, v in storage.items(QUEUE_PREFIX))
        self.next_index = self.items[-1][0] + 1 if self.items else 0

    def execute(self, ops: tuple[Op, ...]) -> Outcome:
        taken = 0
        added: list[Any] = []
        reads: list[Any] = []
        for op in ops:
            if op.kind == "enqueue":
                added.append(op.value)
                reads.append(None)
            elif op.kind == "dequeue":
                if taken < len(self.items):
                    reads.append(self.items[taken][1])
                    taken += 1
                elif added:  # the transaction dequeues what it enqueued itself
                    reads.append(added.pop(0))
                else:
                    reads.append(None)
            else:
                return Outcome(False, reason=f"{op.kind} is not a queue operation")
        return Outcome(True, reads, dequeues=taken, enqueues=added)

    def apply(self, writes: tuple[KeyWrite, ...], dequeues: int, enqueues: list[Any]) -> list[Write]:
        out: list[Write] = []
        for _ in range(min(dequeues, len(self.items))):
            index, _item = self.items.popleft()
            out.append((_queue_key(index), None))
        for item in enqueues:
            self.items.append((self.next_index, item))
            out.append((_queue_key(self.next_index), _cell(item)))
            self.next_index += 1
        return out

    def state(self) -> list[Any]:
        return [item for _, item in self.items]


def _queue_key(index: int) -> bytes:
    return QUEUE_PREFIX + b"%020d" % index


def make_data(kind: str, name: str, storage: Storage) -> KvData | QueueData:
    return KvData(name, storage) if kind == "kv" else QueueData(name, storage)
