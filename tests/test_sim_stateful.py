"""A hypothesis state machine over fault sequences at n=4: clients submit continuously while the
rules crash, restart (disk kept or wiped), partition, make the network lossy, heal, and turn
replicas (or the current primary) Byzantine within the fault budget; safety is checked after
every step and liveness after a final heal. When an invariant breaks, hypothesis shrinks the
sequence of rules to a minimal one and prints it."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dtm_ray.faults import PBFT_BEHAVIOURS, make_behaviour
from dtm_ray.sim.pbft_world import build_world
from dtm_ray.sim.plans import heal

N = 4
REPLICAS = [f"R{i}" for i in range(N)]
CLIENTS = ["c0", "c1"]


class PbftUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = build_world(seed=7, n=N, clients=len(CLIENTS))
        self.world.start_workload(requests_per_client=10**6, think_ms=30)  # clients never stop on their own

    @property
    def fault_budget(self) -> int:
        return self.world.config.f - len(self.world.faulty)

    @rule(ms=st.integers(5, 400))
    def run(self, ms):
        self.world.sim.run_for(ms)

    @rule(replica=st.sampled_from(REPLICAS))
    def crash(self, replica):
        self.world.sim.crash(replica)

    @rule(replica=st.sampled_from(REPLICAS), wipe=st.booleans())
    def restart(self, replica, wipe):
        if wipe and replica not in self.world.faulty and self.fault_budget <= 0:
            wipe = False
        self.world.restart(replica, wipe=wipe)

    @rule(side=st.sets(st.sampled_from(REPLICAS), min_size=1, max_size=N - 1))
    def partition(self, side):
        self.world.sim.network.partition(sorted(side), sorted(set(REPLICAS) - side))
        self.world.sim.note(f"partition {sorted(side)}")

    @rule(drop=st.floats(0, 0.3), dup=st.floats(0, 0.3))
    def lossy(self, drop, dup):
        self.world.sim.network.set_lossy(drop_rate=drop, duplicate_rate=dup, reorder_rate=0.2)

    @rule()
    def heal_network(self):
        self.world.sim.network.heal()

    @precondition(lambda self: self.fault_budget > 0)
    @rule(replica=st.sampled_from(REPLICAS), name=st.sampled_from(sorted(PBFT_BEHAVIOURS)))
    def byzantine(self, replica, name):
        if replica in self.world.faulty:
            return
        behaviour = make_behaviour(name, keys=self.world.keys[replica], config=self.world.config,
                                   rng=random.Random(len(self.world.sim.journal)))
        self.world.make_byzantine(replica, behaviour, name)

    @precondition(lambda self: self.fault_budget > 0)
    @rule(name=st.sampled_from(sorted(PBFT_BEHAVIOURS)))
    def byzantine_primary(self, name):
        """The primary of the view most replicas are in turns Byzantine (the worst place for it)."""
        views = [self.world.replica(r).status()["view"] for r in REPLICAS if self.world.sim.alive(r)]
        view = max(set(views), key=views.count) if views else 0
        self.byzantine(self.world.config.primary(view), name)

    @invariant()
    def safe(self):
        violations = self.world.safety_violations()
        assert not violations, "\n".join(map(str, violations)) + "\n" + "\n".join(self.world.sim.journal)

    def teardown(self):
        heal(self.world)
        self.world.to_submit = {c: 0 for c in CLIENTS}  # the last requests are in flight: finish them
        done = self.world.sim.run_until(self.world.workload_done, 20_000)
        unanswered = sorted(self.world.submitted - self.world.answered())
        assert done, f"requests {unanswered} unanswered 20 s after healing:\n" + "\n".join(self.world.sim.journal)
        self.safe()


PbftUnderFaults.TestCase.settings = settings(
    max_examples=12, stateful_step_count=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow])
test_pbft_under_fault_sequences = PbftUnderFaults.TestCase


class EquivocatingUnderFaults(PbftUnderFaults):
    """The same machine, except that a replica turning Byzantine always equivocates: the attack
    quorum intersection exists to stop, so the negative control below does not depend on
    hypothesis happening to draw it (1 behaviour in 11) before the fault budget is spent."""

    @precondition(lambda self: self.fault_budget > 0)
    @rule(replica=st.sampled_from(REPLICAS))
    def byzantine(self, replica, name="equivocate"):
        super().byzantine(replica, name)

    @precondition(lambda self: self.fault_budget > 0)
    @rule()
    def byzantine_primary(self, name="equivocate"):
        super().byzantine_primary(name)


def test_the_state_machine_finds_a_broken_quorum(monkeypatch):
    """Negative control for the state machine: with f+1 quorums it must find a violating fault
    sequence. Shrinking is off here to stay within the CI budget (shrinking this one takes
    minutes); on a real failure of the test above hypothesis shrinks and prints the sequence.

    Why the equivocating machine, 20 steps and 200 examples: hypothesis (>= 6.13x) mixes into its
    draws the literal constants of every project module already in ``sys.modules``, so the
    sequences a derandomized run tries depend on which modules earlier tests imported. The full
    machine found the violation only by luck (after tests/test_txn_sim.py had imported
    ``dtm_ray.sim.txn_plans``, 60 examples of 10 steps found nothing; 200 of 20 failed in yet
    another import context). With every Byzantine replica equivocating it is found within 2
    examples in every import context measured; the budget is headroom and costs time only if the
    control is about to fail anyway."""
    import pytest
    from hypothesis.errors import Flaky
    from hypothesis.stateful import run_state_machine_as_test

    from dtm_ray.pbft import quorum

    monkeypatch.setattr(quorum, "strong", lambda f: f + 1)
    with pytest.raises((AssertionError, Flaky)) as failure:
        run_state_machine_as_test(EquivocatingUnderFaults, settings=settings(
            max_examples=200, stateful_step_count=20, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
            report_multiple_bugs=False))
    assert "agreement" in str(failure.value) or "exactly-once" in str(failure.value) or "unanswered" in str(failure.value)
