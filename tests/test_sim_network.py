"""The simulator's own machinery, tested with a trivial echo node (no PBFT needed)."""

from __future__ import annotations

import random

import pytest

from dtm_ray.errors import ConfigError, LocalError
from dtm_ray.node import Outbox, Ready
from dtm_ray.sim.network import Network, NetworkConfig
from dtm_ray.sim.simulation import Simulation
from dtm_ray.storage import MemoryStorage
from dtm_ray.transport import DEFAULT_RULES, TransportRules
from dtm_ray.wire import MAX_FIELD_BYTES


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


# -- the host's transport rules hold in the simulator too -----------------------------------------


def send_raw(sim: Simulation, src: str, dest: str, payloads: list[bytes]) -> None:
    """``src`` sends these payloads to ``dest`` in one step (one host call)."""
    def send(node):
        for payload in payloads:
            node._out.send(dest, payload, after_persist=False)
    sim.invoke(src, send)


def received(sim: Simulation, party: str) -> list[bytes]:
    return [o.output[1] for o in sim.outputs if o.party == party]


def test_a_message_over_the_limit_is_dropped_and_counted_one_at_the_limit_arrives():
    rules = TransportRules(max_message_bytes=1000)
    sim = Simulation(1, transport=rules)
    for p in ("a", "b"):
        sim.add_node(p, lambda storage, p=p: EchoNode(p, storage))
    send_raw(sim, "a", "b", [b"x" * 1000, b"y" * 1001])
    sim.run_for(50)
    assert received(sim, "b") == [b"x" * 1000]
    c = sim.network.counters
    assert c.oversized == 1 and c.oversized_by_link == {("a", "b"): 1001}
    assert c.messages == 2 and c.delivered == 1  # offered and counted, never routed


def test_a_long_batch_travels_in_calls_within_the_caps():
    sim = Simulation(1, transport=TransportRules(max_messages_per_call=3, max_bytes_per_call=1000,
                                                  max_message_bytes=1000))
    for p in ("a", "b"):
        sim.add_node(p, lambda storage, p=p: EchoNode(p, storage))
    send_raw(sim, "a", "b", [b"m%d" % i for i in range(7)] + [b"z" * 600, b"w" * 600])
    assert sim.run_until(lambda: len(received(sim, "b")) == 9, 100)
    # 3 messages, 3 messages, m6 + 600 B, then 600 B more would pass the 1000 B cap: a fourth call
    assert sim.network.counters.calls == 4


def test_a_sender_over_its_inbound_budget_is_refused_and_counted_others_are_not():
    sim = Simulation(1, transport=TransportRules(inbound_rate_per_s=1, inbound_burst=5))
    for p in ("a", "b", "c"):
        sim.add_node(p, lambda storage, p=p: EchoNode(p, storage))
    send_raw(sim, "a", "b", [b"a%d" % i for i in range(5)])
    send_raw(sim, "a", "b", [b"late"])  # a second call, over a's budget at b
    send_raw(sim, "c", "b", [b"from-c"])
    sim.run_for(50)
    assert sorted(received(sim, "b")) == sorted([b"a%d" % i for i in range(5)] + [b"from-c"])
    assert sim.network.counters.rate_limited == 1


def test_the_simulator_refuses_exactly_what_the_host_refuses():
    """The host (``actors/host.py``) and the simulated network decide with the same rules: a
    payload one byte over the limit leaves neither, one at the limit leaves both."""

    from actors import host as host_module
    from actors.toy import ToyCore

    limit = host_module.RULES.max_message_bytes
    assert limit == DEFAULT_RULES.max_message_bytes == MAX_FIELD_BYTES
    payloads = [b"x" * limit, b"y" * (limit + 1)]

    sent = []

    class Done:
        def future(self):
            import concurrent.futures

            done = concurrent.futures.Future()
            done.set_result(None)
            return done

    class Peer:
        def __init__(self):
            self.deliver = self

        def remote(self, sender, batch, token=b""):
            sent.extend(batch)
            return Done()

    storage = MemoryStorage()
    host = host_module.Host("a", "ns", ToyCore("a", storage), storage, tick_ms=10_000, start=False)
    host.peers.set("b", Peer())
    host._enqueue([("b", p) for p in payloads])
    host._flush()
    host_dropped = host.counters["dropped_oversized_out"]
    sim = echo_world(1, parties=("a", "b"))
    send_raw(sim, "a", "b", payloads)
    sim.run_for(50)
    assert [len(p) for p in received(sim, "b")] == [len(p) for p in sent] == [limit]
    assert sim.network.counters.oversized == host_dropped == 1


def test_a_request_too_big_for_the_transport_is_a_counted_drop_not_a_silent_success():
    """A PBFT run whose client request exceeds the limit: no replica ever gets it, and the
    network says so (without the rules it would simply be executed)."""
    from dtm_ray.pbft import kvapp
    from dtm_ray.sim.pbft_world import build_world

    world = build_world(3, 4, clients=1)
    world.sim.network.set_rules(TransportRules(max_message_bytes=4096))
    client = world.clients[0]
    world.sim.invoke(client, lambda core: core.submit(kvapp.put("k", "v" * 8000)))
    assert not world.sim.run_until(lambda: bool(world.answered()), 2_000)
    c = world.sim.network.counters
    assert c.oversized > 0
    assert {src for src, _ in c.oversized_by_link} == {client}
    assert all(size > 8000 for size in c.oversized_by_link.values())
    assert all(world.replica(r).status()["executed_seq"] == 0 for r in world.replicas)
