"""A hypothesis state machine over fault sequences: when an invariant breaks, hypothesis shrinks
the sequence of crashes, partitions, Byzantine turns and submissions to a minimal one."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dtm_ray.faults import CATALOGUE, make_behaviour
from dtm_ray.pbft.events import ClientResult
from dtm_ray.sim.pbft_world import build_world
from dtm_ray.sim.plans import heal

N = 4
REPLICAS = [f"R{i}" for i in range(N)]
CLIENTS = ["c0", "c1"]


class PbftUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = build_world(seed=7, n=N, clients=len(CLIENTS))
        self.world.sim.watch(self._on_output)
        self.waiting: set[str] = set()  # clients with a request outstanding

    def _on_output(self, observed) -> None:
        if isinstance(observed.output, ClientResult):
            self.waiting.discard(observed.party)

    @property
    def fault_budget(self) -> int:
        return self.world.config.f - len(self.world.faulty)

    @rule(client=st.sampled_from(CLIENTS))
    def submit(self, client):
        if client not in self.waiting:
            self.waiting.add(client)
            self.world.submit(client)

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
    @rule(replica=st.sampled_from(REPLICAS), name=st.sampled_from(sorted(CATALOGUE)))
    def byzantine(self, replica, name):
        if replica in self.world.faulty:
            return
        behaviour = make_behaviour(name, keys=self.world.keys[replica], config=self.world.config,
                                   rng=random.Random(len(self.world.sim.journal)))
        self.world.make_byzantine(replica, behaviour, name)

    @invariant()
    def safe(self):
        violations = self.world.safety_violations()
        assert not violations, "\n".join(map(str, violations)) + "\n" + "\n".join(self.world.sim.journal)

    def teardown(self):
        heal(self.world)
        done = self.world.sim.run_until(lambda: not self.waiting, 20_000)
        assert done, f"requests of {sorted(self.waiting)} unanswered 20 s after healing:\n" + \
            "\n".join(self.world.sim.journal)
        self.safe()


PbftUnderFaults.TestCase.settings = settings(
    max_examples=12, stateful_step_count=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow])
test_pbft_under_fault_sequences = PbftUnderFaults.TestCase
