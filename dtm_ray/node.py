"""The sans-I/O contract every party's core follows, and the one driver loop that runs it.

A core (replica, participant, client) is a plain object:

- ``receive(sender, payload)``: one message, as bytes, from the transport. ``sender`` is what the
  transport claims and is *not* trusted (authentication is inside ``payload``); it is used only
  to count and rate-limit per channel.
- ``tick(now_ms)``: time is an input. The simulator passes virtual milliseconds, an actor passes
  its monotonic clock. A core never reads a clock itself.
- ``take_ready()``: everything the core wants done since the last call, as a ``Ready``.

The ordering rule (etcd-raft's, sharpened as in raft-rs): ``send_now`` may leave at once;
``writes`` must be durable (one synced batch) before any of ``send_after_persist`` leaves, since
those messages (votes, acks, replies) promise something the sender must remember after a crash.
``drive`` implements exactly that and is shared by the simulator and the Ray actors, so the
simulator tests the loop that runs in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

Write = tuple[bytes, bytes | None]  # (key, value); value None deletes the key
Outgoing = tuple[str, bytes]  # (destination party id, payload)


@dataclass(slots=True)
class Ready:
    writes: list[Write] = field(default_factory=list)
    send_now: list[Outgoing] = field(default_factory=list)
    send_after_persist: list[Outgoing] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)  # observations for the host: results, events

    def __bool__(self) -> bool:
        return bool(self.writes or self.send_now or self.send_after_persist or self.outputs)


class Outbox:
    """What a core accumulates between two ``take_ready`` calls."""

    __slots__ = ("_ready",)

    def __init__(self) -> None:
        self._ready = Ready()

    def write(self, key: bytes, value: bytes | None) -> None:
        self._ready.writes.append((key, value))

    def send(self, dest: str, payload: bytes, *, after_persist: bool = True) -> None:
        (self._ready.send_after_persist if after_persist else self._ready.send_now).append((dest, payload))

    def output(self, item: Any) -> None:
        self._ready.outputs.append(item)

    def take(self) -> Ready:
        ready, self._ready = self._ready, Ready()
        return ready


class Node(Protocol):
    node_id: str

    def receive(self, sender: str, payload: bytes) -> None: ...

    def tick(self, now_ms: int) -> None: ...

    def take_ready(self) -> Ready: ...


class Storage(Protocol):
    """A party's own durable key-value store (RocksDB in production, a dict in the simulator)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]: ...

    def write(self, batch: list[Write], sync: bool = True) -> None: ...


def drive(node: Node, storage: Storage, send: Callable[[list[Outgoing]], None]) -> list[Any]:
    """One turn of the loop: send what may leave now, persist, then send what needed the
    persist, and hand the outputs back to the host. Returns the outputs."""
    ready = node.take_ready()
    if ready.send_now:
        send(ready.send_now)
    if ready.writes:
        storage.write(ready.writes, sync=True)
    if ready.send_after_persist:
        send(ready.send_after_persist)
    return ready.outputs
