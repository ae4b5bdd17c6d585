"""STATUS messages: a quiet cluster brings a lagging replica up to date (PBFT, section 5.2).

Seeded simulator runs (``dtm_ray.sim.pbft_world``); a failure prints the seed and the replicas'
positions. The negative control runs the same scenario with ``status_interval_ms=0`` (STATUS
off) and shows the lagging replica staying behind, i.e. the scenario does test STATUS.
"""

from __future__ import annotations

from dtm_ray.crypto import seal_mac
from dtm_ray.pbft.events import Rejected, StateTransferred
from dtm_ray.pbft.messages import Status
from dtm_ray.sim.pbft_world import PbftWorld, build_world, small_config

SEED = 7007
QUIET_MS = 6_000  # how long the healed cluster runs without a single client request


def positions(world: PbftWorld) -> dict[str, tuple[int, int, int]]:
    """replica -> (view, executed seq, stable checkpoint)."""
    return {r: (s["view"], s["executed_seq"], s["stable_checkpoint"]) for r, s in world.statuses().items()}


def lagging_replica_run(seed: int, status_interval_ms: int) -> tuple[PbftWorld, dict, dict]:
    """R3 is cut off while 3 clients send 10 requests each (checkpoints every 4 seqs, so the
    others move several checkpoints past it), then the network heals once every request is
    answered, and the cluster runs QUIET_MS with no client traffic at all."""
    config = small_config(4, status_interval_ms=status_interval_ms)
    world = build_world(seed, 4, clients=3, config=config)
    sim = world.sim
    sim.network.partition(["R0", "R1", "R2"], ["R3"])
    world.start_workload(requests_per_client=10)
    assert sim.run_until(world.workload_done, 30_000), f"seed={seed}: the workload did not finish"
    before = positions(world)
    sim.network.heal()
    answered = len(world.answered())
    sim.run_for(QUIET_MS)
    assert len(world.answered()) == answered and len(world.submitted) == answered, "client traffic after the heal"
    assert all(sim.node(c).outstanding == 0 for c in world.clients)
    return world, before, positions(world)


def test_an_idle_cluster_brings_a_lagging_replica_up_to_date():
    world, before, after = lagging_replica_run(SEED, status_interval_ms=1_000)
    context = f"seed={SEED} before the heal {before}, {QUIET_MS} ms after {after}"
    print(context)
    assert before["R3"][1] < before["R0"][1], context  # it really was behind
    executed = {r: p[1] for r, p in after.items()}
    assert len(set(executed.values())) == 1, f"R3 did not catch up: {context}"
    assert after["R3"] == after["R1"], context
    assert any(o.party == "R3" and isinstance(o.output, StateTransferred) for o in world.sim.outputs), context
    assert not world.safety_violations()


def test_without_status_the_lagging_replica_stays_behind():
    """Negative control: the same run with STATUS off."""
    _, before, after = lagging_replica_run(SEED, status_interval_ms=0)
    print(f"seed={SEED} STATUS off: before the heal {before}, after {after}")
    assert after["R3"][1] < after["R0"][1]


def test_one_byzantine_status_triggers_nothing():
    """R0 (f = 1) claims an absurd view, execution and checkpoint, again and again: fewer than
    f+1 replicas say so, so R1 neither fetches a state nor changes view; the same bytes from a
    client are refused (STATUS is for replicas only)."""
    world = build_world(SEED, 4, clients=1, config=small_config(4))
    sim = world.sim
    world.start_workload(requests_per_client=3)
    assert sim.run_until(world.workload_done, 10_000)
    huge = 2**63
    for _ in range(5):
        sim.inject("R0", "R1", seal_mac(world.keys["R0"], "R1", Status(huge, huge, huge)))
        sim.run_for(200)
    replica = world.replica("R1")
    assert (replica.view, replica.view_changing, replica.state_target) == (0, False, 0), replica.status()
    sim.inject("c0", "R1", seal_mac(world.keys["c0"], "R1", Status(huge, huge, huge)))
    sim.run_for(50)
    assert any(o.party == "R1" and isinstance(o.output, Rejected) and o.output.sender == "c0"
               for o in sim.outputs)
    # the cluster still works
    world.start_workload(requests_per_client=2)
    assert sim.run_until(world.workload_done, 10_000)
    assert not world.safety_violations()


def test_replicas_that_missed_a_view_change_join_it_in_a_quiet_cluster():
    """n = 7: R6 is cut off and R0 (the primary) crashes, so the others move to view 1; R0 comes
    back, the clients finish, the network heals, and nothing is sent by any client. STATUS
    brings both to the view and the seq of the others (with STATUS off, R0 stays in view 0)."""
    world = build_world(SEED, 7, clients=3, config=small_config(7))
    sim = world.sim
    sim.network.partition([f"R{i}" for i in range(6)], ["R6"])
    world.start_workload(requests_per_client=12)
    sim.run_for(150)
    sim.crash("R0")
    sim.run_for(1_500)
    sim.restart("R0")
    assert sim.run_until(world.workload_done, 30_000), f"seed={SEED}: the workload did not finish"
    before = positions(world)
    sim.network.heal()
    sim.run_for(QUIET_MS)
    after = positions(world)
    context = f"seed={SEED} before the heal {before}, {QUIET_MS} ms after {after}"
    print(context)
    assert before["R6"] != before["R1"] and before["R0"] != before["R1"], context
    assert len(set(after.values())) == 1, context
    assert not world.safety_violations()


def test_each_view_change_a_replica_starts_is_counted_with_the_rule_that_asked_for_it():
    """A crashed primary: the backups that asked for view 1 say why (its silence stalled what they
    wait for, or f+1 others asked first); a run without a fault reports no view change at all."""
    for seed in (SEED, SEED + 1, SEED + 2):
        world = build_world(seed, 4, clients=3, config=small_config(4))
        sim = world.sim
        world.start_workload(requests_per_client=12)
        sim.run_for(150)
        sim.crash("R0")
        assert sim.run_until(world.workload_done, 30_000), f"seed={seed}: the workload did not finish"
        causes = {r: s["view_change_causes"] for r, s in world.statuses().items() if r != "R0"}
        context = f"seed={seed} causes {causes}"
        print(context)
        assert all(set(c) <= {"stalled", "joined"} and sum(c.values()) >= 1 for c in causes.values()), context
        assert any("stalled" in c for c in causes.values()), context

        quiet = build_world(seed, 4, clients=3, config=small_config(4))
        quiet.start_workload(requests_per_client=12)
        assert quiet.sim.run_until(quiet.workload_done, 30_000), f"seed={seed}: the fault-free workload did not finish"
        assert all(s["view_change_causes"] == {} for s in quiet.statuses().values()), f"seed={seed}"
