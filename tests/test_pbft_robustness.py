"""Nothing a peer sends crashes a replica or client; restarts never make a replica contradict itself."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from dtm_ray.crypto import Envelope, seal_signed
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.events import Rejected
from dtm_ray.pbft.messages import NULL_DIGEST, Commit, PrePrepare, Prepare, ViewChange, seal
from dtm_ray.wire import decode, encode

from tests.pbft_harness import Harness


def capture_traffic(seed: int = 5) -> tuple[Harness, list[tuple[str, str, bytes]]]:
    """A cluster after some normal traffic, and every message it carried (incl. a view change)."""
    h = Harness(4, seed=seed, checkpoint_interval=4, watermark_window=8)
    seen: list[tuple[str, str, bytes]] = []
    h.drop = lambda src, dst, p: seen.append((src, dst, p)) or False
    for _ in range(5):
        h.submit(kvapp.incr("x"))
    h.run_until(lambda: len(h.results()) == 5)
    for r in ("R1", "R2"):
        h.replica(r)._start_view_change(1, "operator")
    h.deliver_all()
    h.drop = lambda src, dst, p: False
    return h, seen


H, TRAFFIC = capture_traffic()


def mutate(rng: random.Random, payload: bytes) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return payload[: rng.randrange(len(payload))]
    if choice == 1:
        b = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if choice == 2:
        return payload + bytes(rng.randrange(1, 8))
    if choice == 3:  # the same body, claimed by another replica
        env = decode(payload, Envelope)
        return encode(Envelope(rng.choice(H.replica_ids), env.body, env.auth))
    if choice == 4:  # re-signed by a (Byzantine) replica that is not the sender
        env = decode(payload, Envelope)
        return seal_signed(H.keys[rng.choice(H.replica_ids)], decode(env.body))
    return rng.randbytes(rng.randrange(0, 200))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(0, 2**32), st.integers(0, len(TRAFFIC) - 1))
def test_mutated_messages_never_crash_a_replica(seed, index):
    rng = random.Random(seed)
    src, dst, payload = TRAFFIC[index]
    target = H.nodes[dst] if dst in H.replica_ids else H.nodes["R3"]
    executed, results = target.executed, len(H.results())
    target.receive(src, mutate(rng, payload))
    target.tick(H.now)
    target.take_ready()
    H.clients["c0"].receive(src, mutate(rng, payload))
    H.clients["c0"].take_ready()
    # No crash, and nothing a forged or replayed message could make happen: no execution, no result.
    assert target.executed == executed and len(H.results()) == results
    assert target.status()["id"] == target.id


def test_a_flood_of_garbage_is_counted_and_the_cluster_still_works():
    h = Harness(4)
    rng = random.Random(9)
    for i in range(300):
        h.replica("R1").receive(f"flooder-{i % 7}", rng.randbytes(rng.randrange(300)))
    h.deliver_all()
    assert len(h.events("R1", Rejected)) == 300
    assert sum(h.replica("R1").status()["rejected"].values()) == 300
    h.submit(kvapp.incr("x"))
    h.run_until(lambda: len(h.results()) == 1, max_ms=2_000)


def test_a_restarted_primary_never_equivocates_on_a_slot_it_proposed():
    h = Harness(4)
    h.drop = lambda src, dst, p: src == "R0"  # R0 proposes and persists seq 1, nothing arrives
    h.submit(kvapp.incr("x"))
    h.advance(10)
    assert h.storages["R0"].items(b"r/pp/") and h.replica("R1").executed == 0
    h.drop = lambda src, dst, p: False
    h.restart("R0")
    r0 = h.replica("R0")
    assert r0.next_seq == 2  # it will not reuse seq 1 for another batch
    assert r0.safety.sign_preprepare(PrePrepare(0, 1, b"x" * 32, (), ())) is None
    h.run_until(lambda: len(h.results()) == 1, max_ms=5_000)  # retransmission completes seq 1
    h.assert_agreement()
    assert h.replica("R1").view == 0


def test_a_replica_restarted_during_a_view_change_asks_for_it_again_and_never_votes_below():
    h = Harness(4)
    h.submit(kvapp.incr("x"))
    h.run_until(lambda: len(h.results()) == 1)
    h.replica("R2")._start_view_change(1, "operator")
    h.deliver_all()
    h.restart("R2")
    r2 = h.replica("R2")
    assert r2.safety.floor == 1 and r2.view == 0
    assert r2.safety.sign_prepare(0, 2, b"d" * 32) is None
    h.advance(10)
    assert r2.view_changing and r2.vc_target == 1


def test_votes_leave_only_after_the_writes_that_make_them_durable():
    h = Harness(4)
    r1 = h.replica("R1")
    r1.receive("R0", seal(h.keys["R0"], PrePrepare(0, 1, NULL_DIGEST, (), ())))
    ready = r1.take_ready()
    votes = [p for _, p in ready.send_after_persist if isinstance(decode(decode(p, Envelope).body), Prepare)]
    assert len(votes) == 3  # to each peer
    assert any(k.startswith(b"s/vote/") for k, _ in ready.writes)
    assert any(k.startswith(b"r/pp/") for k, _ in ready.writes)
    assert not any(isinstance(decode(decode(p, Envelope).body), (Prepare, Commit, ViewChange))
                   for _, p in ready.send_now)
