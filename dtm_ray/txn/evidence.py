"""Signed vote batches as evidence: each verified once per replica, then looked up by digest.

A participant signs one ``VoteBatch`` per flush; the same envelope proves every vote in it, and
arrives at a replica several times (directly from the participant, then inside the DECIDE
proposals of the primary, checked at validation and again at execution). ``VoteBatches`` keeps
what each envelope (by digest) turned out to be: the batch's votes indexed by transaction, or
None when it is not a valid signed vote batch of a configured participant. The cache is bounded
(``max_entries``, least recently used first out); a batch that falls out is verified again if it
comes back, so the bound costs time, never correctness.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dtm_ray.crypto import Envelope, KeyRing, digest
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.txn.messages import PendingTxn, Vote, VoteBatch
from dtm_ray.wire import decode

VERIFIED_CACHE = 4096  # vote batches whose signature this replica checked (by digest)


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    participant: str
    votes: dict[str, Vote]  # txn_id -> its vote in this batch (the last one if repeated)

    def vote_for(self, txn_id: str, pseq: int) -> Vote | None:
        vote = self.votes.get(txn_id)
        return vote if vote is not None and vote.pseq == pseq else None


def opened(batch: VoteBatch) -> OpenedBatch:
    return OpenedBatch(batch.participant, {v.txn_id: v for v in batch.votes})


class VoteBatches:
    def __init__(self, keys: KeyRing, participants, max_entries: int = VERIFIED_CACHE) -> None:
        self.keys = keys
        self.participants = frozenset(participants)
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, OpenedBatch | None] = OrderedDict()
        self.verifications = 0  # signatures actually checked (the rest were cache hits)

    def open(self, envelope: bytes) -> OpenedBatch | None:
        """The batch ``envelope`` proves, or None if it is not a valid signed vote batch."""
        key = digest(envelope)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        batch = None
        try:
            env = decode(envelope, Envelope)
            candidate = decode(env.body, VoteBatch)
            if candidate.participant == env.sender and self._verify(env):
                batch = opened(candidate)
        except RemoteProtocolError:
            batch = None
        self._remember(key, batch)
        return batch

    def received(self, envelope: bytes, env: Envelope, batch: VoteBatch) -> OpenedBatch | None:
        """``batch`` arrived from the network as ``env`` (``envelope`` its canonical bytes)."""
        key = digest(envelope)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        valid = batch.participant == env.sender and self._verify(env)
        result = opened(batch) if valid else None
        self._remember(key, result)
        return result

    def _verify(self, env: Envelope) -> bool:
        if env.sender not in self.participants:
            return False
        self.verifications += 1
        return self.keys.verify(env.sender, env.body, env.auth)

    def _remember(self, key: bytes, batch: OpenedBatch | None) -> None:
        self._cache[key] = batch
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)


def proven_votes(batches: VoteBatches, txn: PendingTxn, commit: bool, envelopes) -> dict[str, Vote]:
    """The votes for ``txn`` that the signed batches ``envelopes`` prove, one per participant
    (when an equivocating participant's YES and NO are both shown, the one ``commit`` needs wins)."""
    pseq_of = {s.participant: s.pseq for s in txn.slots}
    found: dict[str, Vote] = {}
    for envelope in envelopes:
        batch = batches.open(envelope)
        if batch is None or batch.participant not in pseq_of:
            continue
        vote = batch.vote_for(txn.txn_id, pseq_of[batch.participant])
        if vote is not None and (batch.participant not in found or vote.yes == commit):
            found[batch.participant] = vote
    return found


def contradictions(batches: VoteBatches, txn: PendingTxn, mine: dict[str, tuple[Vote, bytes]] | None,
                   envelopes):
    """(participant, (my envelope, its envelope)) for each signed vote in ``envelopes`` that
    differs from the one this replica received from that participant for ``txn``'s slot."""
    if not mine:
        return
    pseq_of = {s.participant: s.pseq for s in txn.slots}
    for envelope in envelopes:
        batch = batches.open(envelope)
        if batch is None or batch.participant not in mine:
            continue
        my_vote, my_envelope = mine[batch.participant]
        vote = batch.vote_for(txn.txn_id, pseq_of[batch.participant])
        if vote is not None and (vote.yes, vote.reads) != (my_vote.yes, my_vote.reads):
            yield batch.participant, (my_envelope, envelope)
