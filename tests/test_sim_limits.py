"""The checkers can fail: a broken protocol is caught (negative control), and beyond the fault
model (f+1 colluding Byzantine replicas) safety really breaks, while evidence is still recorded."""

from __future__ import annotations

import pytest

from dtm_ray.faults import colluding_equivocators
from dtm_ray.pbft import quorum
from dtm_ray.sim import checkers
from dtm_ray.sim.plans import FaultPlan, Step, run_plan
from dtm_ray.sim.pbft_world import build_world


def equivocating_primary_plan(seed: int, n: int = 4) -> FaultPlan:
    return FaultPlan(seed, n, clients=3, requests_per_client=4, byzantine=(("R0", "equivocate"),),
                     steps=(Step(300, "heal"),), heal_at_ms=300)


def test_the_same_attack_is_harmless_with_correct_quorums():
    for seed in range(5):
        result = run_plan(equivocating_primary_plan(seed))
        assert not result.violations, result.report()


def test_negative_control_a_quorum_of_f_plus_1_is_caught(monkeypatch):
    monkeypatch.setattr(quorum, "strong", lambda f: f + 1)  # the bug, inside this test only
    caught = []
    for seed in range(10):
        result = run_plan(equivocating_primary_plan(seed), liveness_bound_ms=3_000)
        if any(v.prop in ("agreement", "exactly-once") for v in result.violations):
            caught.append(seed)
            break
    assert caught, "the checkers did not notice f+1 quorums under an equivocating primary"


def test_beyond_the_model_f_plus_1_colluders_break_agreement_and_leave_evidence():
    world = build_world(seed=11, n=4, clients=2)
    colluders = {r: world.keys[r] for r in ("R0", "R1")}  # f+1 = 2 Byzantine replicas
    behaviours = colluding_equivocators(colluders, world.config, world.sim.rng, shown_alternative={"R3"})
    for r, behaviour in behaviours.items():
        world.make_byzantine(r, behaviour, "colluding-equivocator")
    world.start_workload(4)
    world.sim.run_until(world.workload_done, 5_000)
    broken = checkers.agreement(world.sim.outputs, {"R2", "R3"})
    assert broken, "two colluders beyond f should have split the correct replicas R2 and R3"
    proofs = checkers.evidence(world.sim.outputs, "equivocation")
    assert any(e.accused in ("R0", "R1") for e in proofs), \
        f"no equivocation evidence against the colluders; evidence: {checkers.evidence(world.sim.outputs)}"
