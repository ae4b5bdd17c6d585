"""A tiny synchronous harness for the PBFT unit tests: deliver everything, FIFO, no randomness.

Not the simulator (``dtm_ray.sim`` is): no delays, no reordering. It can drop by a predicate,
crash and restart replicas (keeping or wiping their ``MemoryStorage``), and apply a Byzantine
transformer ``fn(dest, payload) -> [(dest, payload), ...]`` to a replica's outgoing messages.
Time advances only through ``advance``.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from dtm_ray.crypto import generate_keys
from dtm_ray.node import drive
from dtm_ray.pbft.client import ClientCore
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import ClientResult, Executed
from dtm_ray.pbft.kvapp import KvApp
from dtm_ray.pbft.replica import Replica
from dtm_ray.storage import MemoryStorage


class Harness:
    def __init__(self, n: int = 4, f: int | None = None, clients: tuple[str, ...] = ("c0",),
                 seed: int = 1, **config) -> None:
        f = (n - 1) // 3 if f is None else f
        self.replica_ids = tuple(f"R{i}" for i in range(n))
        self.keys = generate_keys(list(self.replica_ids) + list(clients), seed)
        self.config = PbftConfig(self.replica_ids, f, **config)
        self.storages = {r: MemoryStorage() for r in self.replica_ids}
        self.apps: dict[str, KvApp] = {}
        self.nodes: dict[str, object] = {}
        for r in self.replica_ids:
            self.start(r)
        self.clients = {c: ClientCore(c, self.config, self.keys[c]) for c in clients}
        self.nodes.update(self.clients)
        self._scratch = MemoryStorage()  # clients persist nothing
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.outputs: dict[str, list] = {name: [] for name in self.nodes}
        self.down: set[str] = set()
        self.drop: Callable[[str, str, bytes], bool] = lambda src, dst, payload: False
        self.byzantine: dict[str, Callable[[str, bytes], list[tuple[str, bytes]]]] = {}
        self.now = 0
        self.delivered = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, r: str, app: KvApp | None = None) -> Replica:
        self.apps[r] = app or KvApp()
        node = Replica(r, self.config, self.keys[r], self.apps[r], self.storages[r])
        self.nodes[r] = node
        return node

    def crash(self, r: str) -> None:
        self.down.add(r)

    def restart(self, r: str, wipe: bool = False) -> Replica:
        if wipe:
            self.storages[r] = MemoryStorage()
        self.down.discard(r)
        self.flush_one(r, discard=True)
        return self.start(r)

    def replica(self, r: str) -> Replica:
        return self.nodes[r]

    # -- running --------------------------------------------------------------------------------
    def flush_one(self, name: str, discard: bool = False) -> None:
        node = self.nodes[name]
        storage = self.storages.get(name, self._scratch)

        def send(batch):
            if discard or name in self.down:
                return
            for dest, payload in batch:
                for d, p in self.byzantine.get(name, lambda d, p: [(d, p)])(dest, payload):
                    self.queue.append((name, d, p))

        self.outputs[name].extend(drive(node, storage, send))

    def flush(self) -> None:
        for name in self.nodes:
            self.flush_one(name)

    def deliver_all(self, limit: int = 200_000) -> None:
        self.flush()
        while self.queue:
            src, dst, payload = self.queue.popleft()
            if dst in self.nodes and dst not in self.down and not self.drop(src, dst, payload):
                self.nodes[dst].receive(src, payload)
                self.delivered += 1
                self.flush_one(dst)
            limit -= 1
            assert limit > 0, "message storm: the harness delivered too many messages"
        self.flush()

    def advance(self, ms: int, step: int = 5) -> None:
        for _ in range(ms // step):
            self.now += step
            for name, node in self.nodes.items():
                if name not in self.down:
                    node.tick(self.now)
            self.deliver_all()

    def run_until(self, predicate: Callable[[], bool], max_ms: int = 20_000, step: int = 5) -> None:
        self.deliver_all()
        waited = 0
        while not predicate():
            assert waited < max_ms, f"not done after {max_ms} virtual ms"
            self.advance(step, step)
            waited += step

    # -- observing ------------------------------------------------------------------------------
    def events(self, name: str, kind: type) -> list:
        return [e for e in self.outputs[name] if isinstance(e, kind)]

    def results(self, client: str = "c0") -> dict[int, bytes]:
        return {e.request_id: e.result for e in self.events(client, ClientResult)}

    def submit(self, operation: bytes, client: str = "c0") -> int:
        return self.clients[client].submit(operation)

    def executed_digests(self, r: str) -> dict[int, bytes]:
        return {e.seq: e.digest for e in self.events(r, Executed)}

    def assert_agreement(self) -> None:
        """No two replicas executed different batches at one seq."""
        seen: dict[int, bytes] = {}
        for r in self.replica_ids:
            for seq, digest in self.executed_digests(r).items():
                assert seen.setdefault(seq, digest) == digest, f"replicas disagree at seq {seq}"
