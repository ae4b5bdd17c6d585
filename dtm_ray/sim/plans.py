"""Fault plans: one seed -> one readable schedule of faults -> one simulated run, checked.

A plan is data (``FaultPlan``): the cluster size, which replicas are Byzantine and how, and a
schedule of ``Step``s (crash, restart with the disk kept or wiped, partition, a slow replica, a
lossy network, heal)
over a first phase; at ``heal_at_ms`` the network heals and every crashed replica restarts, and
from then on the run must make progress. Byzantine replicas stay Byzantine: PBFT must be live
with ``f`` of them after the network stabilises.

The fault budget of the model is respected: Byzantine replicas plus replicas that lose their disk
are at most ``f`` (a replica that forgot its votes may contradict them: that is a fault too).
Crashes with the disk kept are not faults; they only cost liveness while they last.

``random_plan(seed)`` draws a plan from its own generator (seeded from the seed), so a plan can
be printed, read, and replayed by seed: ``run_plan(random_plan(seed))``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dtm_ray.faults import PBFT_BEHAVIOURS, make_behaviour
from dtm_ray.sim.checkers import Violation
from dtm_ray.sim.network import NetworkConfig
from dtm_ray.sim.pbft_world import PbftWorld, behaviour_rng, build_world, replica_ids


@dataclass(frozen=True, slots=True)
class Step:
    at_ms: int
    action: str  # turn | crash | restart | wipe | partition | heal-partition | slow | lossy | heal
    args: tuple = ()

    def __str__(self) -> str:
        return f"t={self.at_ms}ms {self.action}" + ("" if not self.args else " " + " ".join(map(str, self.args)))


@dataclass(frozen=True, slots=True)
class FaultPlan:
    seed: int
    n: int
    clients: int
    requests_per_client: int
    byzantine: tuple[tuple[str, str], ...]  # (replica, behaviour); from t=0 unless a "turn" step says when
    steps: tuple[Step, ...]
    heal_at_ms: int
    think_ms: int = 0  # clients pause up to this long between requests: the workload spans the faults
    harsh: bool = False  # drawn by random_plan(seed, harsh=True)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    def describe(self) -> str:
        byz = ", ".join(f"{r}={b}" for r, b in self.byzantine) or "none"
        steps = "; ".join(map(str, self.steps)) or "no faults"
        return (f"n={self.n} f={self.f} clients={self.clients}x{self.requests_per_client} think<={self.think_ms}ms "
                f"byzantine[{byz}] "
                f"schedule[{steps}] heal at t={self.heal_at_ms}ms")


def random_plan(seed: int, n: int | None = None, *, behaviours: tuple[str, ...] | None = None,
                harsh: bool = False) -> FaultPlan:
    """The plan of ``seed``. ``harsh`` (the nightly sweep) means a longer fault phase with more
    crashes, partitions, loss and requests; the CI plans of a seed never change with it."""
    rng = random.Random(f"plan:{seed}" if not harsh else f"harsh-plan:{seed}")
    n = n if n is not None else rng.choice((4, 7))
    f = (n - 1) // 3
    replicas = list(replica_ids(n))
    heal_at = rng.randint(200, 1500) if not harsh else rng.randint(1000, 5000)
    names = sorted(behaviours or PBFT_BEHAVIOURS)

    k_byz = rng.randint(1, f) if rng.random() < 0.8 else 0
    candidates = replicas[1:]
    rng.shuffle(candidates)
    byz = candidates[:k_byz]
    if byz and rng.random() < 0.4:
        byz[0] = replicas[0]  # the primary of view 0
    byzantine = tuple(sorted((r, _attack(rng, names)) for r in byz))
    wipe_budget = f - len(byz)

    steps: list[Step] = []
    for replica, name in byzantine:
        if rng.random() < 0.4:  # a replica that turns Byzantine mid-run, with state and votes behind it
            steps.append(Step(rng.randint(1, heal_at), "turn", (replica, name)))
    honest = [r for r in replicas if r not in byz]
    for _ in range(rng.choice((0, 1, 1, 2)) if not harsh else rng.randint(1, 6)):
        victim = rng.choice(honest)
        down = rng.randint(0, heal_at - 20)
        up = min(heal_at, down + rng.randint(20, 600))
        wipe = wipe_budget > 0 and rng.random() < 0.3
        wipe_budget -= wipe
        steps.append(Step(down, "crash", (victim,)))
        steps.append(Step(up, "wipe" if wipe else "restart", (victim,)))
    for _ in range(1 if not harsh else 3):
        if rng.random() < 0.4:
            side = rng.sample(replicas, rng.randint(1, n - 1))
            rest = [r for r in replicas if r not in side]
            at = rng.randint(0, heal_at - 10)
            steps.append(Step(at, "partition", (tuple(sorted(side)), tuple(rest))))
            if rng.random() < 0.5:
                steps.append(Step(rng.randint(at, heal_at), "heal-partition"))
    if rng.random() < 0.2:
        steps.append(Step(rng.randint(0, heal_at), "slow", (rng.choice(replicas), rng.randint(20, 300))))
    loss = 0.15 if not harsh else 0.35
    if rng.random() < 0.6:
        steps.append(Step(0, "lossy", (round(rng.uniform(0, loss), 3), round(rng.uniform(0, 0.2), 3),
                                       round(rng.uniform(0, 0.3), 3))))
    steps.append(Step(heal_at, "heal"))
    steps.sort(key=lambda s: s.at_ms)
    requests = rng.randint(4, 10) if not harsh else rng.randint(10, 30)
    clients = rng.randint(1, 3) if not harsh else rng.randint(2, 6)
    return FaultPlan(seed, n, clients=clients, requests_per_client=requests, byzantine=byzantine,
                     steps=tuple(steps), heal_at_ms=heal_at, think_ms=rng.choice((0, 2 * heal_at // requests)),
                     harsh=harsh)


def _attack(rng: random.Random, names: list[str]) -> str:
    """One behaviour of the catalogue, or (one time in five) two composed: "equivocate+delay"."""
    first = rng.choice(names)
    if rng.random() < 0.2:
        second = rng.choice([n for n in names if n not in (first, "mute")] or [first])
        if first != "mute":
            return f"{first}+{second}"
    return first


def apply_plan(world: PbftWorld, plan: FaultPlan) -> None:
    """Make the Byzantine replicas Byzantine (now, or when their "turn" step comes) and schedule
    every step of the plan. Checkers count a replica as faulty for the whole run either way."""
    turning = {step.args[0] for step in plan.steps if step.action == "turn"}
    for replica, name in plan.byzantine:
        world.byzantine[replica] = name
        if replica not in turning:
            turn_byzantine(world, replica, name)
    for step in plan.steps:
        world.sim.schedule(step.at_ms, lambda sim, step=step: perform(world, step))


def turn_byzantine(world: PbftWorld, replica: str, name: str) -> None:
    behaviour = make_behaviour(name, keys=world.keys[replica], config=world.config, rng=behaviour_rng(world))
    world.make_byzantine(replica, behaviour, name)


def perform(world: PbftWorld, step: Step) -> None:
    if step.action == "turn":
        turn_byzantine(world, *step.args)
    elif step.action == "heal":
        heal(world)
    elif not perform_network_or_crash(world, step):
        raise ValueError(f"unknown plan step {step.action!r}")


def perform_network_or_crash(world, step: Step) -> bool:
    """The plan steps every world shares (a world has ``sim`` and ``restart(party, wipe=)``).
    Returns False for a step it does not know."""
    sim, net = world.sim, world.sim.network
    if step.action == "crash":
        sim.crash(step.args[0])
    elif step.action in ("restart", "wipe"):
        world.restart(step.args[0], wipe=step.action == "wipe")
    elif step.action == "partition":
        net.partition(*step.args)
        sim.note(f"partition {step.args}")
    elif step.action == "slow":
        net.slow(*step.args)
        sim.note(f"slow {step.args[0]} by {step.args[1]}ms")
    elif step.action == "heal-partition":
        net.partition()
        sim.note("heal partition")
    elif step.action == "lossy":
        drop, dup, reorder = step.args
        net.set_lossy(drop_rate=drop, duplicate_rate=dup, reorder_rate=reorder)
        sim.note(f"lossy drop={drop} dup={dup} reorder={reorder}")
    else:
        return False
    return True


def heal(world: PbftWorld) -> None:
    """The end of the fault phase: a healthy network, every crashed replica back (disk kept)."""
    world.sim.network.heal()
    for r in world.replicas:
        if not world.sim.alive(r):
            world.restart(r)
    world.healed_at_ms = world.sim.now_ms
    world.sim.note("heal: network healthy, crashed replicas restarted")


@dataclass
class RunResult:
    plan: FaultPlan
    world: PbftWorld
    violations: list[Violation] = field(default_factory=list)

    def report(self, test_file: str = "tests/test_sim_pbft.py") -> str:
        lines = [f"seed={self.plan.seed} plan: {self.plan.describe()}",
                 f"reproduce: DTM_SEED={self.plan.seed} DTM_N={self.plan.n}{' DTM_HARSH=1' if self.plan.harsh else ''} "
                 f"python -m pytest {test_file} -k seed_replay -s",
                 *(f"  VIOLATION {v}" for v in self.violations),
                 "journal:", *(f"  {j}" for j in self.world.sim.journal[-40:])]
        return "\n".join(lines)


def run_plan(plan: FaultPlan, *, liveness_bound_ms: int = 20_000, network: NetworkConfig | None = None,
             verify_cache: bool = True) -> RunResult:
    world = build_world(plan.seed, plan.n, clients=plan.clients, network=network, verify_cache=verify_cache)
    apply_plan(world, plan)
    world.start_workload(plan.requests_per_client, plan.think_ms)
    sim = world.sim
    sim.run_until(lambda: sim.now_ms >= plan.heal_at_ms and world.healed_at_ms > 0, plan.heal_at_ms + 1)
    sim.run_until(world.workload_done, liveness_bound_ms)
    return RunResult(plan, world, world.violations(liveness_bound_ms=liveness_bound_ms))
