"""The actor host on real Ray, with a toy core (no protocol): persist-then-send, one call per
destination per flush, crash recovery from RocksDB, wipe, partitions, operator transformers."""

from __future__ import annotations

import secrets

import pytest

from actors.loadgen import wait_until as poll

from dtm_ray.config import ClusterConfig
from dtm_ray.crypto import generate_keys

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def wait_until(predicate, timeout_s=20.0, what="condition"):
    return poll(predicate, timeout_s, what)


@pytest.fixture
def toys(ray_session, tmp_path):
    from actors import launch
    from actors.chaos import Chaos

    namespace = "toy-" + secrets.token_hex(3)
    keys = generate_keys(["a", "b"], seed=1)
    cfg = ClusterConfig(tick_ms=5).to_dict()
    specs = {p: {"party": p, "role": "toy", "namespace": namespace, "config": cfg,
                 "keys": keys[p].to_dict(), "path": str(tmp_path / p), "epoch": 0} for p in ("a", "b")}
    handles = {p: launch.launch(s) for p, s in specs.items()}
    launch.wait_alive(list(handles.values()))
    chaos = Chaos(specs, handles, [], spread=False)  # driven in-process: same code as the actor
    yield ray_session, handles, chaos
    for h in chaos.handles.values():
        launch.kill(h, restart=False)


def host(ray, handle):
    return ray.get(handle.status.remote())["host"]


def core(ray, handle):
    return ray.get(handle.status.remote())


def test_pings_are_answered_after_persisting_and_coalesced(toys):
    ray, h, _ = toys
    ray.get(h["a"].toy_send.remote("b", 500))
    wait_until(lambda: ray.get(h["a"].toy_pongs.remote()) == 500, what="500 pongs")
    a, b = host(ray, h["a"]), host(ray, h["b"])
    assert a["messages_out"] == 500 and b["messages_out"] == 500
    assert a["calls_out"] <= 10, a  # one call per destination per flush, not one per message
    assert b["fsyncs"] <= b["calls_in"] * 2, b  # group commit: one synced batch per turn
    assert core(ray, h["b"])["count"] == 500


def test_crash_restart_recovers_from_disk_and_wipe_forgets(toys):
    ray, h, chaos = toys
    ray.get(h["a"].toy_send.remote("b", 20))
    wait_until(lambda: ray.get(h["a"].toy_pongs.remote()) == 20, what="20 pongs")
    chaos.crash("b")  # Ray restarts the same actor; __init__ reopens its RocksDB
    assert core(ray, h["b"])["count"] == 20
    assert host(ray, h["b"]).get("messages_in", 0) == 0  # it is a new process
    chaos.kill("b")
    chaos.restart("b")
    assert core(ray, chaos.handles["b"])["count"] == 20
    chaos.wipe("b")
    assert core(ray, chaos.handles["b"])["count"] == 0
    chaos.crash("b")  # a crash after a wipe must not wipe again
    ray.get(h["a"].toy_send.remote("b", 3))
    wait_until(lambda: core(ray, chaos.handles["b"])["count"] == 3, what="count 3 after wipe")
    chaos.crash("b")
    assert core(ray, chaos.handles["b"])["count"] == 3


def test_partition_blocks_both_ways_until_healed(toys):
    ray, h, chaos = toys
    chaos.partition(["a"], ["b"])
    ray.get(h["a"].toy_send.remote("b", 5))
    wait_until(lambda: host(ray, h["a"]).get("dropped_partition_out") == 5, what="drops")
    assert core(ray, h["b"])["count"] == 0
    chaos.heal_network()
    ray.get(h["a"].toy_send.remote("b", 5))
    wait_until(lambda: ray.get(h["a"].toy_pongs.remote()) == 5, what="pongs after heal")


def test_operator_callable_rewrites_outgoing_messages(toys):
    import cloudpickle

    ray, h, chaos = toys

    def triple(dest, payload):  # an attack written in a shell: send everything three times
        return [(dest, payload)] * 3

    chaos.byzantine("a", cloudpickle.dumps(triple))
    ray.get(h["a"].toy_send.remote("b", 4))
    wait_until(lambda: core(ray, h["b"])["count"] == 12, what="12 pings")
    assert ray.get(h["a"].status.remote())["byzantine"] == "custom"
    chaos.heal("a")
    ray.get(h["a"].toy_send.remote("b", 1))
    wait_until(lambda: core(ray, h["b"])["count"] == 13, what="13 pings")


def test_the_fault_plan_survives_a_restart_of_the_chaos_actor(toys):
    """Ray re-runs the chaos actor's constructor when it restarts: it reads its plan back from the
    data directory instead of forgetting (and so silently healing) the faults it injected."""
    import cloudpickle

    from actors.chaos import Chaos

    ray, h, chaos = toys

    def double(dest, payload):
        return [(dest, payload)] * 2

    chaos.byzantine("a", cloudpickle.dumps(double))
    chaos.partition(["b"], [])
    chaos.heal_network()
    chaos.kill("b")
    plan = chaos.plan()
    assert plan["dead"] == ["b"] and plan["byzantine"] == {"a": "custom"}

    reborn = Chaos(chaos.specs, None, [], spread=False)  # what a Ray restart does: no handles
    assert reborn.plan() == plan
    reborn.restart("b")
    chaos.handles["b"] = reborn.handles["b"]
    reborn.crash("a")  # a crash restarts the process; it must come back Byzantine
    assert ray.get(reborn.handle("a").status.remote())["byzantine"] == "custom"
    ray.get(reborn.handle("a").toy_send.remote("b", 3))
    wait_until(lambda: core(ray, reborn.handle("b"))["count"] == 6, what="6 pings (doubled)")
