"""The generic actor host: runs one sans-I/O core inside an async Ray actor.

What it does, and nothing more:

- **Deliver.** ``deliver(sender, payloads)`` hands each payload to ``core.receive`` and wakes the
  loop. Deliveries are only *input*: a duplicate delivery (Ray may retry a call) is a duplicate
  message, which every core already tolerates.
- **Loop.** One background task ticks the core from the monotonic clock and runs the shared
  ``dtm_ray.node.drive`` turn (send-now, one synced write batch, send-after-persist), waking early
  when a delivery arrived. Deliveries queued meanwhile are absorbed into the same turn: that is
  group commit (one fsync for many messages).
- **Coalesce.** Outgoing messages are buffered per destination and leave as ONE actor call per
  destination per turn. At most ``MAX_INFLIGHT`` calls per destination are in flight; while a
  destination is slow its messages accumulate and leave together (batching under load, bounded
  memory: beyond ``MAX_BUFFERED`` the oldest are dropped, as a network would).
- **Faults the operator injects.** An optional Byzantine transformer
  ``fn(dest, payload) -> iterable of (dest, payload)`` rewrites every outgoing message, and a
  ``blocked`` set of parties models a partition (nothing sent to them, nothing accepted from them).
- **Count.** Calls, messages and bytes in and out, fsyncs, core outputs by type.

Peers are found by their actor name (``names.actor_name``); a handle is dropped and looked up
again when a call to it fails, so a peer re-created by chaos is found again.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any, Callable

import ray

from dtm_ray.transport import DEFAULT_RULES, InboundBudget
from dtm_ray.node import Node, drive
from actors import names
from actors.metrics import MetricsExporter

# Tuning knobs (environment, read once per process; the benchmark sweeps them).
MAX_INFLIGHT = int(os.environ.get("DTM_HOST_MAX_INFLIGHT", "2"))
BUSY_TICK_MS = int(os.environ.get("DTM_HOST_BUSY_TICK_MS", "3"))
BUSY_WINDOW_MS = 200
MAX_BUFFERED = 20_000
# The transport's rules, shared with the simulated network (``dtm_ray.transport``): the largest
# message, one call's caps (a flooding or buggy peer must not stall this actor's loop or starve
# the others), and each sender's inbound token bucket.
RULES = DEFAULT_RULES
MAX_PAYLOADS_PER_CALL = RULES.max_messages_per_call  # the names the tests and benchmarks use
INBOUND_BURST = RULES.inbound_burst

Transformer = Callable[[str, bytes], Any]

# Where a hop's time goes (count, total and max ms, in ``stats()["timing"]``): an actor call's round
# trip, the lag from a wake-up to the turn that serves it, a turn's own duration, and the synced
# write inside it (which blocks the event loop).
TIMINGS = ("call_rtt", "wake_lag", "turn", "fsync")


class Host:
    """Owns the core, its storage and the outgoing buffers of one party."""

    def __init__(self, party: str, namespace: str, core: Node, storage: Any, tick_ms: int,
                 on_outputs: Callable[[list[Any]], None] | None = None, role: str = "party") -> None:
        self.party = party
        self.namespace = namespace
        self.core = core
        self.storage = storage
        self.tick_ms = tick_ms
        self.on_outputs = on_outputs or (lambda outputs: None)
        self.transformer: Transformer | None = None
        self.blocked: set[str] = set()
        self._buffers: dict[str, list[bytes]] = collections.defaultdict(list)
        self._inflight: collections.Counter = collections.Counter()
        self._handles: dict[str, Any] = {}
        self._wake = asyncio.Event()
        self._woken_at: float | None = None
        self.timing: dict[str, list[float]] = {k: [0, 0.0, 0.0] for k in TIMINGS}  # count, sum ms, max ms
        self._clock0 = time.monotonic()
        self._last_activity_ms = 0
        self.counters: collections.Counter = collections.Counter()
        self._inbound = InboundBudget(RULES)
        self.metrics = MetricsExporter(party, role)
        self._loop_task = asyncio.get_event_loop().create_task(self._run())

    # -- input ----------------------------------------------------------------------------------
    def deliver(self, sender: str, payloads: list[bytes]) -> None:
        if sender in self.blocked:
            self.counters["dropped_partition_in"] += len(payloads)
            return
        self.counters["calls_in"] += 1
        for payload in self._admit(sender, payloads):
            if not isinstance(payload, bytes):
                self.counters["rejected_non_bytes"] += 1
                continue
            if not RULES.fits(payload):
                self.counters["dropped_oversized_in"] += 1
                continue
            self.counters["messages_in"] += 1
            self.counters["bytes_in"] += len(payload)
            self._receive(self.core.receive, sender, payload)
        self._last_activity_ms = self.now_ms()
        self._wake_up()

    def _admit(self, sender: Any, payloads: Any) -> list:
        """The part of one call this actor will look at: a bounded list, within the sender's rate."""
        if not isinstance(payloads, (list, tuple)) or not isinstance(sender, str):
            self.counters["rejected_malformed_call"] += 1
            return []
        payloads, dropped = RULES.admit(payloads)
        if dropped:
            self.counters["dropped_oversized_call"] += dropped
        if not self._inbound.allow(sender, len(payloads), self.now_ms()):
            self.counters["rate_limited_in"] += len(payloads)
            return []
        return list(payloads)

    def _receive(self, receive: Callable[..., None], *args: Any) -> None:
        # A core never raises on peer input by contract; if one does, the rest of the call must
        # still be delivered and the actor must keep running.
        try:
            receive(*args)
        except Exception:  # noqa: BLE001 - counted, and visible in status()
            self.counters["core_errors"] += 1

    def deliver_routed(self, sender: str, routed: dict[str, list[bytes]]) -> None:
        """Deliveries to the logical parties this actor hosts (a load generator's clients): the
        core must offer ``receive_for(dest, sender, payload)``."""
        if sender in self.blocked:
            self.counters["dropped_partition_in"] += sum(len(p) for p in routed.values())
            return
        self.counters["calls_in"] += 1
        receive_for = getattr(self.core, "receive_for", None)
        if not isinstance(routed, dict):
            self.counters["rejected_malformed_call"] += 1
            return
        for dest, payloads in routed.items():
            for payload in self._admit(sender, payloads):
                if receive_for is None or not isinstance(payload, bytes) or not isinstance(dest, str):
                    self.counters["rejected_non_bytes"] += 1
                    continue
                self.counters["messages_in"] += 1
                self.counters["bytes_in"] += len(payload)
                self._receive(receive_for, dest, sender, payload)
        self._last_activity_ms = self.now_ms()
        self._wake_up()

    def wake(self) -> None:
        self._last_activity_ms = self.now_ms()
        self._wake_up()

    def now_ms(self) -> int:
        return int((time.monotonic() - self._clock0) * 1000)

    # -- the loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            # Busy (something happened in the last BUSY_WINDOW_MS): tick often, so that a core's
            # short timers (a primary's batch_wait_ms) fire promptly. Idle: tick slowly, so an idle
            # cluster costs little CPU (11 processes share this machine with everything else).
            busy = self.now_ms() - self._last_activity_ms < BUSY_WINDOW_MS
            timeout = min(self.tick_ms, BUSY_TICK_MS) if busy else self.tick_ms
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout / 1000)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self._woken_at is not None:
                self._time("wake_lag", time.perf_counter() - self._woken_at)
                self._woken_at = None
            try:
                started = time.perf_counter()
                self.turn()
                self._time("turn", time.perf_counter() - started)
                if self.metrics.due(self.now_ms()):  # the counters are copied once a second, not per turn
                    self.metrics.maybe_export(self._counters_with_crypto(), self.now_ms())
            except Exception as exc:  # a bug in a core must be visible, not kill the loop silently
                self.counters["loop_errors"] += 1
                self.last_error = repr(exc)
                from loguru import logger

                logger.opt(exception=exc).error("{} host turn failed", self.party)
                await asyncio.sleep(self.tick_ms / 1000)

    def _time(self, what: str, seconds: float) -> None:
        entry = self.timing[what]
        ms = seconds * 1000
        entry[0] += 1
        entry[1] += ms
        entry[2] = max(entry[2], ms)

    def _wake_up(self) -> None:
        if self._woken_at is None:
            self._woken_at = time.perf_counter()
        self._wake.set()

    def turn(self) -> None:
        """Tick the core, then drive it until it has nothing more to do this instant."""
        self.core.tick(self.now_ms())
        activity = self.counters["messages_in"] + self.counters["messages_out"]
        for _ in range(8):  # applying outputs may produce more work; bounded, the next turn resumes
            synced = getattr(self.storage, "synced_writes", 0)
            outputs = drive(self.core, self._timed_storage, self._enqueue)
            self.counters["fsyncs"] += getattr(self.storage, "synced_writes", 0) - synced
            if outputs:
                for item in outputs:
                    self.counters["out:" + type(item).__name__] += 1
                self.on_outputs(outputs)
            if not outputs and synced == getattr(self.storage, "synced_writes", 0):
                break
        self._flush()
        if self.counters["messages_in"] + self.counters["messages_out"] != activity or any(self._buffers.values()):
            self._last_activity_ms = self.now_ms()

    @property
    def _timed_storage(self) -> "_TimedWrites":
        return _TimedWrites(self.storage, self)

    # -- output ---------------------------------------------------------------------------------
    def _enqueue(self, messages: list[tuple[str, bytes]]) -> None:
        for dest, payload in messages:
            if self.transformer is None:
                self._buffer(dest, payload)
                continue
            try:
                rewritten = list(self.transformer(dest, payload))
            except Exception:
                self.counters["transformer_errors"] += 1
                continue
            for d, p in rewritten:
                if isinstance(d, str) and isinstance(p, bytes):
                    self._buffer(d, p)

    def _buffer(self, dest: str, payload: bytes) -> None:
        if not RULES.fits(payload):  # no receiver could decode it: dropped here, and counted
            self.counters["dropped_oversized_out"] += 1
            return
        if dest in self.blocked:
            self.counters["dropped_partition_out"] += 1
            return
        if dest == self.party:  # a core addressing itself (e.g. a primary's own vote)
            self.core.receive(self.party, payload)
            self._wake.set()
            return
        buf = self._buffers[dest]
        buf.append(payload)
        if len(buf) > MAX_BUFFERED:
            del buf[: len(buf) - MAX_BUFFERED]
            self.counters["dropped_overflow"] += 1

    def _flush(self) -> None:
        """One actor call per destination *actor* per turn: the logical clients of one load
        generator share its actor, so their messages leave together (``deliver_routed``)."""
        routed: dict[str, dict[str, list[bytes]]] = collections.defaultdict(dict)
        for dest in list(self._buffers):
            actor = names.actor_party(dest)
            if self._inflight[actor] >= MAX_INFLIGHT:
                continue
            batch = self._buffers.pop(dest)
            if not batch:
                continue
            first = RULES.split([len(p) for p in batch])[0]  # one call's worth; the rest waits
            if first.stop < len(batch):
                batch, self._buffers[dest] = batch[:first.stop], batch[first.stop:]
            if actor == dest:
                self._call(actor, batch, None)
            else:
                routed[actor][dest] = batch
        for actor, by_dest in routed.items():
            self._call(actor, [p for batch in by_dest.values() for p in batch], by_dest)

    def _call(self, actor: str, batch: list[bytes], routed: dict[str, list[bytes]] | None) -> None:
        handle = self._handle(actor)
        if handle is None:
            self.counters["dropped_no_peer"] += len(batch)
            return
        self.counters["calls_out"] += 1
        self.counters["messages_out"] += len(batch)
        self.counters["bytes_out"] += sum(len(p) for p in batch)
        self._inflight[actor] += 1
        send = (lambda h: h.deliver.remote(self.party, batch)) if routed is None else \
            (lambda h: h.deliver_routed.remote(self.party, routed))
        asyncio.get_event_loop().create_task(self._settle(actor, send(handle), send))

    async def _settle(self, actor: str, ref: Any, send: Callable[[Any], Any]) -> None:
        sent = time.perf_counter()
        try:
            try:
                await ref
                self._time("call_rtt", time.perf_counter() - sent)
            except Exception:
                # The peer is dead, restarting, or was re-created under its name (our handle is
                # stale): look it up again and try once more; the protocol retransmits the rest.
                self.counters["calls_failed"] += 1
                self._handles.pop(actor, None)
                handle = self._handle(actor)
                if handle is not None and actor not in self.blocked:
                    self.counters["calls_retried"] += 1
                    try:
                        await send(handle)
                    except Exception:
                        self._handles.pop(actor, None)
        finally:
            self._inflight[actor] -= 1
            if any(self._buffers.values()):
                self._wake.set()

    def _handle(self, dest: str) -> Any:
        handle = self._handles.get(dest)
        if handle is None:
            try:
                handle = ray.get_actor(names.actor_name(dest), namespace=self.namespace)
            except ValueError:
                return None
            self._handles[dest] = handle
        return handle

    # -- operator controls ----------------------------------------------------------------------
    def set_transformer(self, fn: Transformer | None) -> None:
        self.transformer = fn

    def set_blocked(self, parties: list[str]) -> None:
        self.blocked = set(parties)
        for p in self.blocked:
            self._buffers.pop(p, None)

    def _counters_with_crypto(self) -> dict:
        from dtm_ray.crypto import CRYPTO_OPS

        out = dict(self.counters)
        out.update({"crypto_" + k: v for k, v in CRYPTO_OPS.items()})
        return out

    def stats(self) -> dict:
        out = self._counters_with_crypto()
        out["cpu_s"] = round(time.process_time(), 3)
        out["byzantine"] = self.transformer is not None
        out["blocked"] = sorted(self.blocked)
        out["buffered"] = sum(len(b) for b in self._buffers.values())
        out["timing"] = {k: {"count": c, "mean_ms": round(t / c, 2) if c else None, "max_ms": round(m, 1)}
                         for k, (c, t, m) in self.timing.items()}
        return out


class _TimedWrites:
    """The party's storage, with each synced write batch timed (it blocks the event loop)."""

    def __init__(self, storage: Any, host: Host) -> None:
        self._storage, self._host = storage, host

    def write(self, batch: list, sync: bool = True) -> None:
        started = time.perf_counter()
        self._storage.write(batch, sync=sync)
        self._host._time("fsync", time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)
