"""A replica's own pauses are not its primary's fault (``ViewChanges._note_pause``).

On Ray at 512 clients a backup's turn sometimes took 0.3-0.9 s (taking in the first burst of
requests; a starved process at a run's end); the requests it took in were stamped on the clock of
the turn's start, and the next tick, that much later, found them "waiting for a timeout" and
asked for a view change that the others joined: load alone changed views. The view-change timers
now run on ``timer_now``, the replica's clock without the excess of each tick gap over
``PAUSE_MS``.

Seeded simulator runs (``Simulation.pause``: no ticks, no input, then the held input on the stale
clock and a tick, as a host's next turn); a failure prints the seed and the schedule. The other
side of the rule: a replica paused over and over still times a crashed primary out.
"""

from __future__ import annotations

import random

import pytest

from dtm_ray.pbft.views import PAUSE_MS
from dtm_ray.sim.pbft_world import PbftWorld, build_world, small_config

SEEDS = range(8)
PAUSES = 6  # per run, each of every replica
VIEW_CHANGE_BOUND_MS = 2_000


def views_and_causes(world: PbftWorld) -> dict[str, tuple[int, dict]]:
    return {r: (s["view"], s["view_change_causes"]) for r, s in world.statuses().items()}


def paused_backups_run(seed: int) -> PbftWorld:
    """4 replicas, 3 clients x 12 requests spread over the run; every 150-400 ms the machine
    starves: every replica pauses for 2-4 view-change timeouts, each starting up to 60 ms apart
    and lasting up to 60 ms longer or shorter than the others (requests taken in meanwhile are
    stamped on the stale clock and wait at every replica when it resumes)."""
    config = small_config(4)
    world = build_world(seed, 4, clients=3, config=config)
    sim, rng = world.sim, random.Random(seed)
    at = 50
    for _ in range(PAUSES):
        length = rng.randrange(2 * config.view_change_timeout_ms, 4 * config.view_change_timeout_ms)
        for replica in world.replicas:
            sim.schedule(at + rng.randrange(60), lambda s, r=replica, ms=length + rng.randrange(-60, 60): s.pause(r, ms))
        at += length + 120 + rng.randrange(150, 400)
    world.start_workload(requests_per_client=12, think_ms=at // 12)  # requests keep coming meanwhile
    assert sim.run_until(lambda: world.workload_done() and sim.now_ms > at, 60_000), \
        f"seed={seed}: the workload did not finish\n" + "\n".join(sim.journal)
    return world


@pytest.mark.parametrize("seed", SEEDS)
def test_replicas_of_a_starved_machine_that_pause_for_several_timeouts_keep_their_primary(seed):
    world = paused_backups_run(seed)
    context = f"seed={seed} {views_and_causes(world)}\n" + "\n".join(world.sim.journal)
    statuses = world.statuses()
    assert sum(s["paused"]["count"] for s in statuses.values()) >= PAUSES, context  # the pauses were seen
    assert all(s["view"] == 0 and not s["view_change_causes"] for s in statuses.values()), context
    assert not world.safety_violations(), context


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_a_backup_paused_over_and_over_still_times_out_a_crashed_primary(seed):
    """The primary crashes; R1 and R2 then run 20 ms out of every PAUSE_MS + 120 (processes
    starved for good). Their timer clocks still advance by PAUSE_MS per pause, so they ask for
    the view change on their own (R3 alone is not the f+1 that makes others join) within
    VIEW_CHANGE_BOUND_MS, and the workload finishes. (A timer that stopped for the whole of each
    pause would take over 2.6 s here.)"""
    config = small_config(4)
    world = build_world(seed, 4, clients=3, config=config)
    sim = world.sim
    world.start_workload(requests_per_client=6)
    sim.run_until(lambda: len(world.answered()) >= 3, 10_000)
    sim.crash("R0")
    period = PAUSE_MS + 120

    def starve(s) -> None:
        s.pause("R1", period - 20)
        s.pause("R2", period - 20)
        s.schedule(s.now_ms + period, starve)

    sim.schedule(sim.now_ms, starve)
    replaced = sim.run_until(lambda: all(s["view"] >= 1 for s in world.statuses().values()), VIEW_CHANGE_BOUND_MS)
    context = f"seed={seed} R1 paused {world.statuses()['R1']['paused']} {views_and_causes(world)}"
    assert replaced, f"the starved cluster did not replace its crashed primary in time: {context}"
    assert any(world.statuses()[r]["view_change_causes"].get("stalled") for r in ("R1", "R2")), context
    assert sim.run_until(world.workload_done, 60_000), context
    assert not world.safety_violations(), context
