"""A toy core for testing the actor host without the protocol: a durable counter that echoes.

``receive(sender, b"ping:<n>")`` records n, persists the count, and answers ``b"pong:<n>"`` after
the persist; ``receive(sender, b"pong:<n>")`` is reported as an output. ``tick`` counts ticks.
It follows the Node contract exactly, so the host's ordering, coalescing and restart can be
checked against it.
"""

from __future__ import annotations

from dtm_ray.node import Outbox, Ready


class ToyCore:
    def __init__(self, node_id: str, storage) -> None:
        self.node_id = node_id
        self.storage = storage
        raw = storage.get(b"count")
        self.count = int(raw) if raw else 0  # rebuilt from disk on restart
        self.ticks = 0
        self.pongs: list[tuple[str, int]] = []
        self._out = Outbox()

    def receive(self, sender: str, payload: bytes) -> None:
        kind, _, n = payload.partition(b":")
        if kind == b"ping":
            self.count += 1
            self._out.write(b"count", str(self.count).encode())
            self._out.send(sender, b"pong:" + n, after_persist=True)
        elif kind == b"pong":
            self._out.output(("pong", sender, int(n)))

    def send(self, dest: str, n: int) -> None:
        self._out.send(dest, b"ping:%d" % n, after_persist=False)

    def tick(self, now_ms: int) -> None:
        self.ticks += 1

    def take_ready(self) -> Ready:
        return self._out.take()

    def status(self) -> dict:
        return {"count": self.count, "ticks": self.ticks}
