"""The generic actor host: runs one sans-I/O core on its own loop thread inside a Ray actor.

Shaped as Ray's cheapest calls allow (``benchmarks/ray_floor.py`` measures the shapes):

- **Deliver.** ``deliver(sender, payloads, token)`` runs on the actor's Ray thread and only appends
  the call to a queue and wakes the loop: no core code, no asyncio, no awaited reply. Deliveries
  are only *input*: a duplicate (Ray may retry a call) is a duplicate message, which every core
  tolerates. The queue is bounded (``MAX_QUEUED_CALLS``; beyond it a call is dropped and counted).
- **Loop.** One thread, started in ``__init__`` (a Ray restart re-runs ``__init__``), owns the core:
  it drains the queue (admission, ``core.receive``), ticks the core from the monotonic clock and
  runs the shared ``dtm_ray.node.drive`` turn (send-now, one synced write batch,
  send-after-persist). Everything queued meanwhile is absorbed into the same turn: group commit.
- **Operator controls** (status, Byzantine transformer, partition, a client's submit) run on the
  loop thread too, through the same queue (``call``/``call_async``/``post``), so they never race
  with a turn.
- **Coalesce.** Outgoing messages are buffered per destination actor and leave as ONE call per
  destination per turn. At most ``MAX_INFLIGHT`` calls per destination are in flight (a call's
  completion, reported by Ray on one of its threads, frees its slot and wakes the loop); while a
  destination is busy its messages accumulate and leave together: batching that grows with load,
  without a timer on the path of a lone message. Buffers are bounded (``MAX_BUFFERED``; the oldest
  are dropped, as a network would). The methods called are declared with task events off.
- **Admission.** At most ``MAX_PAYLOADS_PER_CALL`` payloads are taken from one call, and each call
  passes a token bucket keyed by its *channel* (``actors.channel``): the claimed sender only when
  the call carries that sender's channel token, else one shared unauthenticated budget. A liar
  claiming to be R2 thus spends the liars' budget, never R2's.
- **Faults the operator injects.** A Byzantine transformer ``fn(dest, payload) -> iterable of
  (dest, payload)`` rewrites every outgoing message; a ``blocked`` set models a partition.
- **Count.** Calls, messages and bytes in and out, fsyncs, core outputs by type, and CPU: the
  process's (``cpu_s``) and the loop thread's (``loop_cpu_s``: the core and this host; the rest
  is Ray's own threads) (``stats()``).

Peers are found by name (``actors.peers``): a failed call, a peer silent while we kept sending, or
calls to it in flight that have not moved for ``CALL_STALL_MS``, makes its handle be looked up again, so a peer re-created by chaos is found again; the protocol's
own retransmission covers what was lost meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import threading
import time
from typing import Any, Callable

from actors import names
from actors.channel import Channels
from actors.metrics import MetricsExporter
from actors.peers import Peers
from dtm_ray.transport import DEFAULT_RULES, InboundBudget
from dtm_ray.node import Node, drive

# Tuning knobs (environment, read once per process; the benchmark sweeps them).
MAX_INFLIGHT = int(os.environ.get("DTM_HOST_MAX_INFLIGHT", "2"))
BUSY_TICK_MS = int(os.environ.get("DTM_HOST_BUSY_TICK_MS", "3"))
BUSY_WINDOW_MS = 200
MAX_BUFFERED = 20_000
MAX_QUEUED_CALLS = 10_000
# A destination whose calls in flight have not moved (none settled) for this long gets a fresh
# handle and a fresh window: Ray may never settle a call made through a handle that went stale
# while its actor was re-created, and a peer that keeps calling *us* never looks silent, so the
# silence rule alone (``actors.peers``) left such a peer unreachable for good (the idle catch-up
# Ray test: a restarted replica short of one peer's votes, its view change joined by nobody).
CALL_STALL_MS = 5_000
COMMAND_TIMEOUT_S = 30.0
# The transport's rules, shared with the simulated network (``dtm_ray.transport``): the largest
# message, one call's caps (a flooding or buggy peer must not stall this actor's loop or starve
# the others), and each channel's inbound token bucket. All far above what a correct peer sends.
RULES = DEFAULT_RULES
MAX_PAYLOADS_PER_CALL = RULES.max_messages_per_call  # the names the tests and benchmarks use
INBOUND_BURST = RULES.inbound_burst

Transformer = Callable[[str, bytes], Any]

# Where a hop's time goes (count, total and max ms, in ``stats()["timing"]``): an actor call's round
# trip, the lag from a wake-up to the turn that serves it, a turn's own duration, and the synced
# write inside it.
TIMINGS = ("call_rtt", "wake_lag", "turn", "fsync")

_DELIVER, _ROUTED, _SETTLED, _COMMAND = range(4)


class Host:
    """Owns the core, its storage and the outgoing buffers of one party."""

    def __init__(self, party: str, namespace: str, core: Node, storage: Any, tick_ms: int,
                 on_outputs: Callable[[list[Any]], None] | None = None, role: str = "party",
                 mac_keys: dict[str, bytes] | None = None, start: bool = True) -> None:
        self.party = party
        self.core = core
        self.storage = storage
        self.tick_ms = tick_ms
        self.on_outputs = on_outputs or (lambda outputs: None)
        self.transformer: Transformer | None = None
        self.blocked: set[str] = set()
        self.peers = Peers(namespace)
        self.channels = Channels(party, mac_keys)
        self._buffers: dict[str, list[bytes]] = collections.defaultdict(list)
        self._inflight: collections.Counter = collections.Counter()
        # Calls in flight are counted per handle generation: a dropped handle's calls (a peer
        # re-created, or silent too long) no longer hold its slots, even if Ray never settles them.
        self._generation: collections.Counter = collections.Counter()
        self._moved_ms: dict[str, int] = {}  # destination -> when its window last moved (a call left it)
        self._calls: collections.deque = collections.deque()  # deliveries, appended by Ray's thread
        self._control: collections.deque = collections.deque()  # settled calls and commands
        self._dropped_queue_full = 0  # written by the delivering thread only
        self._wake = threading.Event()
        self._woken_at: float | None = None
        self.timing: dict[str, list[float]] = {k: [0, 0.0, 0.0] for k in TIMINGS}  # count, sum ms, max ms
        self._clock0 = time.monotonic()
        self._last_activity_ms = 0
        self._loop_cpu_s = 0.0  # the loop thread's CPU when stats() last ran on it
        self._next_refresh_ms = 0
        self.counters: collections.Counter = collections.Counter()
        self._inbound = InboundBudget(RULES)
        self.metrics = MetricsExporter(party, role)
        self.last_error: str | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"host-{party}", daemon=True)
        if start:
            self._thread.start()

    # -- input (on Ray's thread: enqueue and wake, nothing else) --------------------------------
    def deliver(self, sender: str, payloads: list[bytes], token: bytes = b"") -> None:
        self._enqueue_call((_DELIVER, sender, payloads, token))

    def deliver_routed(self, sender: str, routed: dict[str, list[bytes]], token: bytes = b"") -> None:
        """Deliveries to the logical parties this actor hosts (a load generator's clients): the
        core must offer ``receive_for(dest, sender, payload)``."""
        self._enqueue_call((_ROUTED, sender, routed, token))

    def _enqueue_call(self, item: tuple) -> None:
        if len(self._calls) >= MAX_QUEUED_CALLS:
            self._dropped_queue_full += 1
            return
        self._calls.append(item)
        self._wake_up()

    def wake(self) -> None:
        self._last_activity_ms = self.now_ms()
        self._wake_up()

    def now_ms(self) -> int:
        return int((time.monotonic() - self._clock0) * 1000)

    # -- commands: run ``fn`` on the loop thread ------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the loop thread between two turns and return its result."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn(*args)
        return self.post(fn, *args).result(timeout=COMMAND_TIMEOUT_S)

    async def call_async(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``call`` for an async actor method: awaits instead of blocking its event loop."""
        if not self._thread.is_alive():
            return fn(*args)
        return await asyncio.wrap_future(self.post(fn, *args))

    def post(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._control.append((_COMMAND, fn, args, future))
        self.wake()
        return future

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped:
            # Busy (something happened in the last BUSY_WINDOW_MS): tick often, so that a core's
            # short timers (a primary's batch_wait_ms) fire promptly. Idle: tick slowly, so an idle
            # cluster costs little CPU (11 processes share this machine with everything else).
            busy = self.now_ms() - self._last_activity_ms < BUSY_WINDOW_MS
            timeout = min(self.tick_ms, BUSY_TICK_MS) if busy else self.tick_ms
            self._wake.wait(timeout / 1000)
            # Let Ray's thread hand over the calls it already holds before this turn starts (it
            # needs the GIL for each ``deliver``): they join this turn (one fsync, one call per
            # destination) instead of each waking a turn of its own. Not a timer: with nothing
            # else to run, it returns at once.
            time.sleep(0)
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
                time.sleep(self.tick_ms / 1000)  # a failing turn must not spin the CPU

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

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
        """Take in what arrived, tick the core, then drive it until it has nothing more to do."""
        self._take_input()
        self.core.tick(self.now_ms())
        activity = self.counters["messages_in"] + self.counters["messages_out"]
        for _ in range(8):  # applying outputs may produce more work; bounded, the next turn resumes
            synced = getattr(self.storage, "synced_writes", 0)
            outputs = drive(self.core, self._timed_storage, self._enqueue)
            self.counters["fsyncs"] += getattr(self.storage, "synced_writes", 0) - synced
            if outputs:
                for item in outputs:
                    self.counters["out:" + type(item).__name__] += 1
                self._hand_over(outputs)
            if not outputs and synced == getattr(self.storage, "synced_writes", 0):
                break
        self._flush()
        if self.counters["messages_in"] + self.counters["messages_out"] != activity or any(self._buffers.values()):
            self._last_activity_ms = self.now_ms()
        self._refresh_peers()

    def _hand_over(self, outputs: list[Any]) -> None:
        """Give the party its outputs. Its handler failing on one item must cost that round's
        hand-over, counted and logged, not the rest of the turn: what the core already said
        still leaves in this turn's flush."""
        try:
            self.on_outputs(outputs)
        except Exception as exc:  # noqa: BLE001 - counted, logged, and visible in status()
            self.counters["output_errors"] += 1
            self.last_error = repr(exc)
            from loguru import logger

            logger.opt(exception=exc).error("{} output handler failed", self.party)

    def _take_input(self) -> None:
        while self._control:
            kind, *rest = self._control.popleft()
            if kind == _SETTLED:
                self._settled(*rest)
            else:
                self._run_command(*rest)
        for _ in range(len(self._calls)):  # what arrived before this turn; later calls wait for the next
            kind, sender, body, token = self._calls.popleft()
            if kind == _DELIVER:
                self._receive_call(sender, body, token)
            else:
                self._receive_routed(sender, body, token)

    def _run_command(self, fn: Callable[..., Any], args: tuple, future: concurrent.futures.Future) -> None:
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the caller gets the error; the loop goes on
            future.set_exception(exc)

    @property
    def _timed_storage(self) -> "_TimedWrites":
        return _TimedWrites(self.storage, self)

    # -- admission (loop thread) ----------------------------------------------------------------
    def _receive_call(self, sender: Any, payloads: Any, token: Any) -> None:
        if sender in self.blocked:
            self.counters["dropped_partition_in"] += len(payloads) if isinstance(payloads, (list, tuple)) else 1
            return
        self.counters["calls_in"] += 1
        admitted = self._admit(sender, payloads, token)
        teller = self.channels.core_sender(sender, token) if admitted else sender
        for payload in admitted:
            if self._counted_in(payload):
                self._core_receive(self.core.receive, teller, payload)
        self._heard(sender)

    def _receive_routed(self, sender: Any, routed: Any, token: Any) -> None:
        if sender in self.blocked:
            self.counters["dropped_partition_in"] += sum(len(p) for p in routed.values()) \
                if isinstance(routed, dict) else 1
            return
        self.counters["calls_in"] += 1
        receive_for = getattr(self.core, "receive_for", None)
        if not isinstance(routed, dict):
            self.counters["rejected_malformed_call"] += 1
            return
        teller = self.channels.core_sender(sender, token) if isinstance(sender, str) else sender
        for dest, payloads in routed.items():
            for payload in self._admit(sender, payloads, token):
                if receive_for is None or not isinstance(dest, str):
                    self.counters["rejected_non_bytes"] += 1
                elif self._counted_in(payload):
                    self._core_receive(receive_for, dest, teller, payload)
        self._heard(sender)

    def _counted_in(self, payload: Any) -> bool:
        """Whether the core may see ``payload``: bytes within the transport's size limit (counted
        in, or counted as refused)."""
        if not isinstance(payload, bytes):
            self.counters["rejected_non_bytes"] += 1
            return False
        if not RULES.fits(payload):
            self.counters["dropped_oversized_in"] += 1
            return False
        self.counters["messages_in"] += 1
        self.counters["bytes_in"] += len(payload)
        return True

    def _admit(self, sender: Any, payloads: Any, token: Any) -> list:
        """The part of one call this actor will look at: a bounded list, within its channel's rate."""
        if not isinstance(payloads, (list, tuple)) or not isinstance(sender, str):
            self.counters["rejected_malformed_call"] += 1
            return []
        payloads, dropped = RULES.admit(payloads)
        if dropped:
            self.counters["dropped_oversized_call"] += dropped
        channel = self.channels.budget_key(sender, token)
        if not self._inbound.allow(channel, len(payloads), self.now_ms()):
            self.counters["rate_limited_in"] += len(payloads)
            return []
        return list(payloads)

    def _heard(self, sender: Any) -> None:
        now = self.now_ms()
        self._last_activity_ms = now
        if isinstance(sender, str):
            self.peers.heard(names.actor_party(sender), now)

    def _core_receive(self, receive: Callable[..., None], *args: Any) -> None:
        # A core never raises on peer input by contract; if one does, the rest of the call must
        # still be delivered and the actor must keep running.
        try:
            receive(*args)
        except Exception:  # noqa: BLE001 - counted, and visible in status()
            self.counters["core_errors"] += 1

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

    def _call(self, actor: str, batch: list[bytes], routed: dict[str, list[bytes]] | None,
              retry: bool = True) -> None:
        now = self.now_ms()
        handle = self.peers.handle(actor, now)
        if handle is None:
            self.counters["dropped_no_peer"] += len(batch)
            return
        token = self.channels.outgoing(actor)
        try:
            if routed is None:
                ref = handle.deliver.remote(self.party, batch, token)
            else:
                ref = handle.deliver_routed.remote(self.party, routed, token)
        except Exception:  # the handle refuses the call at once (its actor is gone)
            self.counters["calls_failed"] += 1
            self.peers.forget(actor)
            return
        self.counters["calls_out"] += 1
        self.counters["messages_out"] += len(batch)
        self.counters["bytes_out"] += sum(len(p) for p in batch)
        self._inflight[actor] += 1
        if self._inflight[actor] == 1:
            self._moved_ms[actor] = now
        self.peers.sent(actor, now)
        sent = time.perf_counter()
        resend = (batch, routed) if retry else None
        generation = self._generation[actor]
        ref.future().add_done_callback(lambda fut: self._on_done(actor, generation, fut, sent, resend))

    def _on_done(self, actor: str, generation: int, fut: Any, sent: float, resend: tuple | None) -> None:
        """On a Ray thread: hand the outcome to the loop (which owns every counter)."""
        try:
            error = fut.exception()
        except BaseException as exc:  # cancelled
            error = exc
        self._control.append((_SETTLED, actor, generation, error, time.perf_counter() - sent, resend))
        if error is not None or self._buffers:  # nothing waits to leave: the next turn takes it in
            self._wake.set()

    def _settled(self, actor: str, generation: int, error: BaseException | None, rtt_s: float,
                 resend: tuple | None) -> None:
        if generation != self._generation[actor]:
            return  # a call through a handle dropped since: its slot was freed then
        self._inflight[actor] -= 1
        self._moved_ms[actor] = self.now_ms()
        if error is None:
            self._time("call_rtt", rtt_s)
            return
        # The peer is dead, restarting, or was re-created under its name (our handle is stale):
        # look it up again and try once more; the protocol retransmits the rest.
        self.counters["calls_failed"] += 1
        self._drop_handle(actor)
        if resend is not None and actor not in self.blocked:
            self.counters["calls_retried"] += 1
            self._call(actor, resend[0], resend[1], retry=False)

    def _refresh_peers(self) -> None:
        now = self.now_ms()
        if now >= self._next_refresh_ms:
            self._next_refresh_ms = now + 1000
            stale = self.peers.refresh_silent(now)
            for actor in stale:
                self._drop_handle(actor)
            self.counters["handles_refreshed"] += len(stale)
            stalled = [a for a, n in self._inflight.items() if n and now - self._moved_ms.get(a, now) >= CALL_STALL_MS]
            for actor in stalled:
                self._drop_handle(actor)
            self.counters["calls_stalled"] += len(stalled)

    def _drop_handle(self, actor: str) -> None:
        """Look the peer up again on the next send; its calls in flight stop holding its slots."""
        self.peers.forget(actor)
        self._generation[actor] += 1
        self._inflight[actor] = 0
        self._moved_ms.pop(actor, None)

    # -- operator controls (run on the loop thread: ``call``) -----------------------------------
    def set_transformer(self, fn: Transformer | None) -> None:
        self.call(setattr, self, "transformer", fn)

    def set_blocked(self, parties: list[str]) -> None:
        def apply() -> None:
            self.blocked = set(parties)
            for p in self.blocked:
                self._buffers.pop(p, None)

        self.call(apply)

    def _counters_with_crypto(self) -> dict:
        from dtm_ray.crypto import CRYPTO_OPS

        out = dict(self.counters)
        out.update({"crypto_" + k: v for k, v in CRYPTO_OPS.items()})
        if self._dropped_queue_full:
            out["dropped_queue_full"] = self._dropped_queue_full
        return out

    def stats(self) -> dict:
        return self.call(self._stats)

    def _stats(self) -> dict:
        out = self._counters_with_crypto()
        out["cpu_s"] = round(time.process_time(), 3)  # the whole process: Ray's threads too
        if threading.current_thread() is self._thread:  # the loop's own share: core, codec, host
            self._loop_cpu_s = round(time.thread_time(), 3)
        out["loop_cpu_s"] = self._loop_cpu_s
        out["byzantine"] = self.transformer is not None
        out["blocked"] = sorted(self.blocked)
        out["buffered"] = sum(len(b) for b in self._buffers.values())
        out["buffered_to"] = {d: len(b) for d, b in self._buffers.items() if b}
        out["inflight_to"] = {a: n for a, n in self._inflight.items() if n}
        out["handle_lookups"] = self.peers.lookups
        out["timing"] = {k: {"count": c, "mean_ms": round(t / c, 2) if c else None, "max_ms": round(m, 1)}
                         for k, (c, t, m) in self.timing.items()}
        return out


class _TimedWrites:
    """The party's storage, with each synced write batch timed."""

    def __init__(self, storage: Any, host: Host) -> None:
        self._storage, self._host = storage, host

    def write(self, batch: list, sync: bool = True) -> None:
        started = time.perf_counter()
        self._storage.write(batch, sync=sync)
        self._host._time("fsync", time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)
