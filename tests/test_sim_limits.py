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


def split_by_colluders(seed: int = 11, cut_ms: int = 60):
    """n=4 with f+1 = 2 Byzantine replicas (beyond the model: PBFT promises nothing here): the
    primary R0 shows R3 another batch than R2, R1 backs each version where it was shown, and the
    link between the two correct replicas is down for ``cut_ms`` (an asynchronous network may do
    that), so neither can show the other its version before committing."""
    world = build_world(seed=seed, n=4, clients=2)
    colluders = {r: world.keys[r] for r in ("R0", "R1")}
    behaviours = colluding_equivocators(colluders, world.config, world.sim.rng, shown_alternative={"R3"})
    for r, behaviour in behaviours.items():
        world.make_byzantine(r, behaviour, "colluding-equivocator")
    if cut_ms:
        world.sim.network.cut("R2", "R3")
        world.sim.schedule(cut_ms, lambda sim: sim.network.restore("R2", "R3"))
    world.start_workload(4)
    finished = world.sim.run_until(world.workload_done, 5_000)
    assert finished, f"seed={seed}: the workload did not finish within 5 s"
    world.sim.run_for(1_000)
    return world


def test_beyond_the_model_f_plus_1_colluders_break_agreement_and_equivocation_evidence_is_recorded():
    world = split_by_colluders()
    broken = checkers.agreement(world.sim.outputs, {"R2", "R3"})
    assert broken, "two colluders beyond f should have split the correct replicas R2 and R3"
    # once the correct replicas can talk again, each shows the other the pre-prepare it was sent:
    # two conflicting PRE-PREPAREs signed by R0 for one slot, a proof anybody can check
    proofs = [e for e in checkers.evidence(world.sim.outputs, "equivocation") if e.accused == "R0"]
    assert {e.replica for e in proofs} >= {"R2", "R3"}, f"equivocation evidence recorded by {[e.replica for e in proofs]}"
    assert all(len(e.proof) == 2 and e.proof[0] != e.proof[1] for e in proofs)
    for r in ("R2", "R3"):
        assert world.replica(r).status()["evidence"].get("R0", 0) > 0


def test_beyond_the_model_on_a_healthy_network_the_correct_replicas_expose_the_conspiracy():
    """The same conspiracy without the cut: the correct replicas see each other's votes for the
    other version, show each other their pre-prepares, and both record the proof against R0
    (whether that happens before a split commits is a race beyond the model; the proof is not)."""
    world = split_by_colluders(cut_ms=0)
    recorders = {e.replica for e in checkers.evidence(world.sim.outputs, "equivocation") if e.accused == "R0"}
    assert recorders >= {"R2", "R3"}
