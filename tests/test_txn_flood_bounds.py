"""Peer-fed state of the transaction layer has a bound, and a flood that fills it leaves honest
traffic served.

- ``Participant.rejected``: keyed by the sender the transport claims (unauthenticated), at most
  ``MAX_COUNTED_SENDERS`` names (the rest as ``"<others>"``);
- a participant's unmatched prepare claims: at most ``claim_bytes`` per replica, and no claim
  with more than ``max_ops`` ops;
- a coordinator's early votes: per participant, so one participant's flood evicts only its own.

Negative controls (each seen red): without the cap on ``rejected``, without the claim budget,
and with one queue shared by all participants' early votes.
"""

from __future__ import annotations

from dtm_ray.crypto import open_envelope, seal_mac
from dtm_ray.sim.hostile import vote_batch
from dtm_ray.sim.txn_fakelog import FakeLog, small_txn_config
from dtm_ray.txn.early_votes import EARLY_VOTES
from dtm_ray.txn.messages import DecideBatch, PrepareBatch, PrepareItem, TxnRequest, Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.txn.participant import MAX_COUNTED_SENDERS
from dtm_ray.wire import decode, encode

TWO_KV = {"db-0": "kv", "db-1": "kv"}


def _votes_sent(log: FakeLog, participant: str) -> list[Vote]:
    out = []
    for sender, _dest, payload in log.queue:
        if sender == participant:
            body = decode(open_envelope(payload).body)
            if isinstance(body, VoteBatch):
                out.extend(body.votes)
    return out


def test_rejections_from_many_claimed_senders_stay_bounded_and_honest_prepares_still_count():
    log = FakeLog(small_txn_config(participants=TWO_KV))
    db0 = log.participants["db-0"]
    for i in range(3 * MAX_COUNTED_SENDERS):
        db0.receive(f"forged-{i}", b"\x00garbage")
    assert len(db0.rejected) == MAX_COUNTED_SENDERS + 1 and db0.rejected["<others>"] > 0
    assert sum(db0.rejected.values()) == 3 * MAX_COUNTED_SENDERS
    txn = log.submit("alice", [Op.add("db-0", "k", 1)])
    log.settle()
    assert log.result(txn).committed and log.state("db-0") == {"k": 1}


def test_a_replica_flooding_huge_prepares_fills_only_its_own_claim_budget():
    """R3 (faulty) claims every slot of the window with the largest prepares it may send; its
    claims stop at ``claim_bytes``, over-long ones are refused, and the honest replicas'
    prepares still make db-0 vote."""
    budget = 256 * 1024
    log = FakeLog(small_txn_config(participants=TWO_KV, claim_bytes=budget))
    db0, keys = log.participants["db-0"], log.keys["R3"]
    big = "x" * 100  # a prepare of ~7 kB; a batch of 100 stays below the decoder's field limit
    ops = tuple(Op.put("db-0", f"k{j}", big) for j in range(log.config.max_ops))
    for first in range(1, 2_000, 100):
        items = tuple(PrepareItem(f"R3-lie:{p}", p, ops) for p in range(first, first + 100))
        db0.receive("R3", seal_mac(keys, "db-0", PrepareBatch(items)))
    too_many = PrepareItem("R3-lie:x", 5_000, ops + ops)
    db0.receive("R3", seal_mac(keys, "db-0", PrepareBatch((too_many,))))
    held = db0._prepares.held_bytes("R3")
    assert 0.9 * budget < held <= budget, held  # full, and no further
    assert db0.rejected["R3"] > 1_900
    txn = log.submit("alice", [Op.add("db-0", "k", 1)])
    log.settle()
    assert log.result(txn).committed and log.state("db-0")["k"] == 1


def test_one_participants_early_votes_do_not_evict_anothers():
    """R0 has not executed alice:1 yet when db-0's vote for it arrives; db-1 then floods votes
    for transactions that will never exist, more than R0 keeps. db-0's early vote survives:
    once alice:1 executes at R0, its DECIDE is due at once, without waiting for a resend."""
    log = FakeLog(small_txn_config(participants=TWO_KV))
    app = log.apps["R0"]
    honest = vote_batch(log.keys["db-0"], [Vote("alice:1", 0, True, [1], None)])
    app.receive(open_envelope(honest))
    for first in range(0, 3 * EARLY_VOTES, 1_000):
        flood = [Vote(f"ghost:{i}", i, True, [], None) for i in range(first, first + 1_000)]
        app.receive(open_envelope(vote_batch(log.keys["db-1"], flood)))
    assert app._book.early.count("db-1") == EARLY_VOTES and app._book.early.evicted >= 2 * EARLY_VOTES
    app.execute(1, "alice", 1, encode(TxnRequest((Op.add("db-0", "k", 1),))))
    proposals = [decode(p) for p in app.proposals()]
    assert [d.txn_id for p in proposals if isinstance(p, DecideBatch) for d in p.decisions if d.commit] == ["alice:1"]
