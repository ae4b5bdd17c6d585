"""The actor host's own rules, without Ray: persist before send, one call per destination per
turn, operator transformers, partitions, admission by channel, the in-flight window.
(``tests/test_ray_host.py`` checks the same on Ray.) The host's loop thread is not started: each
test drives ``turn()`` itself, so every step is deterministic."""

from __future__ import annotations

import concurrent.futures

from actors.channel import UNAUTHENTICATED, Channels
from actors.host import Host
from actors.toy import ToyCore
from dtm_ray.storage import MemoryStorage

KEYS = {"a": b"k" * 32, "c": b"q" * 32}  # b's pairwise keys with a and c


class FakePeer:
    """Records ``deliver.remote`` calls with the number of fsyncs done when each call left; a call
    completes when the test says so (``settle``), or at once with ``auto``."""

    def __init__(self, storage, auto=True):
        self.calls = []
        self.storage = storage
        self.deliver = self
        self.auto = auto
        self.pending = []

    def remote(self, sender, batch, token=b""):
        self.calls.append((sender, list(batch), self.storage.synced_writes))
        future = concurrent.futures.Future()
        if self.auto:
            future.set_result(None)
        else:
            self.pending.append(future)
        return _Ref(future)

    def settle(self, error=None):
        future = self.pending.pop(0)
        future.set_exception(error) if error is not None else future.set_result(None)


class _Ref:
    def __init__(self, future):
        self._future = future

    def future(self):
        return self._future


def make_host(storage, auto=True):
    host = Host("b", "ns", ToyCore("b", storage), storage, tick_ms=10_000, mac_keys=KEYS, start=False)
    peer = FakePeer(storage, auto)
    host.peers.set("a", peer)
    return host, peer


def token_from(sender):
    """The channel token ``sender`` attaches to its calls to b."""
    return Channels(sender, {"b": KEYS[sender]}).outgoing("b")


def run(body, auto=True):
    storage = MemoryStorage()
    host, peer = make_host(storage, auto)
    body(host, peer, storage)


def test_replies_leave_after_the_persist_in_one_call():
    def body(host, peer, storage):
        host.deliver("a", [b"ping:1", b"ping:2", b"ping:3"], token_from("a"))
        host.turn()
        assert peer.calls == [("b", [b"pong:1", b"pong:2", b"pong:3"], 1)]  # one call, after one fsync
        assert host.counters["fsyncs"] == 1 and host.counters["messages_out"] == 3

    run(body)


def test_a_transformer_rewrites_every_outgoing_message_and_bad_output_is_dropped():
    def body(host, peer, storage):
        host.set_transformer(lambda dest, payload: [(dest, payload), (dest, payload), (42, b"x")])
        host.deliver("a", [b"ping:1"], token_from("a"))
        host.turn()
        assert peer.calls[0][1] == [b"pong:1", b"pong:1"]

    run(body)


def test_a_raising_transformer_is_counted_not_fatal():
    def body(host, peer, storage):
        host.set_transformer(lambda dest, payload: 1 / 0)
        host.deliver("a", [b"ping:1"], token_from("a"))
        host.turn()
        assert peer.calls == [] and host.counters["transformer_errors"] == 1

    run(body)


def test_partition_drops_both_directions():
    def body(host, peer, storage):
        host.set_blocked(["a"])
        host.deliver("a", [b"ping:1"], token_from("a"))
        host.turn()
        assert host.core.count == 0 and host.counters["dropped_partition_in"] == 1
        host.core.send("a", 5)
        host.turn()
        assert peer.calls == [] and host.counters["dropped_partition_out"] == 1

    run(body)


def test_non_bytes_payloads_are_rejected():
    def body(host, peer, storage):
        host.deliver("a", ["ping:1", None, b"ping:2"], token_from("a"))
        host.turn()
        assert host.counters["rejected_non_bytes"] == 2 and host.core.count == 1

    run(body)


def test_one_call_is_bounded_and_a_flooding_sender_is_rate_limited():
    from actors import host as host_module

    def body(host, peer, storage):
        host.now_ms = lambda: 0  # frozen clock: no refill while the turn works through the flood
        host.deliver("a", [b"ping:1"] * (host_module.MAX_PAYLOADS_PER_CALL + 10), token_from("a"))
        host.turn()
        assert host.counters["dropped_oversized_call"] == 10
        assert host.counters["messages_in"] == host_module.MAX_PAYLOADS_PER_CALL
        for _ in range(host_module.INBOUND_BURST // host_module.MAX_PAYLOADS_PER_CALL + 2):
            host.deliver("a", [b"ping:1"] * host_module.MAX_PAYLOADS_PER_CALL, token_from("a"))
        host.turn()
        assert host.counters["rate_limited_in"] > 0

    run(body)


def test_a_flooder_claiming_a_correct_senders_name_does_not_slow_it():
    """A faulty party calls ``deliver("a", ...)`` without a's channel token: it spends the shared
    unauthenticated budget, and a's own calls (with its token) all get through."""
    from actors import host as host_module

    def body(host, peer, storage):
        host.now_ms = lambda: 0  # frozen clock: no refill while the turn works through the flood
        for _ in range(host_module.INBOUND_BURST // 100 + 10):  # calls of a's size, until none is left
            host.deliver("a", [b"pong:0"] * 100)  # the liar: no token
            host.deliver("a", [b"pong:0"] * 100, b"x" * 16)  # a forged one
        host.turn()
        assert host.counters["rate_limited_in"] > 0  # the liar was limited...
        before = host.counters["messages_in"]
        host.deliver("a", [b"ping:7"] * 100, token_from("a"))
        host.turn()
        assert host.counters["messages_in"] == before + 100  # ...and the real a was not
        assert peer.calls[-1][1] == [b"pong:7"] * 100

    run(body)


def test_at_most_max_inflight_calls_per_destination_and_the_rest_leave_together():
    from actors import host as host_module

    def body(host, peer, storage):
        for n in range(host_module.MAX_INFLIGHT + 3):
            host.core.send("a", n)
            host.turn()
        assert len(peer.calls) == host_module.MAX_INFLIGHT  # the window is full: the rest wait
        assert host.stats()["buffered"] == 3
        peer.settle()
        host.turn()  # the completion frees a slot: everything buffered leaves in one call
        assert len(peer.calls) == host_module.MAX_INFLIGHT + 1
        assert peer.calls[-1][1] == [b"ping:%d" % n for n in range(host_module.MAX_INFLIGHT, host_module.MAX_INFLIGHT + 3)]

    run(body, auto=False)


def test_a_failed_call_is_retried_once_on_a_fresh_handle():
    def body(host, peer, storage):
        fresh = FakePeer(storage)
        host.peers._lookup = lambda name, namespace: fresh if name == "dtm:a" else None
        host.core.send("a", 1)
        host.turn()
        peer.settle(RuntimeError("actor died"))
        host.turn()
        assert host.counters["calls_failed"] == 1 and host.counters["calls_retried"] == 1
        assert fresh.calls == [("b", [b"ping:1"], 0)]

    run(body, auto=False)


def test_calls_that_never_settle_get_a_fresh_handle_even_from_a_peer_that_keeps_calling_us():
    """Ray may never settle a call made through a stale handle; the peer, alive under a new
    handle, keeps calling us, so it never looks silent. Its window must not stay full forever."""
    from actors import host as host_module

    def body(host, peer, storage):
        clock = [0]
        host.now_ms = lambda: clock[0]
        fresh = FakePeer(storage)
        host.peers._lookup = lambda name, namespace: fresh if name == "dtm:a" else None
        for n in range(host_module.MAX_INFLIGHT + 1):
            host.core.send("a", n)
            host.turn()
        assert len(peer.calls) == host_module.MAX_INFLIGHT and not fresh.calls  # the window is full
        for _ in range(3):  # the peer keeps calling us; nothing of ours ever settles
            clock[0] += host_module.CALL_STALL_MS // 2
            host.deliver("a", [b"ping:x"], token_from("a"))
            host.turn()
        assert host.counters["messages_in"] == 3
        # the silence rule cannot see it (we heard from the peer; a full window sends nothing)
        assert host.counters["calls_stalled"] == 1 and host.counters["handles_refreshed"] == 0
        host.core.send("a", 99)
        host.turn()
        assert fresh.calls and fresh.calls[-1][1][-1] == b"ping:99"  # through the fresh handle
        assert b"ping:%d" % host_module.MAX_INFLIGHT in fresh.calls[0][1]  # what waited leaves too

    run(body, auto=False)


def test_commands_run_on_the_loop_thread_between_turns():
    import threading

    storage = MemoryStorage()
    host = Host("b", "ns", ToyCore("b", storage), storage, tick_ms=10_000)
    try:
        seen = host.call(lambda: threading.current_thread().name)
        assert seen == "host-b"
        host.set_blocked(["a"])
        assert host.stats()["blocked"] == ["a"]
    finally:
        host.stop()


def _burn_cpu(seconds: float) -> None:
    import time

    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_loop_threads_own_cpu_is_reported_apart_from_the_process():
    """``loop_cpu_s`` is what the loop thread (core, codec, host) spent; ``cpu_s`` is the whole
    process, Ray's threads included: the bench's split of where a replica's CPU goes."""
    storage = MemoryStorage()
    host = Host("b", "ns", ToyCore("b", storage), storage, tick_ms=10_000)
    try:
        start = host.stats()
        _burn_cpu(0.2)  # on this thread: the process's CPU, not the loop's
        idle = host.stats()
        assert idle["cpu_s"] - start["cpu_s"] >= 0.19
        assert idle["loop_cpu_s"] - start["loop_cpu_s"] < 0.1
        host.call(_burn_cpu, 0.2)  # on the loop thread
        busy = host.stats()
        assert busy["loop_cpu_s"] - idle["loop_cpu_s"] >= 0.19
        assert busy["loop_cpu_s"] <= busy["cpu_s"]
    finally:
        host.stop()


def test_malformed_calls_and_a_raising_core_are_counted_not_fatal():
    def body(host, peer, storage):
        host.deliver("a", "not a list")
        host.deliver(7, [b"ping:1"])
        host.turn()
        assert host.counters["rejected_malformed_call"] == 2

        def explode(sender, payload):
            raise RuntimeError("a core bug")

        host.core.receive = explode
        host.deliver("a", [b"ping:1", b"ping:2"], token_from("a"))
        host.turn()
        assert host.counters["core_errors"] == 2

    run(body)


def test_a_raising_output_handler_is_counted_and_the_turn_still_sends_what_the_core_said():
    def body(host, peer, storage):
        def explode(outputs):
            raise TypeError("a handler bug")

        host.on_outputs = explode
        host.deliver("a", [b"pong:1", b"ping:2"], token_from("a"))  # an output, and a reply to send
        host.turn()
        assert host.counters["output_errors"] == 1 and "handler bug" in host.last_error
        assert peer.calls == [("b", [b"pong:2"], 1)]  # left in this turn, after its fsync

    run(body)


def test_the_core_hears_a_keyed_senders_name_only_from_a_call_that_proves_it():
    """A faulty party may call ``deliver("a", ...)``: the core must not hold what it hands over
    against a (a replica replaces a primary whose own channel carries garbage)."""
    def body(host, peer, storage):
        heard = []
        host.on_outputs = lambda outputs: heard.extend((who, n) for _, who, n in outputs)
        host.deliver("a", [b"pong:1"], token_from("a"))
        host.deliver("a", [b"pong:2"])  # no token
        host.deliver("a", [b"pong:3"], token_from("c"))  # c's token, a's name
        host.deliver("lg0", [b"pong:4"])  # a party b shares no key with: its name as it says
        host.turn()
        assert heard == [("a", 1), (UNAUTHENTICATED, 2), (UNAUTHENTICATED, 3), ("lg0", 4)]

    run(body)
