"""Hundreds of seeded simulated PBFT runs under fault plans, each checked for every property.

A failure prints the seed, the plan and the journal of what happened, and the command that
replays it: ``DTM_SEED=<seed> DTM_N=<n> python -m pytest tests/test_sim_pbft.py -k seed_replay -s``
(plus ``DTM_HARSH=1`` for a plan of the nightly sweep).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from dtm_ray.pbft.events import CheckpointStable, Evidence, StateTransferred, ViewChanged
from dtm_ray.sim.plans import random_plan, run_plan

RUNS_PER_CHUNK = 50
CHUNKS_PER_N = 5  # 2 sizes x 5 chunks x 50 runs = 500 seeded runs in CI


def seeds(n: int, chunk: int) -> range:
    start = n * 100_000 + chunk * RUNS_PER_CHUNK
    return range(start, start + RUNS_PER_CHUNK)


def run_seeds(n: int, seed_range, harsh: bool = False) -> None:
    failures = []
    exercised: Counter[str] = Counter()  # runs in which each kind of output occurred
    for seed in seed_range:
        result = run_plan(random_plan(seed, n, harsh=harsh), liveness_bound_ms=60_000 if harsh else 20_000)
        if result.violations:
            failures.append(result.report())
        exercised.update({type(o.output).__name__ for o in result.world.sim.outputs})
    assert not failures, f"{len(failures)} of {len(seed_range)} seeded runs failed; first ones:\n\n" + \
        "\n\n".join(failures[:3])
    # the plans must keep reaching the hard parts of the protocol, or passing proves little
    for kind in (ViewChanged, StateTransferred, Evidence, CheckpointStable):
        assert exercised[kind.__name__] > 0, f"no run of {seed_range} produced {kind.__name__}: {dict(exercised)}"


@pytest.mark.parametrize("chunk", range(CHUNKS_PER_N))
@pytest.mark.parametrize("n", [4, 7])
def test_seeded_fault_plans(n, chunk):
    run_seeds(n, seeds(n, chunk))


def test_seed_replay():
    """Replays one seed (``DTM_SEED``, default a fixed one) and prints its plan and journal."""
    seed = int(os.environ.get("DTM_SEED", "400001"))
    n = int(os.environ["DTM_N"]) if "DTM_N" in os.environ else None
    harsh = os.environ.get("DTM_HARSH") == "1"
    result = run_plan(random_plan(seed, n, harsh=harsh), liveness_bound_ms=60_000 if harsh else 20_000)
    print(result.report())
    assert not result.violations, result.report()


@pytest.mark.nightly
@pytest.mark.parametrize("n", [4, 7])
def test_nightly_sweep(n):
    """2,000 harsh plans per size: longer fault phases, more crashes, partitions, loss, requests."""
    run_seeds(n, range(1_000_000 + n * 10_000, 1_000_000 + n * 10_000 + 2_000), harsh=True)
