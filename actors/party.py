"""The one actor class every party runs in: a thin shell around ``Host`` and a core.

A plain (sync) Ray actor: ``deliver`` only hands the call to the host's queue (the core runs on the
host's own loop thread), and every method that reads or changes the core runs on that thread
through ``host.call``. (A client actor is an async actor, for its waiting ``submit``; its
``deliver`` is just as short.)

Ray reruns ``__init__`` with the same spec on a restart (``max_restarts``): the core is rebuilt
from the party's RocksDB directory, so a restart is a crash-recovery, not a fresh start. Every
method is safe to run twice (Ray may retry): deliveries are just messages, and the operator
controls set state rather than toggle it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import random
import secrets
from typing import Any

import cloudpickle
import ray

from actors.host import Host
from actors.roles import NEXT_REQUEST_KEY, build_core, open_storage
from dtm_ray import logs


class PartyActor:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.incarnation = secrets.token_hex(6)  # tells a restarted process from the old one
        self.party = spec["party"]
        self.role = spec["role"]
        self.log = logs.setup(spec)
        self.storage = open_storage(spec)
        self.core = build_core(spec, self.storage)
        self.host = Host(self.party, spec["namespace"], self.core, self.storage,
                         spec["config"]["tick_ms"], self.on_outputs, role=self.role,
                         mac_keys=spec["keys"].get("mac_keys"))
        self.byzantine: str | None = None
        self.log.info("started ({}) from {}", self.role, spec["path"])

    # -- the transport --------------------------------------------------------------------------
    @ray.method(enable_task_events=False)
    def deliver(self, sender: str, payloads: list[bytes], token: bytes = b"") -> None:
        self.host.deliver(sender, payloads, token)

    def on_outputs(self, outputs: list[Any]) -> None:  # on the loop thread
        logs.outputs(self.log, outputs)

    # -- observation ----------------------------------------------------------------------------
    def ping(self) -> str:
        return self.incarnation

    def status(self) -> dict:
        return self.host.call(self._status)

    def _status(self) -> dict:
        core_status = self.core.status() if hasattr(self.core, "status") else {}
        return {"id": self.party, "role": self.role, **core_status, "alive": True,
                "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "byzantine": self.byzantine, "host": self.host.stats(), "storage": self.storage.stats()}

    # -- operator controls (chaos) --------------------------------------------------------------
    def set_byzantine(self, behaviour: str | bytes | None, seed: int = 0) -> None:
        """``None`` heals; a name picks from ``dtm_ray.faults.CATALOGUE``; bytes are a callable the
        operator shipped with cloudpickle (operator code, never message content)."""
        if behaviour is None:
            self.host.set_transformer(None)
            self.byzantine = None
        elif isinstance(behaviour, str):
            from dtm_ray.config import ClusterConfig
            from dtm_ray.crypto import KeyRing
            from dtm_ray.faults import make_behaviour

            cfg = ClusterConfig.from_dict(self.spec["config"])
            fn = make_behaviour(behaviour, keys=KeyRing.from_dict(self.spec["keys"]),
                                config=cfg.pbft_config(), rng=random.Random(seed))
            self.host.set_transformer(fn)
            self.byzantine = behaviour
        else:
            # Operator code shipped on purpose by ``cluster.chaos.byzantine(i, fn)`` through this
            # admin method; message bytes never reach cloudpickle (they go to wire.decode).
            self.host.set_transformer(cloudpickle.loads(behaviour))
            self.byzantine = "custom"
        self.log.warning("byzantine behaviour set to {}", self.byzantine)

    def set_blocked(self, parties: list[str]) -> None:
        self.host.set_blocked(parties)

    # -- toy core (host tests) ------------------------------------------------------------------
    def toy_send(self, dest: str, count: int) -> None:
        def send() -> None:
            for i in range(count):
                self.core.send(dest, i)

        self.host.call(send)

    def toy_pongs(self) -> int:
        return self.host.call(lambda: self.host.counters["out:tuple"])


class ParticipantActor(PartyActor):
    """A participant; it also remembers the ``Applied`` events of this incarnation (bounded), so
    that the atomicity checker can compare outcomes across participants."""

    MAX_APPLIED = 200_000

    def __init__(self, spec: dict) -> None:
        self._applied: list[Any] = []
        super().__init__(spec)

    def state(self) -> Any:
        return self.host.call(self.core.state)

    def applied(self) -> list[Any]:
        return self.host.call(list, self._applied)

    def on_outputs(self, outputs: list[Any]) -> None:
        super().on_outputs(outputs)
        self._applied.extend(o for o in outputs if type(o).__name__ == "Applied")
        if len(self._applied) > self.MAX_APPLIED:
            del self._applied[: len(self._applied) - self.MAX_APPLIED]


class ClientActor(PartyActor):
    """A client party: ``submit`` returns the result the core accepted on f+1 matching replies."""

    def __init__(self, spec: dict) -> None:
        self._waiting: dict[Any, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        super().__init__(spec)

    async def submit(self, operation: Any, timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def start() -> Any:  # on the loop thread: the core and its storage are the loop's
            request_id = self.core.submit(operation)
            # persisted before the request can leave (the host sends at the end of this turn)
            self.storage.write([(NEXT_REQUEST_KEY, str(request_id + 1).encode())])
            key = self.core.txn_id(request_id) if hasattr(self.core, "txn_id") else request_id
            self._waiting[key] = (loop, future)
            self.log.bind(txn=str(key)).info("Request {}", logs.short(operation))  # the audit trail's first line
            return key

        key = await self.host.call_async(start)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiting.pop(key, None)

    async def run_load(self, workload: str, *, count: int | None = None, duration_s: float | None = None,
                       seed: int = 0, timeout_s: float = 10.0, params: dict | None = None) -> list[dict]:
        """Submit transactions back to back (one outstanding, the client rule) and record each."""
        from actors import loadgen

        params = params or {}
        rng = random.Random(seed)
        deadline = time.monotonic() + duration_s if duration_s is not None else None
        records, n = [], 0
        while (count is None or n < count) and (deadline is None or time.monotonic() < deadline):
            if workload == "bank":
                kind, ops = loadgen.bank_step(rng, params["accounts"],
                                              params.get("read_share", 0.1))
            elif workload == "list-append":
                kind, ops = "txn", loadgen.list_append_step(rng, self.party, n, params["participants"],
                                                            params.get("keys", 8))
            else:
                raise ValueError(f"unknown workload {workload!r}: 'bank' or 'list-append'")
            records.append(await self._record(kind, ops, timeout_s))
            n += 1
        return records

    async def _record(self, kind: str, ops: list, timeout_s: float) -> dict:
        from actors import loadgen

        start = time.time_ns()
        try:
            result = await self.submit(ops, timeout_s)
        except asyncio.TimeoutError:
            return dataclasses.asdict(loadgen.Record("?", kind, [loadgen.op_tuple(o) for o in ops], "info",
                                                     None, "timeout", start, None))
        status = "ok" if result.committed else "fail"
        return dataclasses.asdict(loadgen.Record(result.txn_id, kind, [loadgen.op_tuple(o) for o in ops], status,
                                                 list(result.reads or []), result.reason, start, time.time_ns()))

    def on_outputs(self, outputs: list[Any]) -> None:
        super().on_outputs(outputs)
        for item in outputs:
            key = getattr(item, "txn_id", None) or getattr(item, "request_id", None)
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting[0].call_soon_threadsafe(_resolve, waiting[1], item)


def _resolve(future: asyncio.Future, item: Any) -> None:
    if not future.done():
        future.set_result(item)
