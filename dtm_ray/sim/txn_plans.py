"""Fault plans for transaction runs: one seed -> one readable schedule -> one checked run.

Like ``dtm_ray.sim.plans`` (whose ``Step`` it reuses), with what transactions add: participants
crash and restart (their disk kept: a participant is a service, its data is its disk), partitions
split replicas *and* participants, Byzantine replicas are drawn from the whole catalogue
(including ``forge-decision`` and ``forge-votes``), and sometimes one participant equivocates
its votes (``equivocate-vote``). The model's budget holds: Byzantine replicas plus replicas that
lose their disk are at most ``f``. At ``heal_at_ms`` the network heals and every crashed party
restarts; from then on every client must get its answer and every checker must pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dtm_ray.checks import Anomaly
from dtm_ray.faults import CATALOGUE, make_behaviour
from dtm_ray.sim.network import NetworkConfig
from dtm_ray.sim.plans import Step, perform_network_or_crash
from dtm_ray.sim.txn_world import (BankWorkload, HotKeyWorkload, ListAppendWorkload, TxnWorld, build_txn_world)
from dtm_ray.txn.byzantine import PARTICIPANT_CATALOGUE, TXN_CATALOGUE

REPLICA_BEHAVIOURS = tuple(sorted(set(CATALOGUE) - set(PARTICIPANT_CATALOGUE)))
WORKLOADS = {"bank": BankWorkload, "list-append": ListAppendWorkload, "hot-key": HotKeyWorkload}


@dataclass(frozen=True, slots=True)
class TxnPlan:
    seed: int
    n: int
    workload: str
    clients: int
    txns_per_client: int
    byzantine: tuple[tuple[str, str], ...]  # (party, behaviour): replicas and at most one participant
    steps: tuple[Step, ...]
    heal_at_ms: int

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    def describe(self) -> str:
        byz = ", ".join(f"{p}={b}" for p, b in self.byzantine) or "none"
        steps = "; ".join(map(str, self.steps)) or "no faults"
        return (f"n={self.n} f={self.f} workload={self.workload} clients={self.clients}x{self.txns_per_client} "
                f"byzantine[{byz}] schedule[{steps}] heal at t={self.heal_at_ms}ms")


def random_txn_plan(seed: int, *, n: int | None = None, workload: str | None = None, clients: int = 20,
                    txns_per_client: int = 2, participants: tuple[str, ...] = ("db-0", "db-1", "db-2")) -> TxnPlan:
    rng = random.Random(f"txn-plan:{seed}")
    n = n if n is not None else (7 if rng.random() < 0.1 else 4)
    f = (n - 1) // 3
    replicas = [f"R{i}" for i in range(n)]
    workload = workload or ("bank", "list-append")[seed % 2]
    heal_at = rng.randint(200, 1000)

    k_byz = rng.randint(1, f) if rng.random() < 0.85 else 0
    candidates = replicas[1:]
    rng.shuffle(candidates)
    byz = candidates[:k_byz]
    if byz and rng.random() < 0.4:
        byz[0] = replicas[0]  # the primary of view 0
    txn_attacks = sorted(TXN_CATALOGUE)
    byzantine = [(r, rng.choice(txn_attacks) if rng.random() < 0.4 else rng.choice(REPLICA_BEHAVIOURS))
                 for r in byz]
    if rng.random() < 0.3:
        byzantine.append((rng.choice(participants), "equivocate-vote"))
    wipe_budget = f - len(byz)

    steps: list[Step] = []
    honest = [r for r in replicas if r not in byz]
    for _ in range(rng.choice((0, 1, 1, 2))):
        victim = rng.choice(honest + list(participants))
        down = rng.randint(0, heal_at - 20)
        up = min(heal_at, down + rng.randint(20, 400))
        wipe = victim in replicas and wipe_budget > 0 and rng.random() < 0.3
        wipe_budget -= wipe
        steps.append(Step(down, "crash", (victim,)))
        steps.append(Step(up, "wipe" if wipe else "restart", (victim,)))
    if rng.random() < 0.4:
        parties = replicas + list(participants)
        side = rng.sample(parties, rng.randint(1, len(parties) - 1))
        rest = [p for p in parties if p not in side]
        at = rng.randint(0, heal_at - 10)
        steps.append(Step(at, "partition", (tuple(sorted(side)), tuple(rest))))
        if rng.random() < 0.5:
            steps.append(Step(rng.randint(at, heal_at), "heal-partition"))
    if rng.random() < 0.2:
        steps.append(Step(rng.randint(0, heal_at), "slow", (rng.choice(replicas + list(participants)),
                                                             rng.randint(20, 300))))
    if rng.random() < 0.5:
        steps.append(Step(0, "lossy", (round(rng.uniform(0, 0.1), 3), round(rng.uniform(0, 0.2), 3),
                                       round(rng.uniform(0, 0.3), 3))))
    steps.append(Step(heal_at, "heal"))
    steps.sort(key=lambda s: s.at_ms)
    return TxnPlan(seed, n, workload, clients, txns_per_client, tuple(sorted(byzantine)), tuple(steps), heal_at)


def apply_txn_plan(world: TxnWorld, plan: TxnPlan, rng: random.Random) -> None:
    for party, name in plan.byzantine:
        behaviour = make_behaviour(name, keys=world.keys[party], config=world.config,
                                   rng=random.Random(rng.getrandbits(64)))
        world.make_byzantine(party, behaviour, name)
    for step in plan.steps:
        world.sim.schedule(step.at_ms, lambda sim, step=step: perform(world, step))


def perform(world: TxnWorld, step: Step) -> None:
    sim, net = world.sim, world.sim.network
    if perform_network_or_crash(world, step):
        return
    if step.action == "heal":
        net.heal()
        for party in world.replicas + world.participants:
            if not sim.alive(party):
                world.restart(party)
        world.healed_at_ms = sim.now_ms
        sim.note("heal: network healthy, crashed parties restarted")
    else:
        raise ValueError(f"unknown plan step {step.action!r}")


@dataclass
class TxnRunResult:
    plan: TxnPlan
    world: TxnWorld
    violations: list[Anomaly] = field(default_factory=list)

    def report(self, test_file: str = "tests/test_txn_sim.py") -> str:
        lines = [f"seed={self.plan.seed} plan: {self.plan.describe()}",
                 f"reproduce: DTM_SEED={self.plan.seed} python -m pytest {test_file} -k seed_replay",
                 *(f"  VIOLATION {v}" for v in self.violations[:20]),
                 "journal:", *(f"  {j}" for j in self.world.sim.journal[-30:])]
        return "\n".join(lines)


def run_txn_plan(plan: TxnPlan, *, liveness_bound_ms: int = 30_000, network: NetworkConfig | None = None,
                 **world_options) -> TxnRunResult:
    world = build_txn_world(plan.seed, plan.n, clients=plan.clients, network=network, **world_options)
    rng = random.Random(world.sim.rng.getrandbits(64))
    apply_txn_plan(world, plan, rng)
    workload_cls = WORKLOADS[plan.workload]
    world.start(workload_cls(list(world.participants), random.Random(rng.getrandbits(64))), plan.txns_per_client)
    sim = world.sim
    sim.run_until(lambda: world.healed_at_ms > 0, plan.heal_at_ms + 1)
    answered = sim.run_until(world.done, liveness_bound_ms)
    quiet = answered and sim.run_until(world.quiescent, liveness_bound_ms)
    violations = world.violations(complete=quiet)
    if answered and not quiet:
        violations.append(Anomaly("liveness", "prepared transactions never resolved at some participant: "
                                              f"{ {p: s for p, s in world.statuses().items() if p in world.participants} }"))
    return TxnRunResult(plan, world, violations)
