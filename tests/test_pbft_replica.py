"""Whole-cluster tests of the PBFT core with the tiny synchronous harness (tests/pbft_harness.py).

Each test drives replicas and clients through receive/tick/take_ready only, as a host would.
The seed (keys) is fixed per test and printed by the assertion messages where it matters.
"""

from __future__ import annotations

import pytest

from dtm_ray.crypto import Envelope
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.app import Verdict
from dtm_ray.pbft.events import (CheckpointStable, Evidence, Executed, Rejected, StateTransferred,
                                 ViewChanged)
from dtm_ray.pbft.messages import NewView, PrePrepare, batch_digest, seal
from dtm_ray.wire import decode, encode

from tests.pbft_harness import Harness


def values(h: Harness, client: str = "c0") -> dict[int, object]:
    return {rid: kvapp.result(res).value for rid, res in h.results(client).items()}


def run_increments(h: Harness, count: int, client: str = "c0", max_ms: int = 20_000) -> None:
    start = len(h.results(client))
    for _ in range(count):
        h.submit(kvapp.incr("x"), client)
    h.run_until(lambda: len(h.results(client)) == start + count, max_ms=max_ms)


def body(payload: bytes):
    return decode(decode(payload, Envelope).body)


# -- normal case -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 7])
def test_normal_case_executes_every_request_once_in_order(n):
    h = Harness(n, clients=("c0", "c1"), batch_wait_ms=5)
    for _ in range(6):
        h.submit(kvapp.incr("x"), "c0")
        h.submit(kvapp.incr("y", 10), "c1")
    h.run_until(lambda: len(h.results("c0")) == 6 and len(h.results("c1")) == 6, max_ms=3_000)
    assert sorted(values(h, "c0").values()) == [1, 2, 3, 4, 5, 6]
    assert sorted(values(h, "c1").values()) == [10, 20, 30, 40, 50, 60]
    h.assert_agreement()
    for r in h.replica_ids:
        assert h.apps[r].data == {"x": 6, "y": 60}
        executed = [k for e in h.events(r, Executed) for k in e.requests]
        assert len(executed) == len(set(executed)) == 12
        assert h.replica(r).status()["view"] == 0


def test_the_primary_batches_requests_of_many_clients_into_one_slot():
    clients = tuple(f"c{i}" for i in range(20))
    h = Harness(4, clients=clients, batch_size=50, batch_wait_ms=10)
    for c in clients:
        h.submit(kvapp.incr("x"), c)
    h.run_until(lambda: all(len(h.results(c)) == 1 for c in clients), max_ms=1_000)
    executed = h.events("R1", Executed)
    assert len(executed) == 1 and len(executed[0].requests) == 20


def test_hmac_authenticators_work_end_to_end():
    h = Harness(4, auth_scheme="hmac")
    run_increments(h, 5, max_ms=2_000)
    assert sorted(values(h).values()) == [1, 2, 3, 4, 5]


def test_status_is_plain_json():
    import json

    h = Harness(4)
    run_increments(h, 2)
    status = h.replica("R2").status()
    assert json.loads(json.dumps(status)) == status
    assert status["executed_seq"] >= 1 and status["primary"] == "R0"


# -- requests: replay, forgery, garbage --------------------------------------------------------


def test_a_replayed_request_gets_the_cached_reply_and_is_not_executed_again():
    h = Harness(4)
    sealed = []
    h.byzantine["c0"] = lambda dest, payload: sealed.append(payload) or [(dest, payload)]
    run_increments(h, 1)
    executed_before = {r: len(h.events(r, Executed)) for r in h.replica_ids}
    replies_before = len([1 for src, dst, _ in h.queue if dst == "c0"])
    for r in h.replica_ids:
        h.nodes[r].receive("c0", sealed[0])
    h.flush()
    replies = [(src, p) for src, dst, p in h.queue if dst == "c0"]
    assert len(replies) - replies_before == 4  # every replica resent its cached reply
    h.deliver_all()
    for r in h.replica_ids:
        assert len(h.events(r, Executed)) == executed_before[r]
        assert h.apps[r].data == {"x": 1}


def test_garbage_and_forged_requests_are_rejected_and_counted():
    h = Harness(4)
    r1 = h.replica("R1")
    r1.receive("mallory", b"\x00garbage")
    body_bytes = encode(kvapp.KvOp("incr", "x", 1))
    from dtm_ray.pbft.messages import Request

    forged = encode(Envelope("c0", encode(Request("c0", 1, body_bytes)), b"\x01" * 64))
    r1.receive("mallory", forged)
    h.deliver_all()
    rejected = h.events("R1", Rejected)
    assert len(rejected) == 2 and r1.status()["rejected"] == {"mallory": 2}
    assert r1.pending == {}


# -- checkpoints and garbage collection --------------------------------------------------------


def test_checkpoints_garbage_collect_memory_and_storage():
    h = Harness(4, checkpoint_interval=4, watermark_window=8, batch_size=1, batch_wait_ms=0)
    run_increments(h, 60)
    for r in h.replica_ids:
        status = h.replica(r).status()
        assert status["stable_checkpoint"] >= 56
        assert status["log_entries"] <= 8
        keys = [k for k, _ in h.storages[r].items(b"")]
        assert sum(k.startswith(b"r/pp/") for k in keys) <= 8
        assert sum(k.startswith(b"s/vote/") for k in keys) <= 8
        assert len(keys) <= 3 * 8 + 8 + 3
    stable = h.events("R0", CheckpointStable)
    assert [e.seq for e in stable][:3] == [4, 8, 12]
    assert max(e.log_entries for e in stable) <= 8


# -- view change -------------------------------------------------------------------------------


def test_a_silent_primary_is_replaced():
    h = Harness(4)
    run_increments(h, 1)
    h.crash("R0")
    run_increments(h, 3, max_ms=5_000)
    assert sorted(values(h).values()) == [1, 2, 3, 4]
    for r in ("R1", "R2", "R3"):
        assert h.replica(r).view == 1
        assert [e.view for e in h.events(r, ViewChanged)] == [1]
    assert h.clients["c0"].view == 1
    h.assert_agreement()


def test_timeouts_double_while_views_fail():
    h = Harness(7, view_change_timeout_ms=100)
    run_increments(h, 1)
    h.crash("R0")
    h.crash("R1")  # the primaries of views 0 and 1: view 1 fails too, view 2 works
    h.submit(kvapp.incr("x"))
    entered: dict[int, int] = {}
    while len(h.results()) < 2:
        h.advance(5)
        entered.setdefault(h.replica("R3").vc_target, h.now)
        assert h.now < 5_000, f"no progress; status {h.replica('R3').status()}"
    assert h.replica("R3").view == 2
    assert entered[2] - entered[1] >= 2 * 100  # the second view change waited twice as long
    h.assert_agreement()


def test_a_replica_that_times_out_alone_waits_for_the_others():
    h = Harness(4, view_change_timeout_ms=100)
    run_increments(h, 1)
    h.crash("R0")
    h.crash("R1")  # only R2 and R3 are left: no view can form, and nobody races ahead
    h.submit(kvapp.incr("x"))
    h.advance(2_000)
    for r in ("R2", "R3"):
        assert h.replica(r).view_changing and h.replica(r).vc_target == 1
    h.restart("R1")  # it joins the view change two others ask for, and leads view 1
    h.run_until(lambda: len(h.results()) == 2, max_ms=5_000)
    assert h.replica("R1").view == 1
    h.assert_agreement()


def test_committed_batches_survive_a_view_change():
    """The primary dies after its batch committed at some backups but before others executed:
    the NEW-VIEW re-proposes it and nobody loses it."""
    h = Harness(4)
    run_increments(h, 1)
    # R3 misses every COMMIT of the next slot; then the primary dies
    h.drop = lambda src, dst, p: dst == "R3" and type(body(p)).__name__ == "Commit"
    h.submit(kvapp.incr("x"))
    h.advance(10)
    assert h.replica("R3").executed == 1 and h.replica("R1").executed == 2
    h.drop = lambda src, dst, p: False
    h.crash("R0")
    run_increments(h, 1, max_ms=5_000)
    for r in ("R1", "R2", "R3"):
        assert h.apps[r].data == {"x": 3}
    h.assert_agreement()


def test_a_replica_joins_a_view_change_that_f_plus_1_others_ask_for():
    h = Harness(7)
    run_increments(h, 1)
    for r in ("R1", "R2", "R3"):
        h.replica(r)._start_view_change(1, "operator")
    h.deliver_all()
    for r in h.replica_ids:
        assert h.replica(r).view == 1, r


# -- evidence ----------------------------------------------------------------------------------


def test_equivocating_preprepares_become_evidence_and_a_view_change():
    h = Harness(4)
    r0_keys = h.keys["R0"]

    def equivocate(dest, payload):
        msg = body(payload)
        if isinstance(msg, PrePrepare) and dest == "R1":
            other = PrePrepare(msg.view, msg.seq, batch_digest((), ()), (), ())
            return [(dest, payload), (dest, seal(r0_keys, other))]
        return [(dest, payload)]

    h.byzantine["R0"] = equivocate
    h.submit(kvapp.incr("x"))
    h.advance(10)
    evidence = h.events("R1", Evidence)
    assert [(e.accused, e.kind) for e in evidence] == [("R0", "equivocation")]
    first, second = (body(p) for p in evidence[0].proof)
    assert (first.view, first.seq) == (second.view, second.seq) and first.digest != second.digest
    for proof in evidence[0].proof:  # two signed headers: small, and each verifiable by anybody
        env = decode(proof, Envelope)
        assert len(proof) < 300 and env.sender == "R0" and h.keys["R3"].verify("R0", env.body, env.auth)
    assert h.replica("R1").status()["evidence"] == {"R0": 1}
    assert h.replica("R1").view_changing
    h.run_until(lambda: len(h.results()) == 1, max_ms=5_000)  # the request still executes
    h.assert_agreement()


def test_a_primary_that_proposes_an_invalid_batch_is_accused():
    h = Harness(4)
    for r in h.replica_ids:
        h.apps[r].pending_proposals.append(b"decide-1")
    for r in ("R1", "R2", "R3"):
        h.apps[r].verdicts[b"decide-1"] = Verdict.REJECT
    h.advance(10)
    for r in ("R1", "R2", "R3"):
        assert [(e.accused, e.kind) for e in h.events(r, Evidence)][:1] == [("R0", "invalid-batch")]
        assert h.replica(r).vc_target >= 1


def test_a_proposal_the_backups_wait_for_is_held_then_executed():
    h = Harness(4)
    for r in h.replica_ids:
        h.apps[r].pending_proposals.append(b"decide-1")
        if r != "R0":
            h.apps[r].verdicts[b"decide-1"] = Verdict.WAIT
    h.advance(50)
    assert all(h.apps[r].proposals_executed == [] for r in h.replica_ids)
    for r in h.replica_ids:
        h.apps[r].verdicts.clear()
    h.advance(20)
    assert all(h.apps[r].proposals_executed == [b"decide-1"] for r in h.replica_ids)
    assert h.replica("R1").view == 0


def test_a_tampered_new_view_is_rejected_with_evidence():
    h = Harness(4)
    run_increments(h, 1)
    r1_keys = h.keys["R1"]

    def tamper(dest, payload):
        msg = body(payload)
        if isinstance(msg, NewView):  # re-propose one extra (null) slot nobody prepared
            extra = seal(r1_keys, PrePrepare(msg.view, 99, batch_digest((), ()), (), ()))
            return [(dest, seal(r1_keys, NewView(msg.view, msg.view_changes, msg.preprepares + (extra,))))]
        return [(dest, payload)]

    h.byzantine["R1"] = tamper
    h.crash("R0")
    run_increments(h, 1, max_ms=10_000)
    for r in ("R2", "R3"):
        kinds = [(e.accused, e.kind) for e in h.events(r, Evidence)]
        assert ("R1", "forged-new-view") in kinds
        assert h.replica(r).view == 2  # R1's view was skipped
    assert values(h)[2] == 2
    h.assert_agreement()


# -- crash, restart, state transfer ------------------------------------------------------------


def test_a_restarted_replica_resumes_from_its_storage():
    h = Harness(4, checkpoint_interval=4, watermark_window=8)
    run_increments(h, 6)
    before = h.replica("R2").executed
    h.crash("R2")
    h.restart("R2")
    r2 = h.replica("R2")
    assert r2.executed == before  # stable checkpoint + re-executed committed batches
    assert h.apps["R2"].data == {"x": 6}
    run_increments(h, 3)
    assert h.apps["R2"].data == {"x": 9}
    h.assert_agreement()


def test_a_wiped_replica_recovers_by_state_transfer():
    h = Harness(4, checkpoint_interval=4, watermark_window=8)
    run_increments(h, 10)
    h.crash("R3")
    run_increments(h, 10)
    h.restart("R3", wipe=True)
    h.advance(200)
    transferred = h.events("R3", StateTransferred)
    assert transferred and transferred[-1].seq >= 16
    run_increments(h, 8)
    assert h.apps["R3"].data == h.apps["R0"].data == {"x": 28}
    h.assert_agreement()


def test_a_replica_cut_off_for_long_catches_up():
    h = Harness(4, checkpoint_interval=4, watermark_window=8, batch_size=1)
    h.drop = lambda src, dst, p: "R2" in (src, dst)
    run_increments(h, 30)
    h.drop = lambda src, dst, p: False
    run_increments(h, 12)  # slots that finished while it was fetching are caught at the next checkpoint
    h.advance(300)
    assert h.events("R2", StateTransferred)
    assert h.replica("R2").stable.seq == h.replica("R0").stable.seq >= 40
    assert h.replica("R2").executed >= h.replica("R0").stable.seq
    h.assert_agreement()


def test_a_replica_that_missed_a_preprepare_asks_for_it_when_the_cluster_moves_on():
    h = Harness(4)
    run_increments(h, 1)
    h.drop = lambda src, dst, p: dst == "R3" and type(body(p)).__name__ == "PrePrepare"
    run_increments(h, 1)
    assert h.replica("R3").executed == 1  # the others executed seq 2 without it
    h.drop = lambda src, dst, p: False
    run_increments(h, 1)  # seq 3 arrives; seq 2 is a gap R3 fills by asking
    h.advance(300)
    assert h.replica("R3").executed == 3
    h.assert_agreement()


def test_a_primary_that_censors_one_client_is_replaced():
    h = Harness(4, clients=("c0", "victim"), view_change_timeout_ms=100)
    # R0 ignores every request of the victim (sent to it, or forwarded by backups) and orders
    # everybody else's: the cluster makes progress, only censorship detection can help
    h.drop = lambda src, dst, p: dst == "R0" and decode(p, Envelope).sender == "victim"
    h.submit(kvapp.incr("v"), "victim")
    for _ in range(80):
        run_increments(h, 1, "c0")
        h.advance(20)
        if h.results("victim"):
            break
    assert h.results("victim"), "the victim was never served"
    assert h.replica("R1").view == 1
    assert len(h.results("c0")) >= 10  # progress all along: the stall timer alone would never fire
    h.assert_agreement()


def test_a_new_primary_that_lacks_a_batch_its_new_view_reproposes_gets_it_from_its_peers():
    """R1 never got the PRE-PREPARE that R0, R2 and R3 committed; R0 dies; R1 becomes primary
    and its NEW-VIEW re-proposes the batch by digest. The peers that have it answer R1's request
    with the completed PRE-PREPARE, which is in R1's own name: it used to be dropped as our own
    message coming back, and the new primary could never execute the batch (seen in the
    simulator: a primary that corrupts its messages, replaced, left its successor stuck)."""
    h = Harness(4)
    run_increments(h, 1)
    h.drop = lambda src, dst, p: src == "R0" and dst == "R1" and isinstance(body(p), PrePrepare)
    h.submit(kvapp.incr("x"))
    h.advance(10)
    assert h.replica("R1").executed == 1 and h.replica("R2").executed == 2
    h.drop = lambda src, dst, p: False
    h.crash("R0")
    for r in ("R1", "R2", "R3"):
        h.replica(r)._start_view_change(1, "operator")
    h.run_until(lambda: h.replica("R1").view == 1 and not h.replica("R1").view_changing, max_ms=5_000)
    h.run_until(lambda: h.replica("R1").executed >= 2, max_ms=5_000)
    assert h.apps["R1"].data == {"x": 2}
    run_increments(h, 1, max_ms=5_000)  # and the new view goes on
    h.assert_agreement()
