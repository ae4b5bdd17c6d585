"""The catalogue of Byzantine behaviours: what a faulty replica does to the messages it sends.

A behaviour is a message transformer ``fn(dest, payload: bytes) -> iterable of (dest, payload)``
applied by the host (the simulator, or a Ray replica actor) to every message its replica sends.
It may drop, change, duplicate, redirect, hold back or invent messages. That one signature is the
public API for attacks: an operator writes a new one in a shell and ships it to a live replica
(``cluster.chaos.byzantine(i, fn)``).

Behaviours are built by factories, ``factory(*, keys, config, rng) -> behaviour``, collected in
``CATALOGUE`` and made by name with ``make_behaviour``. ``keys`` is the faulty replica's OWN key
ring: a behaviour can re-sign a modified message as itself, but can never produce another party's
signature or MAC, which is exactly the power the fault model gives a Byzantine replica. Messages
it cannot open (a client's request it forwards, anything not its own) pass through unchanged, or
are corrupted blindly.

Rules of this module: pure (no clock: a behaviour that "waits" counts the messages it sees; no
global random: the injected ``rng``), and never raises on any input, because it runs inside a
replica's send path.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Iterable

import msgspec

from dtm_ray.crypto import Envelope, KeyRing, seal_mac, seal_signed
from dtm_ray.errors import ConfigError, DtmError, RemoteProtocolError
from dtm_ray.node import Outgoing
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import (
    Commit, NewView, PrePrepare, Prepare, Reply, StateReply, ViewChange, batch_digest,
)
from dtm_ray.wire import MAX_MESSAGE_BYTES, decode, encode

Behaviour = Callable[[str, bytes], Iterable[Outgoing]]
Factory = Callable[..., Behaviour]


# ---------------------------------------------------------------------------------------------
# Opening and re-sealing one's own messages


def open_own(keys: KeyRing, payload: bytes) -> tuple[Envelope, Any] | None:
    """The envelope and inner message of a message ``keys.me`` sealed, or None if it is not one
    (somebody else's envelope being forwarded, or bytes that do not decode)."""
    try:
        env = decode(payload, Envelope)
        if env.sender != keys.me:
            return None
        return env, decode(env.body)
    except RemoteProtocolError:
        return None


def reseal(keys: KeyRing, dest: str, msg: Any) -> bytes:
    """Seal ``msg`` as ``keys.me`` the way a correct replica would: replica protocol messages are
    signed, replies and state transfer are MAC'd to their destination."""
    if isinstance(msg, (Reply, StateReply)):
        return seal_mac(keys, dest, msg)
    return seal_signed(keys, msg)


def _flip_bit(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return b"\x01"
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


# ---------------------------------------------------------------------------------------------
# The behaviours


def mute(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """Says nothing at all (a crash that nobody can tell from slowness)."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        return ()

    return behaviour


def corrupt_auth(*, keys: KeyRing, config: PbftConfig, rng: random.Random, rate: float = 0.5) -> Behaviour:
    """Flips a bit of the signature or MAC of a share (``rate``) of its messages: receivers must
    reject them (and cannot blame the sender: anybody could have flipped that bit)."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        if rng.random() >= rate:
            return [(dest, payload)]
        try:
            env = decode(payload, Envelope)
        except RemoteProtocolError:
            return [(dest, _flip_bit(payload, rng))]
        return [(dest, encode(Envelope(env.sender, env.body, _flip_bit(env.auth, rng))))]

    return behaviour


def wrong_digest(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """Prepares and commits a digest that matches no batch, and pre-prepares a batch under a
    digest that is not its own; all validly signed by itself."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        if opened is None or not isinstance(opened[1], (PrePrepare, Prepare, Commit)):
            return [(dest, payload)]
        msg = opened[1]
        bogus = bytes(rng.getrandbits(8) for _ in range(len(msg.digest) or 32))
        return [(dest, reseal(keys, dest, msgspec.structs.replace(msg, digest=bogus)))]

    return behaviour


def wrong_result(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """Lies to clients: every REPLY carries another result, validly MAC'd by itself (a client
    must accept only f+1 matching replies, so one liar cannot change what it accepts)."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        if opened is None or not isinstance(opened[1], Reply):
            return [(dest, payload)]
        lie = _flip_bit(opened[1].result, rng) if rng.random() < 0.5 else rng.randbytes(8)
        return [(dest, reseal(keys, dest, msgspec.structs.replace(opened[1], result=lie)))]

    return behaviour


def replay(*, keys: KeyRing, config: PbftConfig, rng: random.Random, memory: int = 64,
           rate: float = 0.5) -> Behaviour:
    """Sends every message, plus (``rate``) old messages of its own again, possibly to another
    destination: stale votes, old checkpoints, replies to requests long answered."""
    history: deque[bytes] = deque(maxlen=memory)

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        out = [(dest, payload)]
        if history and rng.random() < rate:
            old_dest = rng.choice(config.replicas) if rng.random() < 0.5 else dest
            out.append((old_dest, rng.choice(history)))
        history.append(payload)
        return out

    return behaviour


def stale_view(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """Stays in the past: every message that names a view names an older one (the lowest view it
    has seen, or one below the real one), re-signed; it ignores view changes."""
    state = {"stuck": None}

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        if opened is None:
            return [(dest, payload)]
        msg = opened[1]
        field = _view_field(msg)
        if field is None:
            return [(dest, payload)]
        view = getattr(msg, field)
        if state["stuck"] is None:
            state["stuck"] = view
        stale = min(state["stuck"], view - 1) if view > 0 else None
        if stale is None or stale < 0:
            return [(dest, payload)]
        return [(dest, reseal(keys, dest, msgspec.structs.replace(msg, **{field: stale})))]

    return behaviour


def future_view(*, keys: KeyRing, config: PbftConfig, rng: random.Random, rate: float = 0.3) -> Behaviour:
    """Pushes for views that nobody asked for: a share (``rate``) of its messages that name a view
    name a later one instead (VIEW-CHANGEs for views far ahead included), re-signed. One faulty
    replica must not be able to drag the others into a view change (PBFT joins at f+1)."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        field = _view_field(opened[1]) if opened is not None else None
        if field is None or rng.random() >= rate:
            return [(dest, payload)]
        ahead = getattr(opened[1], field) + rng.randint(1, 5)
        return [(dest, reseal(keys, dest, msgspec.structs.replace(opened[1], **{field: ahead})))]

    return behaviour


def selective(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """Talks to only some replicas (a fixed random half of its peers, clients always): a
    partition from the inside, so that progress depends on exactly the replicas it starves."""
    peers = [r for r in config.replicas if r != keys.me]
    heard = set(rng.sample(peers, max(1, len(peers) // 2)))

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        if dest in config.replicas and dest not in heard and dest != keys.me:
            return ()
        return [(dest, payload)]

    return behaviour


def _view_field(msg: Any) -> str | None:
    if isinstance(msg, (PrePrepare, Prepare, Commit, NewView, Reply)):
        return "view"
    if isinstance(msg, ViewChange):
        return "new_view"
    return None


def delay(*, keys: KeyRing, config: PbftConfig, rng: random.Random, rate: float = 0.7,
          max_hold: int = 40) -> Behaviour:
    """Holds back a share (``rate``) of its messages and releases each after between 1 and
    ``max_hold`` further messages have gone out (a behaviour has no clock: it counts)."""
    held: list[tuple[int, Outgoing]] = []  # (release at call number, message)
    calls = [0]

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        calls[0] += 1
        now = calls[0]
        due = [m for at, m in held if at <= now]
        held[:] = [(at, m) for at, m in held if at > now]
        if rng.random() < rate:
            held.append((now + rng.randint(1, max_hold), (dest, payload)))
        else:
            due.append((dest, payload))
        return due

    return behaviour


def flood(*, keys: KeyRing, config: PbftConfig, rng: random.Random, per_message: int = 2,
          huge_rate: float = 0.002) -> Behaviour:
    """Sends its real messages plus garbage: random bytes, truncated and extended copies,
    envelopes with junk bodies or junk signatures, oversized fields, and (rarely) a message
    above the wire's size limit."""

    def garbage(dest: str, payload: bytes) -> bytes:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 200))
        if kind == 1:
            return payload[: rng.randrange(max(1, len(payload)))]
        if kind == 2:
            return payload + rng.randbytes(rng.randint(1, 16))  # trailing bytes
        if kind == 3:
            return encode(Envelope(keys.me, rng.randbytes(rng.randint(0, 64)), rng.randbytes(64)))
        if kind == 4:  # a validly signed message of a kind nobody expects here, with a big field
            return seal_signed(keys, Prepare(rng.randint(0, 3), rng.randint(-5, 2**40), rng.randbytes(70_000)))
        return _flip_bit(payload, rng)

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        out = [(dest, payload)]
        for _ in range(rng.randint(0, per_message)):
            out.append((dest, garbage(dest, payload)))
        if rng.random() < huge_rate:
            out.append((dest, b"\x00" * (MAX_MESSAGE_BYTES + 1)))
        return out

    return behaviour


# ---------------------------------------------------------------------------------------------
# Equivocation, alone or in a conspiracy


class Conspiracy:
    """What colluding faulty replicas share: which batch digest each destination was shown for
    each (view, seq), so that every member's PREPAREs and COMMITs back exactly that version.

    A single equivocating primary is a conspiracy of one; with ``f+1`` members (beyond the fault
    model) the split versions each gather a full quorum and safety can break."""

    def __init__(self, replicas: tuple[str, ...], rng: random.Random, window: int = 256,
                 shown_alternative: set[str] | None = None) -> None:
        others = list(replicas)
        rng.shuffle(others)
        self.rng = rng
        self.window = window
        self.replicas = replicas
        self._order = others
        self._shown_alternative = shown_alternative
        self.sealed: dict[tuple[int, int], dict[bytes, bytes]] = {}  # (view, seq) -> digest -> signed PRE-PREPARE
        self.shown: dict[tuple[int, int], dict[str, bytes]] = {}  # (view, seq) -> dest -> digest
        self.last_request: bytes | None = None

    def split_for(self, primary: str) -> set[str]:
        """The backups of ``primary`` shown the alternative batch: a random non-empty proper
        subset of them, fixed per primary (or the set the conspiracy was given)."""
        if self._shown_alternative is not None:
            return self._shown_alternative - {primary}
        backups = [r for r in self._order if r != primary]
        k = max(1, len(backups) // 2)
        return set(backups[:k])

    def remember(self, view: int, seq: int, dest: str, digest: bytes, sealed: bytes) -> None:
        self.shown.setdefault((view, seq), {})[dest] = digest
        self.sealed.setdefault((view, seq), {})[digest] = sealed
        if len(self.shown) > self.window:
            for key in sorted(self.shown)[: len(self.shown) - self.window]:
                del self.shown[key]
                self.sealed.pop(key, None)

    def alternative(self, pp: PrePrepare) -> PrePrepare | None:
        """Another valid-looking batch for the same slot: the requests reversed, one dropped, or
        an old request added; None if no different batch can be made."""
        requests = tuple(pp.requests)
        if len(requests) >= 2:
            alt = tuple(reversed(requests))
        elif len(requests) == 1:
            alt = ()
        elif self.last_request is not None:
            alt = (self.last_request,)
        else:
            return None
        if requests:
            self.last_request = requests[-1]
        return msgspec.structs.replace(pp, requests=alt, digest=batch_digest(alt, pp.proposals))


def equivocator(keys: KeyRing, config: PbftConfig, conspiracy: Conspiracy) -> Behaviour:
    """A member of ``conspiracy``: as primary it sends one batch to some backups and another to
    the rest, validly signed; as any member it backs each version in its PREPAREs and COMMITs to
    exactly the replicas that were shown it."""

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        if opened is None:
            return [_relayed(dest, payload)]
        msg = opened[1]
        if isinstance(msg, PrePrepare):
            return [_preprepare_for(dest, msg, payload)]
        if isinstance(msg, (Prepare, Commit)):
            shown = conspiracy.shown.get((msg.view, msg.seq), {}).get(dest)
            if shown is not None and shown != msg.digest:
                return [(dest, reseal(keys, dest, msgspec.structs.replace(msg, digest=shown)))]
        return [(dest, payload)]

    def _relayed(dest: str, payload: bytes) -> Outgoing:
        """A correct core relays the primary's PRE-PREPARE to a peer that voted for another
        digest (to expose an equivocation): a member relays the version that peer was shown."""
        try:
            pp = decode(decode(payload, Envelope).body)
        except RemoteProtocolError:
            return dest, payload
        if isinstance(pp, PrePrepare):
            shown = conspiracy.shown.get((pp.view, pp.seq), {}).get(dest)
            if shown is not None and shown != pp.digest:
                return dest, conspiracy.sealed[(pp.view, pp.seq)][shown]
        return dest, payload

    alternatives: dict[tuple[int, int], PrePrepare | None] = {}

    def _preprepare_for(dest: str, pp: PrePrepare, payload: bytes) -> Outgoing:
        slot = (pp.view, pp.seq)
        if slot not in alternatives:
            alternatives[slot] = conspiracy.alternative(pp)
            if len(alternatives) > conspiracy.window:
                del alternatives[min(alternatives)]
        alt = alternatives[slot]
        if alt is None or dest not in conspiracy.split_for(keys.me):
            conspiracy.remember(pp.view, pp.seq, dest, pp.digest, payload)
            return dest, payload
        sealed = reseal(keys, dest, alt)
        conspiracy.remember(pp.view, pp.seq, dest, alt.digest, sealed)
        return dest, sealed

    return behaviour


def equivocate(*, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """As primary, different PRE-PREPAREs (different batches, different digests) to different
    backups, validly signed, and its own votes tailored to match what each was shown."""
    return equivocator(keys, config, Conspiracy(config.replicas, rng))


def colluding_equivocators(keyrings: dict[str, KeyRing], config: PbftConfig, rng: random.Random,
                           shown_alternative: set[str] | None = None) -> dict[str, Behaviour]:
    """Behaviours for several replicas that equivocate together (one shared ``Conspiracy``);
    ``shown_alternative`` names the replicas shown the alternative batch (default: random half).
    Members back each version only where it was shown, so no correct replica holds two conflicting
    messages of one member unless correct replicas compare notes."""
    conspiracy = Conspiracy(config.replicas, rng, shown_alternative=shown_alternative)
    return {name: equivocator(keys, config, conspiracy) for name, keys in keyrings.items()}


# ---------------------------------------------------------------------------------------------
# The catalogue


CATALOGUE: dict[str, Factory] = {
    "mute": mute,
    "equivocate": equivocate,
    "corrupt-auth": corrupt_auth,
    "wrong-digest": wrong_digest,
    "wrong-result": wrong_result,
    "replay": replay,
    "stale-view": stale_view,
    "future-view": future_view,
    "selective": selective,
    "delay": delay,
    "flood": flood,
}

PBFT_BEHAVIOURS: tuple[str, ...] = tuple(CATALOGUE)  # the replica-protocol attacks (before txn ones join)


def make_behaviour(name: str, *, keys: KeyRing, config: PbftConfig, rng: random.Random) -> Behaviour:
    """The behaviour ``name`` of the catalogue, for the replica that owns ``keys``. Names joined
    by ``+`` compose, left first: ``"equivocate+delay"`` equivocates, then holds messages back."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in CATALOGUE]
    if unknown:
        raise ConfigError(f"unknown Byzantine behaviour {unknown[0]!r}; known: {', '.join(sorted(CATALOGUE))}")
    return chain(*(guarded(CATALOGUE[p](keys=keys, config=config, rng=rng)) for p in parts))


def guarded(behaviour: Behaviour) -> Behaviour:
    """``behaviour``, except that a message it cannot transform (e.g. a reply redirected to a
    party it shares no MAC key with) goes out unchanged instead of raising in the send path."""

    def safe(dest: str, payload: bytes) -> Iterable[Outgoing]:
        try:
            return list(behaviour(dest, payload))
        except DtmError:
            return [(dest, payload)]

    return safe


def chain(*behaviours: Behaviour) -> Behaviour:
    """Apply ``behaviours`` in order to every message (each to every output of the previous)."""
    if len(behaviours) == 1:
        return behaviours[0]

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        out: list[Outgoing] = [(dest, payload)]
        for b in behaviours:
            out = [o for d, p in out for o in b(d, p)]
        return out

    return behaviour


# The transaction layer's behaviours (``dtm_ray.txn.byzantine``: forge-decision, forge-votes on a
# replica; equivocate-vote on a participant), registered here so every host finds them by name.
from dtm_ray.txn.byzantine import PARTICIPANT_CATALOGUE, TXN_CATALOGUE  # noqa: E402

CATALOGUE.update(TXN_CATALOGUE)
CATALOGUE.update(PARTICIPANT_CATALOGUE)
