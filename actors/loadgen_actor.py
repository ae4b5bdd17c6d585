"""The load-generator actor: many logical clients in one process, in closed or open loop.

Each logical client is a real transaction client (``TxnClient``) with its own identity, keys and
request ids, named ``"<actor>..c<i>"`` so that replicas' replies reach this actor
(``actors.names.MUX``) and leave it together (one call per replica per turn for all clients).
One ``Host`` runs them all (``actors.loadgen.MuxCore``) on its loop thread: batching at the client
hop comes from the host's coalescing, not from any change to the protocol. The clients' asyncio
tasks only post submissions to that thread and await the results it hands back.

- **closed loop** (``concurrency``): that many clients each submit, wait, record, repeat;
- **open loop** (``rate``): arrivals at a fixed rate are queued and served by free clients; a
  transaction's latency counts from its *scheduled* arrival (so a queue shows as latency), and
  arrivals still queued at the end are reported as ``backlog``.

Request ids start at 1 and live in memory: a load generator's clients are fresh identities per
cluster and are never restarted (a restarted one would be refused as a replay, safely).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any

import ray

from actors.host import Host
from actors.loadgen import MuxCore, Record, op_tuple, workload_step
from dtm_ray.storage import MemoryStorage


def client_names(actor: str, count: int) -> list[str]:
    from actors.names import MUX

    return [f"{actor}{MUX}c{i}" for i in range(count)]


def client_ring(ring: dict, replicas: list[str]) -> dict:
    """A logical client's key ring pruned to what it uses (its own keys, the replicas'), so that
    a generator of thousands of clients does not carry every other client's public key."""
    keep = set(replicas) | {ring["me"]}
    return {"me": ring["me"], "signing_key": ring["signing_key"],
            "public_keys": {p: k for p, k in ring["public_keys"].items() if p in keep},
            "mac_keys": {p: k for p, k in ring["mac_keys"].items() if p in keep}}


def client_rings(spec: dict, cfg) -> list[tuple[str, dict]]:
    """Each logical client's key ring: given one by one (``spec["keys"]``: clients declared in
    ``ClusterConfig.clients``), or derived here from the generator's own ring for the clients of
    the cluster's load pool (``spec["generator_keys"]``, ``dtm_ray.poolkeys``)."""
    if "generator_keys" not in spec:
        return list(spec["keys"].items())
    from dtm_ray.poolkeys import client_keyring_dict, pool_client_names

    ring, replicas = spec["generator_keys"], list(cfg.replicas)
    names = pool_client_names(spec["party"], cfg.load_pool[spec["party"]])
    return [(c, client_keyring_dict(ring, c, replicas)) for c in names]


class LoadGenActor:
    def __init__(self, spec: dict) -> None:
        from dtm_ray.config import ClusterConfig
        from dtm_ray.crypto import KeyRing
        from dtm_ray.txn.client import TxnClient

        self.party = spec["party"]
        cfg = ClusterConfig.from_dict(spec["config"])
        pbft = cfg.pbft_config()
        clients = {name: TxnClient(name, pbft, KeyRing.from_dict(ring)) for name, ring in client_rings(spec, cfg)}
        self.core = MuxCore(self.party, clients)
        self.host = Host(self.party, spec["namespace"], self.core, MemoryStorage(), cfg.tick_ms, self.on_outputs,
                         role="load-generator")
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._to_submit: list[tuple] = []

    # -- transport (only enqueued: the clients run on the host's loop thread) --------------------
    @ray.method(enable_task_events=False)
    def deliver(self, sender: str, payloads: list[bytes], token: bytes = b"") -> None:
        self.host.deliver(sender, payloads, token)

    @ray.method(enable_task_events=False)
    def deliver_routed(self, sender: str, routed: dict[str, list[bytes]], token: bytes = b"") -> None:
        self.host.deliver_routed(sender, routed, token)

    def ping(self) -> str:
        return self.party

    def status(self) -> dict:
        import os

        return self.host.call(lambda: {"id": self.party, "role": "loadgen", "pid": os.getpid(),
                                       **self.core.status(), "host": self.host.stats()})

    def on_outputs(self, outputs: list[Any]) -> None:  # on the loop thread
        for loop, resolved in resolutions(outputs, self._waiting).items():
            loop.call_soon_threadsafe(_resolve_all, resolved)  # one hand-over per event loop and round

    def _submit_soon(self, loop: asyncio.AbstractEventLoop, item: tuple) -> None:
        """Queue one submission; the clients that become ready in the same round of the event loop
        go to the loop thread together (one command, so one turn and one call per replica for all
        of them: the batching an async host got from running them all before its turn)."""
        self._to_submit.append(item)
        if len(self._to_submit) == 1:
            loop.call_soon(self._post_submissions, loop)

    def _post_submissions(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._to_submit = self._to_submit, []

        def start() -> None:  # on the loop thread, which owns the clients
            for name, ops, future, submitted in batch:
                txn_id = self.core.submit(name, ops)
                submitted.append(txn_id)
                self._waiting[txn_id] = (loop, future)

        self.host.post(start)

    # -- load -----------------------------------------------------------------------------------
    async def run(self, workload: str, *, duration_s: float, concurrency: int | None = None,
                  rate: float | None = None, seed: int = 0, timeout_s: float = 10.0,
                  params: dict | None = None) -> dict:
        """Closed loop with ``concurrency`` clients, or open loop at ``rate`` txn/s; returns
        ``{"records": [Record as dict], "backlog": n, "clients_lost": n}``."""
        params = params or {}
        names = self._free_clients()
        deadline = time.monotonic() + duration_s
        records: list[dict] = []
        lost = [0]
        if rate is None:
            workers = min(concurrency or len(names), len(names))
            arrivals = None
        else:
            workers, arrivals = len(names), asyncio.Queue()
        tasks = [asyncio.get_event_loop().create_task(
            self._client_loop(names[i], random.Random(seed * 100_003 + i), workload, params, deadline,
                              timeout_s, arrivals, records, lost)) for i in range(workers)]
        if arrivals is not None:
            await self._arrivals(arrivals, rate, deadline)
        await asyncio.gather(*tasks)
        backlog = arrivals.qsize() if arrivals is not None else 0
        return {"records": records, "backlog": backlog, "clients_lost": lost[0]}

    async def submit_all(self, op_lists: list[list], timeout_s: float = 30.0) -> list[dict]:
        """Submit every op list once, spread over this generator's clients (each submits its share
        in turn), all clients at once; the records, in no particular order. For work that must
        be done rather than measured, e.g. opening a bank (``actors.loadrun.setup_bank``)."""
        names = self._free_clients()
        shares = [op_lists[i::len(names)] for i in range(min(len(names), len(op_lists)))]

        async def one_client(name: str, share: list) -> list[dict]:
            out = []
            for ops in share:
                out.append(await self._one(name, "setup", ops, time.time_ns(), timeout_s))
                if out[-1]["status"] == "info":  # still outstanding: this client can send no more
                    break
            return out

        done = await asyncio.gather(*(one_client(n, share) for n, share in zip(names, shares)))
        return [r for recs in done for r in recs]

    def _free_clients(self) -> list[str]:
        """The clients with no request outstanding (one whose outcome a run never learnt keeps its
        request until the replicas answer it; it cannot submit another meanwhile)."""
        return [name for name, client in self.core.clients.items() if not client.outstanding]

    async def _arrivals(self, queue: asyncio.Queue, rate: float, deadline: float) -> None:
        start, k = time.monotonic(), 0
        while time.monotonic() < deadline:
            k += 1
            due = start + k / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            queue.put_nowait(time.time_ns())

    async def _client_loop(self, name: str, rng: random.Random, workload: str, params: dict, deadline: float,
                           timeout_s: float, arrivals: asyncio.Queue | None, records: list, lost: list) -> None:
        n = 0
        while time.monotonic() < deadline:
            if arrivals is None:
                start_ns = time.time_ns()
            else:
                try:
                    start_ns = await asyncio.wait_for(arrivals.get(), max(0.001, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    return
            kind, ops = workload_step(workload, rng, name, n, params)
            n += 1
            record = await self._one(name, kind, ops, start_ns, timeout_s)
            records.append(record)
            if record["status"] == "info":  # its request is still outstanding: retire the client
                lost[0] += 1
                return

    async def _one(self, name: str, kind: str, ops: list, start_ns: int, timeout_s: float) -> dict:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        submitted: list[str] = []
        self._submit_soon(loop, (name, ops, future, submitted))
        tuples = [op_tuple(o) for o in ops]
        try:
            result = await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            txn_id = submitted[0] if submitted else "?"
            return dataclasses.asdict(Record(txn_id, kind, tuples, "info", None, "timeout", start_ns, None))
        finally:
            if submitted:
                self._waiting.pop(submitted[0], None)
        return dataclasses.asdict(Record(result.txn_id, kind, tuples, "ok" if result.committed else "fail",
                                         list(result.reads or []), result.reason, start_ns, time.time_ns()))


def resolutions(outputs: list[Any], waiting: dict[str, tuple[Any, asyncio.Future]]
                ) -> dict[Any, list[tuple[asyncio.Future, Any]]]:
    """The outputs of one turn that answer a waiting submission, grouped by the event loop that
    waits: a turn's outputs mix results with what no submission waits for (a ``Rejected`` for a
    forged or replayed reply, a result already timed out), and those must not hide the rest."""
    by_loop: dict[Any, list[tuple[asyncio.Future, Any]]] = {}
    for item in outputs:
        entry = waiting.get(getattr(item, "txn_id", None))
        if entry is not None:
            by_loop.setdefault(entry[0], []).append((entry[1], item))
    return by_loop


def _resolve_all(resolved: list[tuple[asyncio.Future, Any]]) -> None:
    for future, item in resolved:
        if not future.done():
            future.set_result(item)
