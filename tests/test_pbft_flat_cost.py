"""Flat cost per request: the replica's work per committed request does not grow with the number
of requests waiting (issue 11 part 4, the PBFT side).

The work is counted, not timed: every line the replica's own modules execute (``sys.settrace``,
line events, loops included) over a whole simulated run, divided by the requests committed. The
same 2,000 requests are ordered once by 200 closed-loop clients and once by 2,000, with batches of
10 and two batches in flight, so the primary's queue holds ~10x more requests in the second run.
A scan of the pending requests per batch cut (``_propose`` used to filter every pending request
to find the unordered ones) or per tick (``min`` over every waiting request for the view-change
timer, a pass over all of them to track the App's due proposals) makes the second figure grow
with the queue (measured before the fix: 689 lines per request with 200 clients, 961 with
2,000); a FIFO queue of unordered requests and FIFO timers keep it flat (608 and 623).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dtm_ray.pbft
from dtm_ray.sim.pbft_world import build_world, small_config

PBFT_DIR = Path(dtm_ray.pbft.__file__).parent
# The replica's modules: the client and the example App are not the replica's work.
REPLICA_FILES = {str(p) for p in PBFT_DIR.glob("*.py") if p.name not in ("client.py", "kvapp.py")}
REQUESTS = 2_000


def replica_lines_per_request(clients: int, seed: int) -> float:
    config = small_config(4, batch_size=10, max_inflight_batches=2, checkpoint_interval=16,
                          watermark_window=64, view_change_timeout_ms=60_000, client_retry_ms=60_000)
    world = build_world(seed, 4, clients=clients, config=config)
    world.start_workload(REQUESTS // clients)
    lines = 0

    def local(frame, event, arg):
        nonlocal lines
        if event == "line":
            lines += 1
        return local

    def on_call(frame, event, arg):
        return local if frame.f_code.co_filename in REPLICA_FILES else None

    sys.settrace(on_call)
    try:
        done = world.sim.run_until(world.workload_done, 600_000)
    finally:
        sys.settrace(None)
    assert done, f"seed={seed} clients={clients}: the workload did not finish"
    committed = len(world.answered() & world.submitted)
    assert committed == REQUESTS, f"seed={seed}: {committed} committed"
    return lines / committed


@pytest.mark.parametrize("seed", [1])
def test_replica_work_per_request_is_flat_as_the_queue_grows_tenfold(seed):
    small = replica_lines_per_request(200, seed)
    large = replica_lines_per_request(2_000, seed)
    assert large <= 1.15 * small, (f"seed={seed}: {large:.0f} replica lines per request with 2,000 clients, "
                                   f"{small:.0f} with 200")
