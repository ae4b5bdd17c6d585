"""Hostile inputs for the simulator and the fuzzers: bytes and requests an attacker can send.

Everything here builds what an adversary *could* put on the wire with the keys it holds, and
nothing more: a hostile client signs with its own key, a faulty replica with its own, a fuzzer
with none. The tests (``tests/test_hostile_*.py``) and the atheris targets (``fuzz/``) feed
these to every party's ``receive`` and check that the party rejects them, counts them, keeps
its state, and keeps serving everybody else.

- ``hostile_variants``: one captured, genuine message turned into each kind of malformed or
  misauthenticated message (random, truncated, bit-flipped, oversized, deeply nested,
  wrong-type, resealed by the wrong party, sealed by a client instead of a replica);
- ``client_request`` and the ``*_request`` helpers: requests a hostile client crafts
  (replays, forged authenticators, impersonation, oversized, unknown participant or op);
- ``Recorder``: a pass-through behaviour that keeps every message a party sends (traffic to
  mutate);
- ``FuzzingSender``: a simulator action that injects hostile bytes at a steady rate;
- ``honest_throughput``: committed transactions of the honest clients per virtual second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import msgpack

from dtm_ray.crypto import Envelope, KeyRing, seal_signed
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.node import Outgoing
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import Checkpoint, Reply, Request, seal_request
from dtm_ray.txn.messages import AckBatch, DecisionBatch, DecisionItem, TxnRequest, Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.wire import MAX_MESSAGE_BYTES, decode, encode

# The kinds of hostile bytes ``hostile_variants`` makes, in a fixed order (reports list them).
VARIANTS = ("random", "truncated", "bit-flip", "trailing-bytes", "oversized", "deeply-nested",
            "wrong-type", "resealed-by-other", "sealed-by-client", "claimed-by-other")

DEEP = 200  # nesting depth of the deeply nested variant (the decoder allows MAX_VALUE_DEPTH = 8)


# ---------------------------------------------------------------------------------------------
# Malformed and misauthenticated bytes


def nested(depth: int) -> bytes:
    """msgpack of ``[[[...[0]...]]]``, ``depth`` levels deep."""
    value: object = 0
    for _ in range(depth):
        value = [value]
    return msgpack.packb(value)


def wrong_type_for(target_kind: str) -> object:
    """A well-formed message the target never expects from its peers."""
    if target_kind == "client":
        return Checkpoint(1, b"\0" * 32)
    if target_kind == "participant":
        return Reply(0, "c0", 1, b"")
    return DecisionBatch((DecisionItem("c0:1", 0, True),))  # a replica never receives decisions


def hostile_variant(kind: str, rng: random.Random, payload: bytes, *, target_kind: str,
                    impostor: KeyRing, client: KeyRing, oversized: bool = True) -> bytes:
    """``payload`` (a genuine envelope) turned into hostile bytes of ``kind`` (see ``VARIANTS``).

    ``impostor`` is a party other than the payload's sender (its key is not the sender's);
    ``client`` is a client's key ring (a client may never speak for a replica or participant)."""
    if kind == "random":
        return rng.randbytes(rng.randrange(0, 300))
    if kind == "truncated":
        return payload[: rng.randrange(len(payload))]
    if kind == "bit-flip":
        b = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b) if bytes(b) != payload else payload[:-1]
    if kind == "trailing-bytes":
        return payload + rng.randbytes(rng.randrange(1, 16))
    if kind == "oversized":
        if oversized:
            return payload + bytes(MAX_MESSAGE_BYTES)
        return payload + bytes(1024)
    env = decode(payload, Envelope)
    if kind == "deeply-nested":
        return encode(Envelope(env.sender, nested(DEEP), impostor.sign(nested(DEEP))))
    if kind == "wrong-type":
        return seal_signed(impostor, wrong_type_for(target_kind))
    if kind == "resealed-by-other":  # the sender's name, someone else's signature over its body
        return encode(Envelope(env.sender, env.body, impostor.sign(env.body)))
    if kind == "sealed-by-client":  # a client's valid signature on a message only a peer may send
        return seal_signed(client, decode(env.body))
    if kind == "claimed-by-other":  # the body and auth unchanged, another sender claimed
        return encode(Envelope(impostor.me, env.body, env.auth))
    raise ValueError(f"unknown variant {kind!r}")


def is_rejectable(payload: bytes) -> bool:
    """Does the strict decoder already refuse these bytes as an envelope? (For reports.)"""
    try:
        decode(payload, Envelope)
        return False
    except RemoteProtocolError:
        return True


# ---------------------------------------------------------------------------------------------
# Requests a hostile client crafts


def client_request(keys: KeyRing, config: PbftConfig, request_id: int, ops: list[Op], *,
                   client: str | None = None) -> bytes:
    """A request sealed with ``keys`` (the attacker's own), naming ``client`` (default: itself)."""
    operation = encode(TxnRequest(tuple(ops)))
    req = Request(client or keys.me, request_id, operation)
    return seal_request(keys, config.replicas, config.auth_scheme, req)


def forged_request(keys: KeyRing, config: PbftConfig, request_id: int, ops: list[Op],
                   rng: random.Random) -> bytes:
    """A request of ``keys.me`` whose authenticator is random bytes of the right length."""
    genuine = decode(client_request(keys, config, request_id, ops), Envelope)
    return encode(Envelope(genuine.sender, genuine.body, rng.randbytes(len(genuine.auth))))


def impersonating_request(attacker: KeyRing, victim: str, config: PbftConfig, request_id: int,
                          ops: list[Op]) -> bytes:
    """A request claiming to be ``victim``'s, signed by ``attacker`` (both outer and inner names)."""
    body = encode(Request(victim, request_id, encode(TxnRequest(tuple(ops)))))
    return encode(Envelope(victim, body, attacker.sign(body)))


def oversized_ops(participant: str, config: PbftConfig) -> list[Op]:
    """One put whose value alone exceeds ``max_request_bytes``."""
    return [Op.put(participant, "big", "x" * (config.max_request_bytes + 1))]


# ---------------------------------------------------------------------------------------------
# Hostile services: what a participant can send with its own key


def vote_batch(keys: KeyRing, votes: Iterable[Vote]) -> bytes:
    return seal_signed(keys, VoteBatch(keys.me, tuple(votes)))


def ack_batch(keys: KeyRing, dest: str, items: Iterable[DecisionItem]) -> bytes:
    from dtm_ray.crypto import seal_mac

    return seal_mac(keys, dest, AckBatch(tuple(items)))


# ---------------------------------------------------------------------------------------------
# Simulator helpers


@dataclass
class Recorder:
    """A pass-through behaviour that keeps what a party sends: ``(src, dest, payload)``."""

    src: str
    seen: list[tuple[str, str, bytes]]

    def __call__(self, dest: str, payload: bytes) -> Iterable[Outgoing]:
        self.seen.append((self.src, dest, payload))
        return [(dest, payload)]


@dataclass
class FuzzingSender:
    """Injects one hostile message every ``period_ms`` into a random target, as ``name``.

    ``make(rng, dest) -> bytes`` builds the message; ``sent`` counts per destination."""

    name: str
    targets: list[str]
    make: Callable[[random.Random, str], bytes]
    rng: random.Random
    period_ms: int = 2
    until_ms: int = 10**9
    sent: dict[str, int] = field(default_factory=dict)

    def start(self, sim) -> None:
        sim.schedule(sim.now_ms, self._fire)

    def _fire(self, sim) -> None:
        if sim.now_ms >= self.until_ms:
            return
        dest = self.rng.choice(self.targets)
        sim.inject(self.name, dest, self.make(self.rng, dest))
        self.sent[dest] = self.sent.get(dest, 0) + 1
        sim.schedule(sim.now_ms + self.period_ms, self._fire)


def honest_throughput(world, clients: Iterable[str], start_ms: int, end_ms: int) -> float:
    """Committed transactions of ``clients`` completed in [start_ms, end_ms), per virtual second."""
    clients = set(clients)
    done = sum(1 for e in world.history.values()
               if e.client in clients and e.result is not None and e.result.committed
               and e.end_ms is not None and start_ms <= e.end_ms < end_ms)
    return done * 1000.0 / (end_ms - start_ms)
