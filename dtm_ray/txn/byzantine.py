"""Byzantine behaviours of the transaction layer, as message transformers (see ``dtm_ray.faults``).

Same shape as the catalogue: ``factory(*, keys, config, rng) -> fn(dest, payload) -> iterable of
(dest, payload)``, where ``keys`` is the faulty party's OWN key ring (it can MAC and sign as
itself, never as anybody else) and ``config`` anything with ``replicas`` (a ``PbftConfig`` or a
``TxnConfig``). Pure, never raising: they run in a party's send path.

- ``forge-decision`` (a replica): tells participants outcomes nobody decided: every decision it
  sends is flipped, and every PREPARE it sends is followed by a made-up decision. A participant
  acts on f+1 matching decisions, so one liar (or f) changes nothing.
- ``forge-votes`` (a primary): proposes COMMIT without the votes: every DECIDE it orders becomes
  COMMIT (an ABORT's NO vote kept as "evidence", in a ``Decide`` or a ``DecideBatch``), and COMMITs without any evidence are added for
  transactions it has prepared. Correct backups REJECT them (evidence), and replace it.
- ``equivocate-vote`` (a participant): votes YES to some replicas and NO to the others, each
  validly signed. It can delay its own transactions, never split them: whichever DECIDE is
  ordered first is the outcome everywhere, and replicas seeing both votes keep them as evidence.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable

import msgspec

from dtm_ray.crypto import Envelope, KeyRing, seal_mac, seal_signed
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.node import Outgoing
from dtm_ray.pbft.messages import PrePrepare, batch_digest
from dtm_ray.txn.messages import Decide, DecideBatch, DecisionBatch, DecisionItem, PrepareBatch, Vote, VoteBatch
from dtm_ray.wire import decode, encode

Behaviour = Callable[[str, bytes], Iterable[Outgoing]]


def _open_own(keys: KeyRing, payload: bytes) -> Any | None:
    try:
        env = decode(payload, Envelope)
        return decode(env.body) if env.sender == keys.me else None
    except RemoteProtocolError:
        return None


def _decode_or_none(raw: bytes, expected) -> Any | None:
    try:
        return decode(raw, expected)
    except RemoteProtocolError:
        return None


def forge_decision(*, keys: KeyRing, config: Any, rng: random.Random) -> Behaviour:
    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        msg = _open_own(keys, payload)
        if isinstance(msg, DecisionBatch):
            flipped = tuple(msgspec.structs.replace(i, commit=not i.commit) for i in msg.items)
            return [(dest, seal_mac(keys, dest, DecisionBatch(flipped)))]
        if isinstance(msg, PrepareBatch):
            made_up = tuple(DecisionItem(i.txn_id, i.pseq, rng.random() < 0.5) for i in msg.items)
            return [(dest, payload), (dest, seal_mac(keys, dest, DecisionBatch(made_up)))]
        return [(dest, payload)]

    return behaviour


def forge_votes(*, keys: KeyRing, config: Any, rng: random.Random, memory: int = 64) -> Behaviour:
    prepared: deque[str] = deque(maxlen=memory)  # transactions it sent PREPAREs for
    forged: OrderedDict[bytes, bytes] = OrderedDict()  # original PRE-PREPARE -> forged one (same for all)

    def forge(pp: PrePrepare) -> bytes | None:
        proposals, decided = [], set()
        for raw in pp.proposals:
            parsed = _decode_or_none(raw, (DecideBatch, Decide))
            if isinstance(parsed, Decide):
                parsed = msgspec.structs.replace(parsed, commit=True)
                decided.add(parsed.txn_id)
            elif isinstance(parsed, DecideBatch):
                parsed = msgspec.structs.replace(parsed, decisions=tuple(
                    msgspec.structs.replace(d, commit=True) for d in parsed.decisions))
                decided.update(d.txn_id for d in parsed.decisions)
            proposals.append(raw if parsed is None else encode(parsed))
        extra = [encode(Decide(t, True, ())) for t in list(prepared)[-3:] if t not in decided]
        proposals.extend(extra)
        if tuple(proposals) == pp.proposals:
            return None
        fake = msgspec.structs.replace(pp, proposals=tuple(proposals), digest=batch_digest(pp.requests, tuple(proposals)))
        return seal_signed(keys, fake)

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        msg = _open_own(keys, payload)
        if isinstance(msg, PrepareBatch):
            prepared.extend(i.txn_id for i in msg.items if i.txn_id not in prepared)
        elif isinstance(msg, PrePrepare):
            if payload not in forged:
                try:
                    forged[payload] = forge(msg) or payload
                except RemoteProtocolError:
                    forged[payload] = payload
                while len(forged) > memory:
                    forged.popitem(last=False)
            return [(dest, forged[payload])]
        return [(dest, payload)]

    return behaviour


def equivocate_vote(*, keys: KeyRing, config: Any, rng: random.Random, rate: float = 0.5) -> Behaviour:
    replicas = list(config.replicas)
    lies: OrderedDict[bytes, tuple[frozenset[str], bytes]] = OrderedDict()  # batch -> (told NO, its NO)

    def lie_for(payload: bytes, batch: VoteBatch) -> tuple[frozenset[str], bytes]:
        """For a share (``rate``) of its vote batches, half the replicas (drawn anew) hear NO."""
        if payload not in lies:
            told_no = frozenset(rng.sample(replicas, len(replicas) // 2)) if rng.random() < rate else frozenset()
            votes = tuple(Vote(v.txn_id, v.pseq, False, [], "equivocating participant") if v.yes else v
                          for v in batch.votes)
            lies[payload] = (told_no, seal_signed(keys, VoteBatch(batch.participant, votes)) if told_no else payload)
            while len(lies) > 64:
                lies.popitem(last=False)
        return lies[payload]

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        msg = _open_own(keys, payload)
        if not isinstance(msg, VoteBatch):
            return [(dest, payload)]
        told_no, no = lie_for(payload, msg)
        return [(dest, no if dest in told_no else payload)]

    return behaviour


TXN_CATALOGUE = {
    "forge-decision": forge_decision,
    "forge-votes": forge_votes,
}
PARTICIPANT_CATALOGUE = {
    "equivocate-vote": equivocate_vote,
}
