"""The 2PC rules on a synchronous fake log (no PBFT, no randomness): one rule per test."""

from __future__ import annotations

import pytest

from dtm_ray.crypto import open_envelope, seal_mac, seal_signed
from dtm_ray.pbft.app import Verdict
from dtm_ray.sim.txn_fakelog import FakeLog, small_txn_config
from dtm_ray.txn.events import Applied, Voted
from dtm_ray.txn.messages import Decide, DecisionBatch, DecisionItem, Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode, encode


def fund(log: FakeLog, **balances) -> None:
    ops = [Op.put(p, "acct", v) for p, v in balances.items()]
    txn = log.submit("alice", ops)
    log.settle()
    assert log.result(txn).committed


def transfer(src: str, dst: str, amount: int) -> list[Op]:
    return [Op.add(src, "acct", -amount, min=0), Op.add(dst, "acct", amount)]


def test_transfer_commits_everywhere_with_reads():
    log = FakeLog(small_txn_config())
    fund(log, **{"db-0": 10, "db-1": 0})
    txn = log.submit("alice", transfer("db-0", "db-1", 4) + [Op.enqueue("mq-0", {"moved": 4})])
    log.settle()
    result = log.result(txn)
    assert (result.committed, result.outcome, result.reads, result.reason) == (True, "commit", [6, 4, None], None)
    assert log.state("db-0") == {"acct": 6} and log.state("db-1") == {"acct": 4}
    assert log.state("mq-0") == [{"moved": 4}]
    assert all(p.status()["locks"] == 0 and p.status()["prepared"] == 0 for p in log.participants.values())
    assert all(a.status()["final"] == 2 and a.status()["in_flight"] == 0 for a in log.apps.values())


def test_failed_guard_aborts_with_a_clear_reason_and_changes_nothing():
    log = FakeLog(small_txn_config())
    fund(log, **{"db-0": 3, "db-1": 0})
    txn = log.submit("alice", transfer("db-0", "db-1", 5))
    log.settle()
    result = log.result(txn)
    assert not result.committed and result.outcome == "abort"
    assert result.reason == "guard failed: db-0 acct would go below min 0"
    assert result.reads == [None, None]
    assert log.state("db-0") == {"acct": 3} and log.state("db-1") == {"acct": 0}
    assert log.participants["db-1"].status()["locks"] == 0


def test_hot_key_never_aborts_and_reads_are_serial():
    log = FakeLog(small_txn_config())
    txns = [log.submit("alice", [Op.add("db-0", "hot", 1), Op.get("db-0", "hot")]) for _ in range(20)]
    log.settle(rounds=100)
    results = [log.result(t) for t in txns]
    assert all(r.committed for r in results)
    assert [r.reads for r in results] == [[i, i] for i in range(1, 21)]


def test_only_conflicting_transactions_wait_for_each_other():
    log = FakeLog(small_txn_config())
    log.intercept = lambda s, d, p: [] if d.startswith("R") and s == "db-1" else [p]  # db-1's votes lost
    first = log.submit("alice", [Op.put("db-0", "a", 1), Op.put("db-1", "x", 1)])  # stays undecided
    log.deliver()
    second = log.submit("alice", [Op.put("db-0", "b", 2)])  # disjoint keys: goes through
    third = log.submit("alice", [Op.get("db-0", "a")])  # conflicts with the first: waits
    log.settle()
    assert log.result(first) is None and log.result(second).committed and log.result(third) is None
    voted = {o.txn_id for o in log.outputs if isinstance(o, Voted)}
    assert second in voted and third not in voted
    log.intercept = None
    log.tick(100)  # replicas resend their PREPAREs, db-1 resends its vote
    log.settle()
    assert log.result(first).committed and log.result(third).reads == [1]


def test_participant_needs_f_plus_1_matching_prepares():
    log = FakeLog(small_txn_config())
    log.intercept = lambda s, d, p: [p] if s in ("R0",) or not s.startswith("R") else []
    txn = log.submit("alice", [Op.put("db-0", "k", 1)])
    log.deliver()
    assert not [o for o in log.outputs if isinstance(o, Voted)]
    log.intercept = lambda s, d, p: [p] if s in ("R0", "R1") or not s.startswith("R") else []
    log.tick(100)
    log.settle()
    assert log.result(txn).committed


def test_forged_commit_is_rejected_and_timeout_abort_waits_for_the_timer():
    log = FakeLog(small_txn_config(vote_timeout_ms=1000))
    log.intercept = lambda s, d, p: [] if d == "db-1" else [p]  # db-1 never hears of it
    txn = log.submit("alice", [Op.put("db-0", "k", 1), Op.put("db-1", "k", 1)])
    log.deliver()
    db0_vote = next(iter(log.apps["R1"]._book.of(txn).values()))[1]
    forged_sig = seal_signed(log.keys["R0"], VoteBatch("db-1", (Vote(txn, 0, True, [None], None),)))
    own_keys = seal_signed(log.keys["db-0"], VoteBatch("db-1", (Vote(txn, 0, True, [None], None),)))
    for evidence in [(), (db0_vote,), (db0_vote, forged_sig), (db0_vote, own_keys), (b"garbage",)]:
        verdicts = log.order_proposal(encode(Decide(txn, True, evidence)))
        assert set(verdicts.values()) == {Verdict.REJECT}, evidence
    assert log.order_proposal(encode(Decide(txn, False, ()))) == {r: Verdict.WAIT for r in log.apps}
    assert log.order_proposal(encode(Decide(txn, False, (db0_vote,))))["R1"] is Verdict.REJECT  # a YES
    log.tick(1000)
    assert log.order_due() == 1
    result = log.result(txn)
    assert (result.committed, result.reason) == (False, "vote timeout")
    log.intercept = None
    log.tick(100)
    log.settle()
    assert log.state("db-0") == {} and log.state("db-1") == {}
    applied = {(o.participant, o.commit) for o in log.outputs if isinstance(o, Applied) and o.txn_id == txn}
    assert applied == {("db-0", False), ("db-1", False)}


def test_a_second_decide_changes_nothing():
    log = FakeLog(small_txn_config())
    txn = log.submit("alice", [Op.put("db-0", "k", 1)])
    log.deliver()
    proposal = log.apps["R0"].proposals()[0]
    assert all(v is Verdict.ACCEPT for v in log.order_proposal(proposal).values())
    assert log.apps["R2"].validate_proposal(encode(Decide(txn, False, ()))) is Verdict.ACCEPT  # a no-op
    log.order_proposal(encode(Decide(txn, False, ())))
    log.settle()
    assert log.result(txn).committed and log.state("db-0") == {"k": 1}


def test_equivocating_vote_is_evidence_and_cannot_split():
    log = FakeLog(small_txn_config())
    db1 = log.keys["db-1"]

    def equivocate(sender, dest, payload):
        if sender != "db-1" or dest not in ("R2", "R3"):
            return [payload]
        batch = decode(open_envelope(payload).body)
        if not isinstance(batch, VoteBatch):
            return [payload]
        flipped = tuple(Vote(v.txn_id, v.pseq, False, [], "no!") for v in batch.votes)
        return [payload, seal_signed(db1, VoteBatch("db-1", flipped))]

    log.intercept = equivocate
    txn = log.submit("alice", transfer("db-0", "db-1", 0))
    log.settle()
    assert log.apps["R2"].evidence and log.apps["R2"].evidence[0].accused == "db-1"
    assert log.result(txn).committed  # the primary saw the YES first: one outcome everywhere
    applied = {o.participant: o.commit for o in log.outputs if isinstance(o, Applied) and o.txn_id == txn}
    assert applied == {"db-0": True, "db-1": True}


def test_participant_applies_a_decision_only_on_f_plus_1_and_only_once():
    log = FakeLog(small_txn_config())
    log.intercept = lambda s, d, p: [] if s.startswith("R") and isinstance(
        decode(open_envelope(p).body), DecisionBatch) else [p]
    txn = log.submit("alice", [Op.add("db-0", "n", 1)])
    log.settle()
    assert log.result(txn).committed and log.state("db-0") == {}
    db0 = log.participants["db-0"]
    forged = seal_mac(log.keys["R3"], "db-0", DecisionBatch((DecisionItem(txn, 0, False),)))
    db0.receive("R3", forged)
    for replica in ("R0", "R1", "R1", "R0", "R2"):
        db0.receive(replica, seal_mac(log.keys[replica], "db-0", DecisionBatch((DecisionItem(txn, 0, True),))))
    log._collect()
    assert log.state("db-0") == {"n": 1}
    applied = [o for o in log.outputs if isinstance(o, Applied)]
    assert [(o.txn_id, o.commit) for o in applied] == [(txn, True)]


def test_restarted_participant_keeps_its_vote_and_resolves_by_asking():
    log = FakeLog(small_txn_config())
    log.intercept = lambda s, d, p: [] if s.startswith("R") and isinstance(
        decode(open_envelope(p).body), DecisionBatch) else [p]
    txn = log.submit("alice", transfer("db-0", "db-1", 0) + [Op.get("db-0", "acct")])
    log.settle()
    assert log.result(txn).committed
    for app in log.apps.values():
        app._delivery.unacked.clear()  # replicas forget to resend: only the participants' queries remain
    log.restart_participant("db-0")
    log.restart_participant("db-1")
    assert log.participants["db-0"].status()["in_doubt"] == 1
    assert log.participants["db-0"].status()["locks"] == 1
    log.intercept = None
    for _ in range(5):
        log.tick(100)
        log.settle()
    assert log.state("db-0") == {"acct": 0} and log.state("db-1") == {"acct": 0}
    assert log.participants["db-0"].status()["in_doubt"] == 0


def test_abort_decided_before_the_participant_saw_the_prepare():
    log = FakeLog(small_txn_config())
    log.intercept = lambda s, d, p: [] if d == "db-1" else [p]
    first = log.submit("alice", [Op.put("db-0", "k", 1), Op.put("db-1", "k", 1)])
    log.deliver()
    log.tick(1000)
    log.order_due()
    assert log.result(first).outcome == "abort"
    # db-1 gets only the decision (replicas stop resending prepares once decided)
    log.intercept = lambda s, d, p: [] if d == "db-1" and not isinstance(
        decode(open_envelope(p).body), DecisionBatch) else [p]
    log.tick(100)
    log.settle()
    second = log.submit("alice", [Op.put("db-1", "k", 2)])
    log.intercept = None
    log.settle()
    assert log.result(second).committed and log.state("db-1") == {"k": 2}
    assert log.participants["db-1"].status()["aborted"] == 1


def test_queue_operations_in_one_transaction():
    log = FakeLog(small_txn_config())
    t1 = log.submit("alice", [Op.enqueue("mq-0", 1), Op.enqueue("mq-0", 2), Op.dequeue("mq-0")])
    t2 = log.submit("alice", [Op.dequeue("mq-0"), Op.dequeue("mq-0")])
    log.settle()
    assert log.result(t1).reads == [None, None, 1] and log.result(t2).reads == [2, None]
    assert log.state("mq-0") == []


def test_invalid_requests_are_refused_with_reasons():
    config = small_txn_config(max_ops=2)
    log = FakeLog(config)
    app = log.apps["R0"]
    assert "unknown participant" in app.check_request("alice", encode_ops([Op.get("nope", "k")]))
    assert "not an operation of mq-0" in app.check_request("alice", encode_ops([Op.get("mq-0", "k")]))
    assert "exceed max_ops" in app.check_request("alice", encode_ops([Op.get("db-0", "k")] * 3))
    assert "at least one op" in app.check_request("alice", encode_ops([]))
    assert app.check_request("alice", b"\x01\x02").startswith("invalid request")
    assert app.check_request("alice", encode_ops([Op.get("db-0", "k")])) is None
    log.order_request("alice", 7, encode_ops([Op.get("mq-0", "k")]))
    assert "not an operation" in log.result("alice:7").reason


def encode_ops(ops):
    from dtm_ray.txn.messages import TxnRequest
    return encode(TxnRequest(tuple(ops)))


def test_snapshots_agree_and_restore_round_trips():
    log = FakeLog(small_txn_config())
    log.submit("alice", transfer("db-0", "db-1", 0))
    log.settle()
    log.submit("alice", [Op.get("db-0", "acct")])
    snaps = {app.snapshot() for app in log.apps.values()}
    assert len(snaps) == 1
    fresh = FakeLog(small_txn_config()).apps["R0"]
    fresh.restore(snaps.pop())
    assert fresh.snapshot() == log.apps["R0"].snapshot()
    assert fresh.status()["pending"] == 1


@pytest.mark.parametrize("build, message", [
    (lambda: Op.add("db-0", "k", "5"), "delta must be an int"),
    (lambda: Op.add("db-0", "k", 1, min=3, max=2), "min 3 > max 2"),
    (lambda: Op.get("db-0", ""), "non-empty key"),
    (lambda: Op.put("db-0", "k", object()), "not a wire Value"),
    (lambda: Op.put("", "k", 1), "needs a participant"),
])
def test_bad_op_arguments_raise_a_local_error(build, message):
    from dtm_ray.errors import LocalError
    with pytest.raises(LocalError, match=message):
        build()


def test_client_policies_are_enforced_before_ordering_and_at_execution():
    from dtm_ray.txn.config import ClientPolicy
    config = small_txn_config(policies={"bob": ClientPolicy(participants=frozenset({"db-0"}),
                                                             ops=frozenset({"get"}))})
    log = FakeLog(config, clients=("alice", "bob"))
    app = log.apps["R1"]
    assert app.check_request("bob", encode_ops([Op.get("db-0", "k")])) is None
    assert "not permitted to touch db-1" in app.check_request("bob", encode_ops([Op.get("db-1", "k")]))
    assert "not permitted to put" in app.check_request("bob", encode_ops([Op.put("db-0", "k", 1)]))
    assert app.check_request("alice", encode_ops([Op.put("db-1", "k", 1)])) is None
    txn = log.submit("bob", [Op.put("db-0", "k", 1)])  # a faulty primary ordered it anyway
    log.settle()
    assert log.result(txn).reason == "invalid request: not permitted to put" and log.state("db-0") == {}
