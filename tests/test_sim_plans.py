"""Fault plans are reproducible, stay within the fault model, and the verification cache changes
nothing but CPU time."""

from __future__ import annotations

from dtm_ray.faults import PBFT_BEHAVIOURS
from dtm_ray.sim.plans import FaultPlan, Step, random_plan, run_plan


def test_a_seed_always_gives_the_same_plan_and_sizes_4_and_7_both_occur():
    assert random_plan(5) == random_plan(5)
    assert {random_plan(s).n for s in range(40)} == {4, 7}


def test_plans_respect_the_fault_budget_and_use_only_replica_attacks():
    for seed in range(300):
        plan = random_plan(seed)
        wiped = {s.args[0] for s in plan.steps if s.action == "wipe"}
        byz = {r for r, _ in plan.byzantine}
        assert len(byz | wiped) <= plan.f, plan.describe()
        assert all(part in PBFT_BEHAVIOURS for _, name in plan.byzantine for part in name.split("+"))
        assert plan.steps[-1].action == "heal" and plan.steps[-1].at_ms == plan.heal_at_ms
        assert all(s.at_ms <= plan.heal_at_ms for s in plan.steps)


def test_every_behaviour_and_fault_kind_is_drawn_in_the_ci_seeds():
    plans = [random_plan(n * 100_000 + i, n) for n in (4, 7) for i in range(250)]
    drawn = {name for p in plans for _, name in p.byzantine}
    assert {part for name in drawn for part in name.split("+")} == set(PBFT_BEHAVIOURS)
    assert any("+" in name for name in drawn)  # composed attacks too
    kinds = {s.action for p in plans for s in p.steps}
    assert kinds >= {"turn", "crash", "restart", "wipe", "partition", "heal-partition", "slow", "lossy", "heal"}
    assert any(r == "R0" for p in plans for r, _ in p.byzantine)  # the primary is sometimes Byzantine


def test_the_plan_reads_as_a_schedule():
    text = random_plan(400_004, 4).describe()
    assert text.startswith("n=4 f=1") and "heal at t=" in text


def test_a_run_replays_exactly_from_its_seed_and_the_cache_changes_nothing_but_cost():
    plan = random_plan(400_004, 4)
    first, again, uncached = run_plan(plan), run_plan(plan), run_plan(plan, verify_cache=False)
    assert first.world.sim.outputs == again.world.sim.outputs
    assert first.world.sim.outputs == uncached.world.sim.outputs
    assert first.world.sim.journal == uncached.world.sim.journal
    cache = first.world.verify_cache
    assert cache.hits > 0 and uncached.world.verify_cache is None


def test_a_failing_run_reports_seed_plan_violations_and_how_to_replay():
    plan = FaultPlan(9, 4, clients=1, requests_per_client=3, byzantine=(), steps=(Step(50, "heal"),), heal_at_ms=50,
                     think_ms=300)  # requests keep coming after the heal
    result = run_plan(plan, liveness_bound_ms=1)  # far too short: liveness must fail
    assert [v.prop for v in result.violations] == ["liveness"]
    report = result.report()
    assert "seed=9" in report and "DTM_SEED=9 DTM_N=4" in report and "VIOLATION liveness" in report


def _history_digest(seed: int) -> str:
    import hashlib

    result = run_plan(random_plan(seed, 4))
    h = hashlib.sha256(repr(result.world.sim.journal).encode())
    for o in result.world.sim.outputs:
        h.update(repr((o.time_ms, o.party, o.incarnation, o.output)).encode())
    return h.hexdigest()


def test_a_seed_replays_identically_in_another_process_with_another_hash_seed():
    """Nothing may depend on set iteration order of strings (randomised per process)."""
    import os
    import subprocess
    import sys

    code = "from tests.test_sim_plans import _history_digest; print(_history_digest(400004))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == _history_digest(400004)
