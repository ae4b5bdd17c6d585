"""The actor host's own rules, without Ray: persist before send, one call per destination per
turn, operator transformers, partitions. (``tests/test_ray_host.py`` checks the same on Ray.)"""

from __future__ import annotations

import asyncio

from actors.host import Host
from actors.toy import ToyCore
from dtm_ray.storage import MemoryStorage


class FakePeer:
    """Records ``deliver.remote`` calls with the number of fsyncs done when each call left."""

    def __init__(self, storage):
        self.calls = []
        self.storage = storage
        self.deliver = self

    def remote(self, sender, batch):
        self.calls.append((sender, list(batch), self.storage.synced_writes))
        return asyncio.sleep(0)


def run(body):
    async def main():
        storage = MemoryStorage()
        host = Host("b", "ns", ToyCore("b", storage), storage, tick_ms=10_000)
        peer = host._handles["a"] = FakePeer(storage)
        try:
            body(host, peer, storage)
            await asyncio.sleep(0)
        finally:
            host._loop_task.cancel()

    asyncio.run(main())


def test_replies_leave_after_the_persist_in_one_call():
    def body(host, peer, storage):
        host.deliver("a", [b"ping:1", b"ping:2", b"ping:3"])
        host.turn()
        assert peer.calls == [("b", [b"pong:1", b"pong:2", b"pong:3"], 1)]  # one call, after one fsync
        assert host.counters["fsyncs"] == 1 and host.counters["messages_out"] == 3

    run(body)


def test_a_transformer_rewrites_every_outgoing_message_and_bad_output_is_dropped():
    def body(host, peer, storage):
        host.set_transformer(lambda dest, payload: [(dest, payload), (dest, payload), (42, b"x")])
        host.deliver("a", [b"ping:1"])
        host.turn()
        assert peer.calls[0][1] == [b"pong:1", b"pong:1"]

    run(body)


def test_a_raising_transformer_is_counted_not_fatal():
    def body(host, peer, storage):
        host.set_transformer(lambda dest, payload: 1 / 0)
        host.deliver("a", [b"ping:1"])
        host.turn()
        assert peer.calls == [] and host.counters["transformer_errors"] == 1

    run(body)


def test_partition_drops_both_directions():
    def body(host, peer, storage):
        host.set_blocked(["a"])
        host.deliver("a", [b"ping:1"])
        host.turn()
        assert host.core.count == 0 and host.counters["dropped_partition_in"] == 1
        host.core.send("a", 5)
        host.turn()
        assert peer.calls == [] and host.counters["dropped_partition_out"] == 1

    run(body)


def test_non_bytes_payloads_are_rejected():
    def body(host, peer, storage):
        host.deliver("a", ["ping:1", None, b"ping:2"])
        host.turn()
        assert host.counters["rejected_non_bytes"] == 2 and host.core.count == 1

    run(body)


def test_one_call_is_bounded_and_a_flooding_sender_is_rate_limited():
    from actors import host as host_module

    def body(host, peer, storage):
        host.deliver("a", [b"ping:1"] * (host_module.MAX_PAYLOADS_PER_CALL + 10))
        assert host.counters["dropped_oversized_call"] == 10
        assert host.counters["messages_in"] == host_module.MAX_PAYLOADS_PER_CALL
        for _ in range(host_module.INBOUND_BURST // host_module.MAX_PAYLOADS_PER_CALL + 2):
            host.deliver("a", [b"ping:1"] * host_module.MAX_PAYLOADS_PER_CALL)
        assert host.counters["rate_limited_in"] > 0
        before = host.counters["messages_in"]
        host.deliver("c", [b"ping:2"])  # another sender is not starved by the flooder
        assert host.counters["messages_in"] == before + 1

    run(body)


def test_malformed_calls_and_a_raising_core_are_counted_not_fatal():
    def body(host, peer, storage):
        host.deliver("a", "not a list")
        host.deliver(7, [b"ping:1"])
        assert host.counters["rejected_malformed_call"] == 2

        def explode(sender, payload):
            raise RuntimeError("a core bug")

        host.core.receive = explode
        host.deliver("a", [b"ping:1", b"ping:2"])
        assert host.counters["core_errors"] == 2

    run(body)
