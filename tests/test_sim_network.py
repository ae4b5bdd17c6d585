"""The simulator's own machinery, tested with a trivial echo node (no PBFT needed)."""

from __future__ import annotations

import random

import pytest

from dtm_ray.errors import ConfigError, LocalError
from dtm_ray.node import Outbox, Ready
from dtm_ray.sim.network import Network, NetworkConfig
from dtm_ray.sim.simulation import Simulation
from dtm_ray.storage import MemoryStorage


class EchoNode:
    """Answers b"ping:<n>" with b"pong:<n>" after persisting how many pings it has seen."""

    def __init__(self, node_id: str, storage: MemoryStorage) -> None:
        self.node_id = node_id
        self.pings = int(storage.get(b"pings") or b"0")
        self.ticks = 0
        self._out = Outbox()

    def receive(self, sender: str, payload: bytes) -> None:
        kind, _, n = payload.partition(b":")
        if kind == b"ping":
            self.pings += 1
            self._out.write(b"pings", str(self.pings).encode())
            self._out.send(sender, b"pong:" + n)
        self._out.output((sender, payload))

    def tick(self, now_ms: int) -> None:
        self.ticks += 1

    def take_ready(self) -> Ready:
        return self._out.take()

    def ping(self, dest: str, n: int) -> None:
        self._out.send(dest, b"ping:%d" % n, after_persist=False)


def echo_world(seed: int, parties=("a", "b", "c"), **net) -> Simulation:
    sim = Simulation(seed, network=NetworkConfig(**net) if net else None)
    for p in parties:
        sim.add_node(p, lambda storage, p=p: EchoNode(p, storage))
    return sim


def pongs(sim: Simulation, party: str) -> list[bytes]:
    return [o.output[1] for o in sim.outputs if o.party == party and o.output[1].startswith(b"pong")]


def ping_all(sim: Simulation, src: str, dests, count: int) -> None:
    for n in range(count):
        for d in dests:
            sim.invoke(src, lambda node, d=d, n=n: node.ping(d, n))


def test_same_seed_same_history_and_different_seed_different_timing():
    def history(seed):
        sim = echo_world(seed, reorder_rate=0.3)
        ping_all(sim, "a", ["b", "c"], 20)
        sim.run_for(200)
        return [(o.time_ms, o.party, o.output) for o in sim.outputs]

    assert history(7) == history(7)
    assert history(7) != history(8)


def test_every_ping_answered_on_a_healthy_network():
    sim = echo_world(1)
    ping_all(sim, "a", ["b", "c"], 10)
    assert sim.run_until(lambda: len(pongs(sim, "a")) == 20, max_ms=100)
    assert sim.now_ms <= 2 * NetworkConfig().max_delay_ms


def test_run_until_stops_at_deadline_when_predicate_never_holds():
    sim = echo_world(1)
    assert sim.run_until(lambda: False, max_ms=50) is False
    assert sim.now_ms == 50
    assert sim.node("b").ticks >= 50 // sim.default_tick_ms - 1


def test_reordering_happens_and_duplicates_are_counted():
    sim = echo_world(3, duplicate_rate=0.5, reorder_rate=0.5)
    ping_all(sim, "a", ["b"], 50)
    sim.run_for(500)
    got = [int(p.split(b":")[1]) for o in sim.outputs if o.party == "b" for p in [o.output[1]]]
    assert len(got) > 50  # some duplicated
    assert got != sorted(got)  # some overtaken
    c = sim.network.counters
    assert c.duplicated >= len(got) - 50  # pongs are duplicated too
    assert c.delivered == c.messages + c.duplicated


def test_drop_rate_one_loses_everything():
    sim = echo_world(1, drop_rate=1.0)
    ping_all(sim, "a", ["b", "c"], 5)
    sim.run_for(100)
    assert pongs(sim, "a") == []
    assert sim.network.counters.dropped == 10


def test_partition_blocks_across_groups_and_heal_restores():
    sim = echo_world(2, parties=("a", "b", "c", "client"))
    sim.network.partition(["a", "b"], ["c"])
    ping_all(sim, "a", ["b", "c"], 1)
    ping_all(sim, "client", ["c"], 1)  # unlisted parties are unaffected
    sim.run_for(50)
    assert pongs(sim, "a") == [b"pong:0"]  # from b only
    assert pongs(sim, "client") == [b"pong:0"]
    sim.network.heal()
    ping_all(sim, "a", ["c"], 1)
    sim.run_for(50)
    assert len(pongs(sim, "a")) == 2


def test_directed_cut():
    sim = echo_world(2)
    sim.network.cut("a", "b", both_ways=False)
    ping_all(sim, "b", ["a"], 1)  # b->a works, the pong a->b is cut
    sim.run_for(50)
    assert [o.output[1] for o in sim.outputs if o.party == "a"] == [b"ping:0"]
    assert pongs(sim, "b") == []
    assert sim.network.counters.blocked == 1
    sim.network.restore("a", "b")
    ping_all(sim, "b", ["a"], 1)
    sim.run_for(50)
    assert pongs(sim, "b") == [b"pong:0"]


def test_crash_loses_messages_restart_keeps_or_wipes_the_disk():
    sim = echo_world(4)
    ping_all(sim, "a", ["b"], 3)
    sim.run_for(50)
    assert sim.node("b").pings == 3
    sim.crash("b")
    assert not sim.alive("b")
    with pytest.raises(LocalError):
        sim.node("b")
    ping_all(sim, "a", ["b"], 1)
    sim.run_for(50)
    assert sim.parties["b"].lost_while_down == 1
    sim.restart("b")
    assert sim.node("b").pings == 3  # rebuilt from its kept disk
    sim.restart("b", wipe=True)
    assert sim.node("b").pings == 0
    assert sim.parties["b"].incarnation == 2
    assert any("disk wiped" in line for line in sim.journal)


def test_ticks_of_a_crashed_life_do_not_reach_the_new_one():
    sim = echo_world(5)
    sim.run_for(100)
    sim.crash("c")
    sim.restart("c")
    before = sim.counters.ticks
    sim.run_for(100)
    per_node = (sim.counters.ticks - before) / 3
    assert per_node <= 100 / sim.default_tick_ms + 1  # one tick chain per node, not two


def test_behaviour_transforms_outgoing_messages():
    sim = echo_world(6)
    sim.set_behaviour("b", lambda dest, payload: [(dest, payload), ("c", payload)], "copy-to-c")
    ping_all(sim, "a", ["b"], 2)
    sim.run_for(50)
    assert len(pongs(sim, "a")) == 2
    assert len(pongs(sim, "c")) == 2
    sim.set_behaviour("b", lambda dest, payload: [], "mute")
    ping_all(sim, "a", ["b"], 1)
    sim.run_for(50)
    assert len(pongs(sim, "a")) == 2


def test_scheduled_calls_run_at_their_time_in_order():
    sim = echo_world(1)
    seen = []
    sim.schedule(30, lambda s: seen.append(("x", s.now_ms)))
    sim.schedule(10, lambda s: seen.append(("y", s.now_ms)))
    sim.run_for(40)
    assert seen == [("y", 10), ("x", 30)]


def test_network_config_is_validated():
    with pytest.raises(ConfigError):
        NetworkConfig(drop_rate=1.5)
    with pytest.raises(ConfigError):
        NetworkConfig(min_delay_ms=5, max_delay_ms=1)
    with pytest.raises(ConfigError):
        Network(random.Random(0)).partition(["a"], ["a", "b"])


def test_a_slow_party_answers_late_until_healed():
    sim = echo_world(9)
    sim.network.slow("b", 100)
    ping_all(sim, "a", ["b"], 1)
    assert not sim.run_until(lambda: pongs(sim, "a"), max_ms=100)
    assert sim.run_until(lambda: pongs(sim, "a"), max_ms=20)
    sim.network.heal()
    ping_all(sim, "a", ["b"], 1)
    assert sim.run_until(lambda: len(pongs(sim, "a")) == 2, max_ms=2 * NetworkConfig().max_delay_ms)
