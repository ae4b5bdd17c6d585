"""Keys, MACs, signatures and envelopes: each party can authenticate as itself and nobody else."""

from __future__ import annotations

import pytest

from dtm_ray.crypto import (Envelope, generate_keys, open_envelope, open_mac, open_signed, seal_authenticated,
                            seal_mac, seal_signed)
from dtm_ray.errors import AuthError, DecodeError
from dtm_ray.wire import Message, decode, encode

PARTIES = ["R0", "R1", "R2", "R3", "alice", "db-0"]


class Note(Message, tag=910):
    text: str


@pytest.fixture(scope="module")
def keys():
    return generate_keys(PARTIES, seed=1)


def test_keys_are_reproducible_from_a_seed_and_differ_without_one():
    assert generate_keys(PARTIES, seed=1)["R0"].signing_key == generate_keys(PARTIES, seed=1)["R0"].signing_key
    assert generate_keys(PARTIES)["R0"].signing_key != generate_keys(PARTIES)["R0"].signing_key


def test_each_party_holds_only_its_own_secrets(keys):
    r0 = keys["R0"]
    assert set(r0.mac_keys) == set(PARTIES) - {"R0"}
    assert r0.mac_keys["R1"] == keys["R1"].mac_keys["R0"]
    assert all(keys[p].signing_key != r0.signing_key for p in PARTIES if p != "R0")
    # R0 knows no key shared by R1 and R2.
    assert keys["R1"].mac_keys["R2"] not in r0.mac_keys.values()


def test_signatures_verify_for_the_signer_only(keys):
    payload = seal_signed(keys["R1"], Note("prepare"))
    env = open_envelope(payload)
    assert open_signed(keys["R2"], env, Note) == Note("prepare")
    forged = Envelope("R3", env.body, env.auth)  # R1's signature claimed as R3's
    with pytest.raises(AuthError):
        open_signed(keys["R2"], forged, Note)
    tampered = Envelope("R1", encode(Note("commit")), env.auth)
    with pytest.raises(AuthError):
        open_signed(keys["R2"], tampered, Note)


def test_unknown_sender_is_an_auth_error(keys):
    env = Envelope("mallory", encode(Note("x")), b"\x00" * 64)
    with pytest.raises(AuthError):
        open_signed(keys["R0"], env, Note)
    with pytest.raises(AuthError):
        open_mac(keys["R0"], env, Note)


def test_macs_bind_sender_and_receiver(keys):
    payload = seal_mac(keys["R0"], "alice", Note("reply"))
    env = open_envelope(payload)
    assert open_mac(keys["alice"], env, Note) == Note("reply")
    # Reflected back to R0 as if alice had sent it: the MAC covers the direction.
    with pytest.raises(AuthError):
        open_mac(keys["R0"], Envelope("alice", env.body, env.auth), Note)
    # Another party cannot check (or forge) it.
    with pytest.raises(AuthError):
        open_mac(keys["db-0"], env, Note)


def test_authenticators_carry_one_mac_per_replica(keys):
    replicas = ["R0", "R1", "R2", "R3"]
    env = decode(seal_authenticated(keys["alice"], replicas, Note("req")), Envelope)
    for i, r in enumerate(replicas):
        assert keys[r].check_authenticator("alice", env.body, env.auth, i)
    assert not keys["R1"].check_authenticator("alice", env.body, env.auth, 0)  # R0's slot is not R1's
    broken = env.auth[:32] + bytes(32) + env.auth[64:]
    assert not keys["R1"].check_authenticator("alice", env.body, broken, 1)
    assert keys["R2"].check_authenticator("alice", env.body, broken, 2)


def test_truncated_envelope_is_a_decode_error(keys):
    payload = seal_signed(keys["R1"], Note("x"))
    with pytest.raises(DecodeError):
        open_envelope(payload[:-1])


def test_key_rings_survive_shipping_as_plain_dicts(keys):
    from dtm_ray.crypto import KeyRing

    copy = KeyRing.from_dict(keys["R0"].to_dict())
    sig = copy.sign(b"x")
    assert keys["R1"].verify("R0", b"x", sig)
