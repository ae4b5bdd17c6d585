"""The Byzantine catalogue, behaviour by behaviour, on real keys and real PBFT messages."""

from __future__ import annotations

import random

import pytest

from dtm_ray.crypto import Envelope, generate_keys, open_mac, open_signed, seal_mac
from dtm_ray.errors import ConfigError, RemoteProtocolError
from dtm_ray.faults import CATALOGUE, colluding_equivocators, make_behaviour, open_own
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import (
    Checkpoint, Commit, PrePrepare, Prepare, Reply, Request, batch_digest, seal, seal_request,
)
from dtm_ray.wire import decode

REPLICAS = ("R0", "R1", "R2", "R3")
KEYS = generate_keys([*REPLICAS, "c0"], seed=1)
CONFIG = PbftConfig(replicas=REPLICAS, f=1)


def make(name, me="R0", seed=0):
    return make_behaviour(name, keys=KEYS[me], config=CONFIG, rng=random.Random(seed))


def signed_by(payload: bytes, sender: str, expected=object):
    env = decode(payload, Envelope)
    assert env.sender == sender
    return open_signed(KEYS["R3"], env, expected)


def requests(k: int) -> tuple[bytes, ...]:
    return tuple(seal_request(KEYS["c0"], REPLICAS, "ed25519", Request("c0", i, b"op%d" % i)) for i in range(k))


def preprepare(view=0, seq=1, k=2) -> bytes:
    reqs = requests(k)
    return seal(KEYS["R0"], PrePrepare(view, seq, batch_digest(reqs, ()), reqs, ()))


def test_unknown_name_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="equivocate"):
        make("teleport")


def test_mute_sends_nothing():
    assert list(make("mute")("R1", seal(KEYS["R0"], Prepare(0, 1, b"d" * 32)))) == []


def test_corrupt_auth_breaks_the_signature_but_not_the_envelope():
    behaviour = CATALOGUE["corrupt-auth"](keys=KEYS["R1"], config=CONFIG, rng=random.Random(0), rate=1.0)
    original = seal(KEYS["R1"], Prepare(0, 1, b"d" * 32))
    [(dest, payload)] = behaviour("R2", original)
    env = decode(payload, Envelope)
    assert dest == "R2" and env.sender == "R1" and payload != original
    with pytest.raises(RemoteProtocolError):
        open_signed(KEYS["R2"], env, Prepare)


def test_wrong_digest_is_validly_signed_with_another_digest():
    [(_, payload)] = make("wrong-digest", me="R1")("R2", seal(KEYS["R1"], Commit(0, 5, b"d" * 32)))
    msg = signed_by(payload, "R1", Commit)
    assert (msg.view, msg.seq) == (0, 5) and msg.digest != b"d" * 32 and len(msg.digest) == 32


def test_wrong_result_lies_to_clients_with_a_valid_mac():
    reply = seal_mac(KEYS["R1"], "c0", Reply(0, "c0", 3, b"\x93\x1f\xc3\x01"))
    [(dest, payload)] = make("wrong-result", me="R1")("c0", reply)
    env = decode(payload, Envelope)
    lie = open_mac(KEYS["c0"], env, Reply)
    assert dest == "c0" and (lie.client, lie.request_id) == ("c0", 3) and lie.result != b"\x93\x1f\xc3\x01"


def test_stale_view_names_an_older_view():
    behaviour = make("stale-view", me="R1")
    [(_, first)] = behaviour("R2", seal(KEYS["R1"], Prepare(2, 1, b"d" * 32)))
    [(_, later)] = behaviour("R2", seal(KEYS["R1"], Prepare(5, 9, b"d" * 32)))
    assert signed_by(first, "R1").view == 1
    assert signed_by(later, "R1").view == 2  # stuck at the first view it saw
    checkpoint = seal(KEYS["R1"], Checkpoint(16, b"s" * 32))
    assert list(behaviour("R2", checkpoint)) == [("R2", checkpoint)]


def test_future_view_pushes_later_views_validly_signed():
    behaviour = CATALOGUE["future-view"](keys=KEYS["R1"], config=CONFIG, rng=random.Random(0), rate=1.0)
    [(_, payload)] = behaviour("R2", seal(KEYS["R1"], Prepare(2, 1, b"d" * 32)))
    assert 3 <= signed_by(payload, "R1", Prepare).view <= 7


def test_selective_starves_some_peers_but_never_clients():
    behaviour = make("selective", me="R1", seed=4)
    heard = {d for d in ("R0", "R2", "R3") if list(behaviour(d, b"m"))}
    assert len(heard) == 1  # half of its 3 peers, rounded down
    assert list(behaviour("c0", b"m")) == [("c0", b"m")]


def test_replay_resends_old_messages_of_its_own():
    behaviour = make("replay", me="R1")
    sent = [seal(KEYS["R1"], Prepare(0, i, b"d" * 32)) for i in range(30)]
    out = [p for m in sent for _, p in behaviour("R2", m)]
    assert all(m in out for m in sent)
    replayed = len(out) - len(sent)
    assert 5 < replayed < 30
    assert all(p in sent for p in out)


def test_delay_holds_messages_back_and_loses_none():
    behaviour = make("delay", me="R1")
    sent = [("R2", b"m%d" % i) for i in range(300)]
    released_at = {}
    for call, message in enumerate(sent):
        for _, payload in behaviour(*message):
            assert payload not in released_at  # nothing duplicated
            released_at[payload] = call
    assert 250 < len(released_at) <= 300  # a few are still held at the end
    assert all(released_at[p] >= i for i, (_, p) in enumerate(sent) if p in released_at)
    assert sum(released_at[p] > i for i, (_, p) in enumerate(sent) if p in released_at) > 100


def test_flood_keeps_the_real_message_and_adds_garbage_that_never_authenticates():
    behaviour = make("flood", me="R1")
    real = seal(KEYS["R1"], Prepare(0, 1, b"d" * 32))
    extra = 0
    for _ in range(50):
        out = list(behaviour("R2", real))
        assert out[0] == ("R2", real)
        for _, junk in out[1:]:
            extra += 1
            try:
                msg = open_signed(KEYS["R2"], decode(junk, Envelope), Prepare)
            except RemoteProtocolError:
                continue
            assert junk == real or len(msg.digest) > 1000  # only the "big field" kind is signed
    assert extra > 20


def test_equivocating_primary_shows_two_valid_batches_and_backs_each():
    behaviour = make("equivocate", me="R0", seed=3)
    pp = preprepare(view=0, seq=1, k=3)
    shown = {}
    for dest in ("R1", "R2", "R3"):
        [(_, payload)] = behaviour(dest, pp)
        msg = signed_by(payload, "R0", PrePrepare)
        assert msg.digest == batch_digest(msg.requests, msg.proposals)
        shown[dest] = msg.digest
    assert len(set(shown.values())) == 2
    for dest in ("R1", "R2", "R3"):  # its own commit backs what each was shown
        [(_, payload)] = behaviour(dest, seal(KEYS["R0"], Commit(0, 1, signed_by(pp, "R0").digest)))
        assert signed_by(payload, "R0", Commit).digest == shown[dest]


def test_colluders_back_the_version_each_replica_was_shown():
    behaviours = colluding_equivocators({"R0": KEYS["R0"], "R1": KEYS["R1"]}, CONFIG, random.Random(5))
    pp = preprepare(k=2)
    shown = {d: signed_by(behaviours["R0"](d, pp)[0][1], "R0").digest for d in ("R1", "R2", "R3")}
    honest_digest = signed_by(pp, "R0").digest
    for dest in ("R2", "R3"):
        [(_, payload)] = behaviours["R1"](dest, seal(KEYS["R1"], Prepare(0, 1, honest_digest)))
        assert signed_by(payload, "R1", Prepare).digest == shown[dest]


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_no_behaviour_raises_or_touches_other_parties_envelopes(name):
    rng = random.Random(name)
    behaviour = make(name, me="R1", seed=7)
    client_request = requests(1)[0]
    inputs = [client_request, b"", b"\xc1", rng.randbytes(100), preprepare(), seal(KEYS["R1"], Prepare(1, 2, b"x" * 32))]
    for payload in inputs * 5:
        for dest, out in behaviour("R2", payload):
            assert isinstance(dest, str) and isinstance(out, bytes)
            env = _envelope_or_none(out)
            if env is not None and env.sender not in ("R1",):
                # it cannot make anything that verifies as another party's, only pass it on or break it
                assert out in inputs or _fails_auth(env)


def _envelope_or_none(payload):
    try:
        return decode(payload, Envelope)
    except RemoteProtocolError:
        return None


def _fails_auth(env) -> bool:
    return not KEYS["R2"].verify(env.sender, env.body, env.auth)


def test_open_own_ignores_other_senders():
    assert open_own(KEYS["R1"], preprepare()) is None
    assert open_own(KEYS["R0"], preprepare()) is not None


def test_a_message_a_behaviour_cannot_reseal_goes_out_unchanged():
    reply_to_self = seal_mac(KEYS["R1"], "c0", Reply(0, "c0", 1, b"x"))
    assert list(make("wrong-result", me="R1")("R1", reply_to_self)) == [("R1", reply_to_self)]


def test_composed_behaviours_apply_left_to_right():
    behaviour = make("wrong-digest+replay", me="R1", seed=2)
    sent = [seal(KEYS["R1"], Prepare(0, i, b"d" * 32)) for i in range(20)]
    out = [p for m in sent for _, p in behaviour("R2", m)]
    assert len(out) > len(sent)  # replayed
    assert all(signed_by(p, "R1", Prepare).digest != b"d" * 32 for p in out)  # every copy has a wrong digest
    with pytest.raises(ConfigError, match="teleport"):
        make("replay+teleport")
