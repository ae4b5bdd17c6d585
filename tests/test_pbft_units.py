"""Unit tests of the pure PBFT pieces: quorum math, safety rules (across a restart), messages."""

from __future__ import annotations

import pytest

from dtm_ray.crypto import Envelope, generate_keys, seal_signed
from dtm_ray.errors import AuthError, DecodeError
from dtm_ray.node import Outbox
from dtm_ray.pbft import checkpoint, quorum
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import (NULL_DIGEST, Checkpoint, ClientRecord, Commit, NewView, PrePrepare,
                                   Prepare, PreparedProof, Reply, ReplicaState, Request, StateReply,
                                   StateRequest, ViewChange, batch_digest, open_certified, open_request,
                                   seal, seal_request)
from dtm_ray.pbft.safety import SafetyRules
from dtm_ray.storage import MemoryStorage
from dtm_ray.wire import decode, encode

REPLICAS = ("R0", "R1", "R2", "R3")


@pytest.fixture(scope="module")
def keys():
    return generate_keys(list(REPLICAS) + ["alice", "mallory"], seed=7)


# -- quorum math -------------------------------------------------------------------------------


@pytest.mark.parametrize("f", [0, 1, 2, 3])
def test_two_strong_quorums_share_a_correct_replica(f):
    n = 3 * f + 1
    assert quorum.strong(f) == 2 * f + 1 and quorum.weak(f) == f + 1
    assert 2 * quorum.strong(f) - n >= f + 1  # the intersection holds more than f replicas


def test_matching_counts_distinct_voters_per_value():
    votes = [("a", 1), ("a", 1), ("b", 1), ("c", 2)]
    assert quorum.matching(votes, 2) == 1
    assert quorum.matching(votes, 3) is None
    assert quorum.matching([("a", 1), ("a", 2), ("b", 2), ("c", 2)], 3) == 2
    assert quorum.matching([], 1) is None


def test_matching_is_deterministic_when_two_values_reach_the_size():
    votes = [("a", b"y"), ("b", b"y"), ("c", b"x"), ("d", b"x")]
    assert quorum.matching(votes, 2) == b"x"
    assert quorum.matching(list(reversed(votes)), 2) == b"x"


# -- safety rules ------------------------------------------------------------------------------


def _safety(keys, storage):
    out = Outbox()
    return SafetyRules(keys["R1"], storage, out), out


def _persist(storage, out):
    storage.write(out.take().writes)


def test_safety_never_votes_two_digests_in_one_slot(keys):
    rules, _ = _safety(keys, MemoryStorage())
    d1, d2 = b"1" * 32, b"2" * 32
    first = rules.sign_prepare(0, 5, d1)
    assert first is not None
    assert rules.sign_prepare(0, 5, d1) == first  # repeating a vote gives the same bytes
    assert rules.sign_prepare(0, 5, d2) is None
    assert rules.sign_commit(0, 5, d2) is None
    assert rules.sign_commit(0, 5, d1) is not None
    assert rules.sign_prepare(1, 5, d2) is not None  # another view is another slot
    assert rules.sign_preprepare(PrePrepare(0, 6, d1, (), ())) is not None
    assert rules.sign_preprepare(PrePrepare(0, 6, d2, (), ())) is None


def test_safety_state_survives_a_restart(keys):
    storage = MemoryStorage()
    rules, out = _safety(keys, storage)
    d1, d2 = b"1" * 32, b"2" * 32
    assert rules.sign_prepare(3, 9, d1) is not None
    assert rules.sign_view_change(ViewChange(4, 0, (), ())) is not None
    writes = out.take().writes
    assert writes, "a vote must come with the writes that make it durable"
    storage.write(writes)
    again, _ = _safety(keys, storage)
    assert again.floor == 4
    assert again.sign_prepare(3, 9, d1) is None  # below the floor now, even the same digest
    assert again.sign_prepare(4, 9, d2) is not None
    assert again.sign_view_change(ViewChange(3, 0, (), ())) is None


def test_safety_refuses_a_contradiction_after_restart_in_the_same_view(keys):
    storage = MemoryStorage()
    rules, out = _safety(keys, storage)
    rules.sign_commit(0, 2, b"a" * 32)
    _persist(storage, out)
    again, _ = _safety(keys, storage)
    assert again.sign_prepare(0, 2, b"b" * 32) is None
    assert again.sign_prepare(0, 2, b"a" * 32) is not None


def test_safety_forgets_slots_at_or_below_a_stable_checkpoint(keys):
    storage = MemoryStorage()
    rules, out = _safety(keys, storage)
    for seq in range(1, 6):
        rules.sign_prepare(0, seq, b"a" * 32)
    _persist(storage, out)
    rules.forget_through(3)
    _persist(storage, out)
    assert sorted(s for _, s in rules.votes) == [4, 5]
    assert len(storage.items(b"s/vote/")) == 2


# -- messages ----------------------------------------------------------------------------------


def _samples(keys):
    cp = seal(keys["R1"], Checkpoint(16, b"s" * 32))
    pp = seal(keys["R0"], PrePrepare(0, 1, NULL_DIGEST, (), ()))
    return [
        Request("alice", 1, b"op"),
        Reply(0, "alice", 1, b"res"),
        PrePrepare(0, 1, batch_digest((b"r",), (b"p",)), (b"r",), (b"p",)),
        Prepare(0, 1, b"d" * 32),
        Commit(0, 1, b"d" * 32),
        Checkpoint(16, b"s" * 32),
        ViewChange(1, 16, (cp,), (PreparedProof(pp, (cp,)),)),
        NewView(1, (cp,), (pp,)),
        StateRequest(16),
        StateReply(16, b"state", (cp,)),
        ReplicaState(16, b"app", (ClientRecord("alice", 3, None), ClientRecord("bob", 1, b"r"))),
    ]


def test_every_message_round_trips(keys):
    for msg in _samples(keys):
        assert decode(encode(msg), type(msg)) == msg


def test_batch_digest_binds_order_and_kind():
    assert batch_digest((b"a", b"b"), ()) != batch_digest((b"b", b"a"), ())
    assert batch_digest((b"a",), ()) != batch_digest((), (b"a",))
    assert NULL_DIGEST == batch_digest((), ())


def test_open_certified_checks_the_signer(keys):
    payload = seal(keys["R2"], Prepare(0, 1, b"d" * 32))
    assert open_certified(keys["R0"], payload, Prepare) == ("R2", Prepare(0, 1, b"d" * 32))
    with pytest.raises(AuthError):
        open_certified(keys["R0"], payload, Prepare, signer="R1")
    with pytest.raises(DecodeError):
        open_certified(keys["R0"], payload, Commit)
    env = decode(payload, Envelope)
    forged = encode(Envelope("R1", env.body, env.auth))  # R1 cannot reuse R2's signature
    with pytest.raises(AuthError):
        open_certified(keys["R0"], forged, Prepare)


@pytest.mark.parametrize("scheme", ["ed25519", "hmac"])
def test_client_requests_verify_only_for_their_client(keys, scheme):
    req = Request("alice", 1, b"op")
    payload = seal_request(keys["alice"], REPLICAS, scheme, req)
    for r in REPLICAS:
        assert open_request(keys[r], REPLICAS, scheme, decode(payload, Envelope)) == req
    impostor = seal_request(keys["mallory"], REPLICAS, scheme, req)  # mallory claims to be alice
    with pytest.raises(AuthError):
        open_request(keys["R0"], REPLICAS, scheme, decode(impostor, Envelope))
    env = decode(payload, Envelope)
    tampered = Envelope(env.sender, encode(Request("alice", 2, b"op")), env.auth)
    with pytest.raises(AuthError):
        open_request(keys["R3"], REPLICAS, scheme, tampered)


def test_a_replica_cannot_forge_a_client_request_under_signatures(keys):
    body = encode(Request("alice", 1, b"op"))
    forged = Envelope("alice", body, keys["R0"].sign(body))
    with pytest.raises(AuthError):
        open_request(keys["R1"], REPLICAS, "ed25519", forged)


# -- checkpoint proofs -------------------------------------------------------------------------


def test_checkpoint_proof_needs_2f_plus_1_distinct_matching_signers(keys):
    config = PbftConfig(REPLICAS, 1)
    d = b"s" * 32
    votes = [seal(keys[r], Checkpoint(16, d)) for r in REPLICAS]
    checkpoint.verify_proof(keys["R0"], config, 16, d, tuple(votes[:3]))
    with pytest.raises(AuthError):
        checkpoint.verify_proof(keys["R0"], config, 16, d, tuple(votes[:2]))
    with pytest.raises(AuthError):
        checkpoint.verify_proof(keys["R0"], config, 16, d, (votes[0], votes[0], votes[1]))
    with pytest.raises(AuthError):
        checkpoint.verify_proof(keys["R0"], config, 16, b"t" * 32, tuple(votes[:3]))
    alice = seal_signed(keys["alice"], Checkpoint(16, d))
    with pytest.raises(AuthError):
        checkpoint.verify_proof(keys["R0"], config, 16, d, (votes[0], votes[1], alice))


def test_checkpoint_votes_detect_conflicts_and_stay_bounded(keys):
    config = PbftConfig(REPLICAS, 1, checkpoint_interval=4, watermark_window=8)
    votes = checkpoint.CheckpointVotes(config)
    a = seal(keys["R1"], Checkpoint(4, b"a" * 32))
    b = seal(keys["R1"], Checkpoint(4, b"b" * 32))
    assert votes.add("R1", Checkpoint(4, b"a" * 32), a) is None
    conflict = votes.add("R1", Checkpoint(4, b"b" * 32), b)
    assert conflict is not None and conflict.accused == "R1" and {conflict.first, conflict.second} == {a, b}
    for seq in range(12, 4000, 4):  # far above the window: one entry per replica
        votes.add("R2", Checkpoint(seq, b"c" * 32), b"x")
    assert votes.size() <= 2 and votes.ahead(0) == ["R2"]
    assert votes.add("R3", Checkpoint(5, b"a" * 32), b"x") is None  # not a checkpoint seq
    assert votes.stable_candidates() == []


def test_state_transfer_asks_rotating_groups_of_f_plus_1():
    from dtm_ray.pbft.statetransfer import sources

    peers = ("R1", "R2", "R3", "R4", "R5", "R6")
    groups = [sources(peers, 2, r) for r in range(4)]
    assert all(len(g) == 3 and len(set(g)) == 3 for g in groups)
    assert set(groups[0]) | set(groups[1]) == set(peers)
    assert sources((), 1, 3) == [] and sources(("R1",), 1, 5) == ["R1"]


def test_a_transferred_state_must_carry_a_matching_certificate(keys):
    from dtm_ray.pbft.messages import ReplicaState, StateReply, state_digest
    from dtm_ray.pbft.statetransfer import verify_reply

    config = PbftConfig(REPLICAS, 1, checkpoint_interval=4, watermark_window=8)
    state = encode(ReplicaState(8, b"app", ()))
    proof = tuple(seal(keys[r], Checkpoint(8, state_digest(state))) for r in ("R0", "R1", "R2"))
    digest, decoded = verify_reply(keys["R3"], config, StateReply(8, state, proof))
    assert decoded.app == b"app" and digest == state_digest(state)
    with pytest.raises(AuthError):  # another state under the same certificate
        verify_reply(keys["R3"], config, StateReply(8, encode(ReplicaState(8, b"evil", ())), proof))
    with pytest.raises(AuthError):  # the certificate of another seq
        verify_reply(keys["R3"], config, StateReply(12, state, proof))
    with pytest.raises(AuthError):  # too few signers
        verify_reply(keys["R3"], config, StateReply(8, state, proof[:2]))


# -- authenticators: what is provable, and the client's switch to signing ----------------------


def test_a_bad_mac_for_one_replica_is_unverifiable_there_only(keys):
    """The Aardvark request: good at R0, garbage for R1. R1 gets BadAuthenticator (not provable);
    a malformed authenticator or a bad signature is an AuthError anybody can check."""
    from dtm_ray.crypto import MAC_LEN
    from dtm_ray.pbft.messages import BadAuthenticator

    env = decode(seal_request(keys["alice"], REPLICAS, "hmac", Request("alice", 1, b"op")), Envelope)
    bad_for_r1 = Envelope("alice", env.body, env.auth[:MAC_LEN] + b"\0" * MAC_LEN + env.auth[2 * MAC_LEN:])
    assert open_request(keys["R0"], REPLICAS, "hmac", bad_for_r1) == Request("alice", 1, b"op")
    with pytest.raises(BadAuthenticator):
        open_request(keys["R1"], REPLICAS, "hmac", bad_for_r1)
    short = Envelope("alice", env.body, env.auth[:-1])
    with pytest.raises(AuthError) as exc:
        open_request(keys["R1"], REPLICAS, "hmac", short)
    assert not isinstance(exc.value, BadAuthenticator)
    signed = decode(seal_request(keys["alice"], REPLICAS, "ed25519", Request("alice", 1, b"op")), Envelope)
    assert open_request(keys["R2"], REPLICAS, "hmac", signed) == Request("alice", 1, b"op")  # under hmac too
    forged = Envelope("alice", signed.body, keys["R0"].sign(signed.body))
    with pytest.raises(AuthError) as exc:
        open_request(keys["R2"], REPLICAS, "hmac", forged)
    assert not isinstance(exc.value, BadAuthenticator)


def test_hmac_needs_an_authenticator_longer_or_shorter_than_a_signature():
    from dtm_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="as long as a signature"):
        PbftConfig(("R0", "R1"), 0)
    assert PbftConfig(("R0", "R1"), 0, auth_scheme="ed25519").n == 2


def test_the_client_signs_after_f_plus_1_authenticator_refusals_only(keys):
    from dtm_ray.crypto import SIG_LEN, seal_mac
    from dtm_ray.pbft.client import ClientCore
    from dtm_ray.pbft.messages import AuthRefusal

    client = ClientCore("alice", PbftConfig(REPLICAS, 1), keys["alice"])
    rid = client.submit(b"op")
    first = client.take_ready().send_now
    assert first and all(len(decode(p, Envelope).auth) == 4 * 32 for _, p in first)
    client.receive("R0", seal_mac(keys["R0"], "alice", AuthRefusal(0, "alice", rid)))
    client.receive("R0", seal_mac(keys["R0"], "alice", AuthRefusal(0, "alice", rid)))  # the same replica twice
    assert not client.signing and not client.take_ready().send_now  # one (maybe faulty) replica: nothing
    client.receive("R1", seal_mac(keys["R1"], "alice", AuthRefusal(0, "alice", rid)))
    resent = client.take_ready().send_now
    assert client.signing and {d for d, _ in resent} == set(REPLICAS)
    assert all(len(decode(p, Envelope).auth) == SIG_LEN for _, p in resent)
    assert open_request(keys["R3"], REPLICAS, "hmac", decode(resent[0][1], Envelope)).request_id == rid
