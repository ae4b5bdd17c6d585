"""Hundreds of seeded simulated PBFT runs under fault plans, each checked for every property.

A failure prints the seed, the plan and the journal of what happened, and the command that
replays it: ``DTM_SEED=<seed> python -m pytest tests/test_sim_pbft.py -k seed_replay``.
"""

from __future__ import annotations

import os

import pytest

from dtm_ray.sim.plans import random_plan, run_plan

RUNS_PER_CHUNK = 50
CHUNKS_PER_N = 5  # 2 sizes x 5 chunks x 50 runs = 500 seeded runs in CI


def seeds(n: int, chunk: int) -> range:
    start = n * 100_000 + chunk * RUNS_PER_CHUNK
    return range(start, start + RUNS_PER_CHUNK)


def run_seeds(n: int, seed_range) -> None:
    failures = []
    for seed in seed_range:
        result = run_plan(random_plan(seed, n))
        if result.violations:
            failures.append(result.report())
    assert not failures, f"{len(failures)} of {len(seed_range)} seeded runs failed; first ones:\n\n" + \
        "\n\n".join(failures[:3])


@pytest.mark.parametrize("chunk", range(CHUNKS_PER_N))
@pytest.mark.parametrize("n", [4, 7])
def test_seeded_fault_plans(n, chunk):
    run_seeds(n, seeds(n, chunk))


def test_seed_replay():
    """Replays one seed (``DTM_SEED``, default a fixed one) and prints its plan and journal."""
    seed = int(os.environ.get("DTM_SEED", "400001"))
    n = int(os.environ["DTM_N"]) if "DTM_N" in os.environ else None
    result = run_plan(random_plan(seed, n))
    print(result.report())
    assert not result.violations, result.report()


@pytest.mark.nightly
@pytest.mark.parametrize("n", [4, 7])
def test_nightly_sweep(n):
    run_seeds(n, range(1_000_000 + n * 10_000, 1_000_000 + n * 10_000 + 2_000))
