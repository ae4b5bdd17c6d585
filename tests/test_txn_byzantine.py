"""The transaction layer's Byzantine behaviours in isolation: what they change, and that they
can only sign or MAC as their own party."""

from __future__ import annotations

import random

from dtm_ray.crypto import Envelope, generate_keys, seal_mac, seal_signed, signed_bytes
from dtm_ray.faults import CATALOGUE, make_behaviour
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import PrePrepare, batch_digest
from dtm_ray.txn.messages import Decide, DecisionBatch, DecisionItem, PrepareBatch, PrepareItem, Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode, encode

CONFIG = PbftConfig(("R0", "R1", "R2", "R3"), 1)
KEYS = generate_keys(["R0", "R1", "R2", "R3", "db-0"], seed=3)


def opened(payload: bytes):
    env = decode(payload, Envelope)
    return env, decode(env.body)


def test_registered_in_the_catalogue():
    assert {"forge-decision", "forge-votes", "equivocate-vote"} <= set(CATALOGUE)


def test_forge_decision_flips_decisions_and_invents_some_with_its_own_mac():
    fn = make_behaviour("forge-decision", keys=KEYS["R1"], config=CONFIG, rng=random.Random(1))
    decision = seal_mac(KEYS["R1"], "db-0", DecisionBatch((DecisionItem("t", 3, True),)))
    [(dest, out)] = fn("db-0", decision)
    env, msg = opened(out)
    assert dest == "db-0" and msg.items[0].commit is False and KEYS["db-0"].check_mac("R1", env.body, env.auth)
    prepare = seal_mac(KEYS["R1"], "db-0", PrepareBatch((PrepareItem("u", 4, (Op.get("db-0", "k"),)),)))
    outs = fn("db-0", prepare)
    assert outs[0] == ("db-0", prepare) and isinstance(opened(outs[1][1])[1], DecisionBatch)
    other = seal_mac(KEYS["R2"], "db-0", DecisionBatch((DecisionItem("t", 3, True),)))
    assert list(fn("db-0", other)) == [("db-0", other)]  # not its own: passed on untouched


def test_forge_votes_turns_decides_into_commits_signed_by_itself_with_a_valid_digest():
    fn = make_behaviour("forge-votes", keys=KEYS["R0"], config=CONFIG, rng=random.Random(1))
    fn("db-0", seal_mac(KEYS["R0"], "db-0", PrepareBatch((PrepareItem("t2", 0, (Op.get("db-0", "k"),)),))))
    abort = encode(Decide("t1", False, ()))
    pp = PrePrepare(0, 5, batch_digest((), (abort,)), (), (abort,))
    outs = {d: fn(d, seal_signed(KEYS["R0"], pp))[0][1] for d in ("R1", "R2")}
    assert outs["R1"] == outs["R2"]  # the same forgery for everybody (not an equivocation)
    env, forged = opened(outs["R1"])
    assert KEYS["R1"].verify("R0", signed_bytes(forged, env.body), env.auth)
    decides = [decode(p, Decide) for p in forged.proposals]
    assert [(d.txn_id, d.commit) for d in decides] == [("t1", True), ("t2", True)]
    assert forged.digest == batch_digest(forged.requests, forged.proposals)


def test_equivocate_vote_tells_some_replicas_no_and_signs_only_as_itself():
    fn = make_behaviour("equivocate-vote", keys=KEYS["db-0"], config=CONFIG, rng=random.Random(2))
    seen = {}
    for i in range(20):
        batch = seal_signed(KEYS["db-0"], VoteBatch("db-0", (Vote(f"t{i}", i, True, [1], None),)))
        for r in CONFIG.replicas:
            env, msg = opened(fn(r, batch)[0][1])
            assert env.sender == "db-0" and KEYS[r].verify("db-0", env.body, env.auth)
            seen.setdefault(i, set()).add(msg.votes[0].yes)
    assert any(v == {True, False} for v in seen.values())  # some votes were split
    assert any(v == {True} for v in seen.values())  # and some were not
