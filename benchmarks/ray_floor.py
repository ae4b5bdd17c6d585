"""What Ray alone delivers on this machine: all-to-all actor calls among K actors, no project code.

    python -m benchmarks.ray_floor                       # K=8, every shape, 1/10/100 items per call
    python -m benchmarks.ray_floor --actors 4 --items 1 --seconds 2

The point of it: the system's actor calls per second mean little without the machine's own limit
beside them, so every ``dtm-ray bench`` report carries this floor (``floor()``, its ``floor``
section). Each of K actors sends, for ``seconds``, batches of ``items`` payloads of ``item_bytes``
to every other actor, at most ``window`` calls in flight per destination, in one of three shapes:

- ``host`` (``actors/host.py`` today): plain (sync) actors; ``deliver`` only enqueues and wakes the
  actor's own loop thread, which makes every send; the method is declared
  ``@ray.method(enable_task_events=False)``; a call's completion (its ObjectRef's future callback)
  frees its slot in the window. (``num_returns=0`` with ``max_pending_calls`` would save the reply
  object, but Ray 2.60 drops ``max_pending_calls`` from handles looked up by name, which is how
  peers find each other, so the host cannot get its back-pressure from there.)
- ``pending`` (what Ray's cheapest shape would be): the same, with ``num_returns=0`` calls and the
  window kept by Ray's ``max_pending_calls`` (a refused call, ``PendingCallsLimitExceeded``, waits
  for the next turn); the handles are the creator's, passed as arguments.
- ``async`` (the host before): async actors, each call's ObjectRef awaited on the actor's event loop.

Reported per point: calls/s and items/s received (summed over actors), and the actors' CPU per
call (``time.process_time`` summed over actors, divided by calls). Bounded: a few seconds a point.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402 - after the environment it reads

SHAPES = ("host", "pending", "async")
ITEMS = (1, 10, 100)


class _Counts:
    """Calls and items received, and this process's CPU at the start of the measured window."""

    def __init__(self) -> None:
        self.calls = self.items = self.refused = 0
        self.cpu0 = time.process_time()

    def reset(self) -> None:
        self.calls = self.items = self.refused = 0
        self.cpu0 = time.process_time()

    def report(self) -> dict:
        return {"calls": self.calls, "items": self.items, "refused": self.refused, "cpu_s": time.process_time() - self.cpu0}


class SyncPeer:
    """A plain actor: ``deliver`` enqueues; one loop thread makes every send, ``window`` per peer."""

    def __init__(self, index: int, items: int, item_bytes: int, window: int, pending: bool = False) -> None:
        self.index, self.window, self.pending = index, window, pending
        self.batch = [os.urandom(item_bytes) for _ in range(items)]
        self.counts = _Counts()
        self.inbox: collections.deque = collections.deque()  # deliveries (ints) and settled slots (tuples)
        self.wake = threading.Event()
        self.inflight: collections.Counter = collections.Counter()
        self.running = False

    @ray.method(enable_task_events=False)
    def deliver(self, sender: int, payloads: list[bytes]) -> None:
        self.inbox.append(len(payloads))
        self.wake.set()

    @ray.method(num_returns=0, enable_task_events=False)
    def deliver0(self, sender: int, payloads: list[bytes]) -> None:
        self.inbox.append(len(payloads))
        self.wake.set()

    def start(self, peers: list) -> None:
        self.peers = {i: h for i, h in enumerate(peers) if i != self.index}
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while self.running:
            self.wake.wait(0.01)
            self.wake.clear()
            self._drain()
            for i, handle in self.peers.items():
                self._send(i, handle)

    def _drain(self) -> None:
        while self.inbox:
            item = self.inbox.popleft()
            if isinstance(item, tuple):
                self.inflight[item[1]] -= 1
            else:
                self.counts.calls += 1
                self.counts.items += item

    def _send(self, i: int, handle) -> None:
        if self.pending:  # Ray counts the window (max_pending_calls); a refused call waits a turn
            try:
                handle.deliver0.remote(self.index, self.batch)
            except ray.exceptions.PendingCallsLimitExceeded:
                self.counts.refused += 1
            return
        if self.inflight[i] < self.window:
            self.inflight[i] += 1
            handle.deliver.remote(self.index, self.batch).future().add_done_callback(
                lambda _f, i=i: self._settled(i))

    def _settled(self, i: int) -> None:  # on a Ray thread: hand the slot back to the loop
        self.inbox.append(("settled", i))
        self.wake.set()

    def reset(self) -> None:
        self.counts.reset()

    def stop(self) -> dict:
        self.running = False
        return self.counts.report()


class AsyncPeer:
    """The host's former shape: an async actor awaiting each call's ObjectRef."""

    def __init__(self, index: int, items: int, item_bytes: int, window: int) -> None:
        self.index, self.window = index, window
        self.batch = [os.urandom(item_bytes) for _ in range(items)]
        self.counts = _Counts()
        self.running = False

    async def deliver(self, sender: int, payloads: list[bytes]) -> None:
        self.counts.calls += 1
        self.counts.items += len(payloads)

    async def start(self, peers: list) -> None:
        self.running = True
        for i, handle in enumerate(peers):
            if i != self.index:
                for _ in range(self.window):
                    asyncio.get_event_loop().create_task(self._pump(handle))

    async def _pump(self, handle) -> None:
        while self.running:
            await handle.deliver.remote(self.index, self.batch)

    async def reset(self) -> None:
        self.counts.reset()

    async def stop(self) -> dict:
        self.running = False
        return self.counts.report()


def ensure_ray() -> bool:
    """Start a private local Ray (True) unless this process is already connected (False)."""
    if ray.is_initialized():
        return False
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="dtmfloor-"), configure_logging=False)
    return True


def measure(shape: str, items: int, *, actors: int = 8, seconds: float = 3.0, item_bytes: int = 200,
            window: int = 2, warmup_s: float = 0.5) -> dict:
    """One point: K actors all-to-all in ``shape`` for ``seconds`` (after ``warmup_s``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: one of {SHAPES}")
    if shape == "async":
        cls = ray.remote(AsyncPeer).options(num_cpus=0)
        peers = [cls.remote(i, items, item_bytes, window) for i in range(actors)]
    else:  # the creator's handles carry max_pending_calls; the peers get them as arguments
        cls = ray.remote(SyncPeer).options(num_cpus=0, max_pending_calls=window)
        peers = [cls.remote(i, items, item_bytes, window, shape == "pending") for i in range(actors)]
    try:
        ray.get([p.start.remote(peers) for p in peers], timeout=60)
        time.sleep(warmup_s)  # let every actor reach its steady rate before the window opens
        ray.get([p.reset.remote() for p in peers], timeout=60)
        started = time.monotonic()
        time.sleep(seconds)  # the measured window (a benchmark's clock, not a synchronisation)
        reports = ray.get([p.stop.remote() for p in peers], timeout=60)
        elapsed = time.monotonic() - started
    finally:
        for p in peers:
            ray.kill(p)
    calls = sum(r["calls"] for r in reports)
    cpu = sum(r["cpu_s"] for r in reports)
    return {"shape": shape, "items_per_call": items, "actors": actors, "item_bytes": item_bytes,
            "window": window, "seconds": round(elapsed, 2), "calls_per_s": round(calls / elapsed, 1),
            "items_per_s": round(sum(r["items"] for r in reports) / elapsed, 1),
            "refused_per_s": round(sum(r["refused"] for r in reports) / elapsed, 1),
            "cpu_ms_per_call": round(1000 * cpu / calls, 3) if calls else None}


def floor(*, shapes=SHAPES, items=ITEMS, actors: int = 8, seconds: float = 3.0, item_bytes: int = 200) -> dict:
    """Every (shape, items) point, in the Ray this process is connected to (a private one if none)."""
    owns = ensure_ray()
    try:
        points = [measure(s, k, actors=actors, seconds=seconds, item_bytes=item_bytes)
                  for s in shapes for k in items]
    finally:
        if owns:
            ray.shutdown()
    return {"points": points, "cpu_count": os.cpu_count(), "ray": ray.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--items", type=int, nargs="+", default=list(ITEMS))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--item-bytes", type=int, default=200)
    args = parser.parse_args(argv)
    result = floor(shapes=args.shapes, items=args.items, actors=args.actors, seconds=args.seconds,
                   item_bytes=args.item_bytes)
    json.dump(result, sys.stdout, indent=1)
    print()
    return result


if __name__ == "__main__":
    main()
