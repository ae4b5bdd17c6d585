"""Hostile bytes at every party's door: replica, participant and client.

A small transaction cluster runs for a moment while a ``Recorder`` keeps every message; then,
with the world paused, hypothesis turns genuine messages into hostile ones (random, truncated,
bit-flipped, oversized, deeply nested, wrong-type, resealed by the wrong party, sealed by a
client, claimed by another sender) and hands them to the party they were addressed to. Each one
must be rejected (a ``Rejected`` output, counted against the transport's sender), never raise,
persist nothing, and leave the party's status unchanged apart from the rejection counters.

Negative control: ``test_negative_control_a_replica_that_skips_signature_checks_is_caught``
disables the replica's signature check and the same properties fail.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dtm_ray.errors import DtmError
from fuzz.targets import deliverer
from dtm_ray.pbft.events import Rejected
from dtm_ray.pbft.messages import open_request
from dtm_ray.sim.hostile import VARIANTS, Recorder, hostile_variant
from dtm_ray.sim.txn_world import BankWorkload, build_txn_world
from dtm_ray.crypto import Envelope
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode


def _capture():
    world = build_txn_world(7, clients=3, verify_cache=False)
    seen: list[tuple[str, str, bytes]] = []
    for party in world.sim.parties:
        world.sim.set_behaviour(party, Recorder(party, seen), "recorder")
    world.start(BankWorkload(list(world.participants), random.Random(7)), 4)
    world.sim.run_until(world.done, 5_000)
    assert world.done(), "the capture run did not finish"
    world.sim.run_for(300)  # acks and checkpoints too
    return world, seen


WORLD, TRAFFIC = _capture()
ROLE = {**{r: "replica" for r in WORLD.replicas}, **{p: "participant" for p in WORLD.participants},
        **{c: "client" for c in WORLD.clients}}
BY_ROLE = {role: [t for t in TRAFFIC if ROLE[t[1]] == role] for role in ("replica", "participant", "client")}


def _fingerprint(party: str) -> tuple:
    """What must not change when a party rejects input: its status minus the counters of
    rejections, and its disk."""
    node = WORLD.sim.node(party)
    if ROLE[party] == "client":
        core = node.core
        status = {"outstanding": core.outstanding, "replies": dict(core._replies), "current": core._current}
    else:
        status = {k: v for k, v in node.status().items() if k not in ("rejected", "ignored", "replayed")}
        if ROLE[party] == "replica":
            status["app"] = {k: v for k, v in node.app.status().items() if k != "rejected"}
    return repr(status), tuple(WORLD.sim.parties[party].storage.items())


def _rejections(party: str) -> int:
    node = WORLD.sim.node(party)
    if ROLE[party] == "client":
        return node.core.rejected
    if ROLE[party] == "replica":  # includes what the coordinator (the replica's App) refuses
        return sum(node.status()["rejected"].values())
    return node.status()["rejected"]


def _impostor_for(sender: str, dest: str, payload: bytes, rng: random.Random):
    """A party other than the transport sender, the destination and the message's author (a
    replica forwards a client's own request: that client's name on it would be a plain replay)."""
    author = decode(payload, Envelope).sender
    others = [p for p in WORLD.keys if p not in (sender, dest, author)]
    return WORLD.keys[rng.choice(others)]


def _authentic_at(dest: str, payload: bytes) -> bool:
    """Whether ``payload`` is a client request that ``dest`` authenticates."""
    if ROLE[dest] != "replica":
        return False
    try:
        open_request(WORLD.keys[dest], WORLD.config.replicas, WORLD.config.auth_scheme, decode(payload, Envelope))
    except DtmError:
        return False
    return True


def feed(role: str, index: int, variant: str, seed: int, *, oversized: bool = False) -> None:
    rng = random.Random(seed)
    src, dest, payload = BY_ROLE[role][index % len(BY_ROLE[role])]
    hostile = hostile_variant(variant, rng, payload, target_kind=role, impostor=_impostor_for(src, dest, payload, rng),
                              client=WORLD.keys[next(c for c in WORLD.clients
                                                     if c not in (src, decode(payload, Envelope).sender))], oversized=oversized)
    node = WORLD.sim.node(dest)
    before, count = _fingerprint(dest), _rejections(dest)
    node.receive(deliverer(src), hostile)  # the hostile network's, not src's (fuzz.targets.deliverer)
    ready = node.take_ready()
    context = f"variant={variant} role={role} index={index} seed={seed} from {src} to {dest}"
    if variant == "bit-flip" and _authentic_at(dest, hostile):
        # a bit flipped in another replica's MAC of a client's authenticator: the request is
        # still the client's own here (its MAC for this replica holds), so it is answered as the
        # replay it is, and nothing changes
        assert not ready.writes and _fingerprint(dest) == before, f"changed by a replay: {context}"
        return
    assert [o for o in ready.outputs if isinstance(o, Rejected)], f"not rejected: {context}"
    assert not ready.writes, f"persisted something: {context}"
    assert _fingerprint(dest) == before, f"state changed: {context}"
    assert _rejections(dest) == count + 1, f"not counted: {context}"


@pytest.mark.parametrize("role", ["replica", "participant", "client"])
@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 10_000), variant=st.sampled_from(VARIANTS), seed=st.integers(0, 2**32))
def test_hostile_bytes_are_rejected_counted_and_change_nothing(role, index, variant, seed):
    feed(role, index, variant, seed)


@pytest.mark.parametrize("role", ["replica", "participant", "client"])
def test_every_variant_and_every_captured_kind_of_message(role):
    """Deterministic sweep: each variant on each kind of message a role receives, including one
    truly oversized payload (past the 8 MiB envelope limit) per role."""
    kinds: dict[str, int] = {}
    for i, (_, _, payload) in enumerate(BY_ROLE[role]):
        kinds.setdefault(decode(decode(payload, Envelope).body).__class__.__name__, i)
    assert len(kinds) >= (1 if role == "client" else 2), kinds
    for index in kinds.values():
        for j, variant in enumerate(VARIANTS):
            feed(role, index, variant, seed=index * 31 + j, oversized=(variant == "oversized" and index == 0))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=400), st.sampled_from(sorted(ROLE)))
def test_random_bytes_to_any_party(data, party):
    node = WORLD.sim.node(party)
    before, count = _fingerprint(party), _rejections(party)
    node.receive("fuzzer", data)
    ready = node.take_ready()
    assert not ready.writes and _fingerprint(party) == before and _rejections(party) == count + 1


def test_the_world_still_works_after_the_fuzzing():
    """Every party kept serving: a fresh transaction commits after all the hostile input above."""
    txn = WORLD.submit(WORLD.clients[0], [Op.add("db-0", "acct:0", 1), Op.add("db-1", "acct:0", -1, min=0)])
    WORLD.sim.run_until(lambda: WORLD.history[txn].result is not None and WORLD.quiescent(), 5_000)
    assert WORLD.history[txn].result is not None and WORLD.history[txn].result.committed
    assert not WORLD.violations(), WORLD.violations()


def test_negative_control_a_replica_that_skips_signature_checks_is_caught(monkeypatch):
    """With the replica's signature verification disabled, a message resealed by the wrong party
    is accepted: the property above fails."""
    replica = WORLD.sim.node("R1")
    monkeypatch.setattr(replica.keys, "verify", lambda sender, body, sig: True)
    votes = [i for i, (s, d, p) in enumerate(BY_ROLE["replica"])
             if d == "R1" and s in WORLD.replicas
             and decode(decode(p, Envelope).body).__class__.__name__ in ("Prepare", "Commit", "Checkpoint")]
    failures = 0
    for index in votes[:20]:
        try:
            feed("replica", index, "resealed-by-other", seed=index)
        except AssertionError:
            failures += 1
    assert failures > 0
