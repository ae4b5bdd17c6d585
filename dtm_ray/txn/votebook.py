"""What one coordinator replica has seen of the participants' votes: soft state, never replicated.

Participants send signed vote batches to every replica (``VoteBatch``). The vote book checks each
batch once (``evidence.VoteBatches`` caches what it verified), files every vote under its
transaction, keeps votes for transactions this replica has not executed yet (``EarlyVotes``), and
turns two different signed votes of one participant for one transaction into evidence of
equivocation, whether both came to this replica or the second one arrived inside a DECIDE.

Nothing here decides anything: the coordinator (``txn.coordinator``) reads the votes to build and
check DECIDEs, and an outcome is fixed only by the signed votes a DECIDE itself carries.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from dtm_ray.crypto import Envelope, KeyRing
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.txn.early_votes import EarlyVotes
from dtm_ray.txn.evidence import OpenedBatch, VoteBatches, contradictions, proven_votes
from dtm_ray.txn.messages import PendingTxn, Vote, VoteBatch
from dtm_ray.txn.proposals import Due
from dtm_ray.wire import encode

MAX_COUNTED_SENDERS = 1_000  # senders counted by name in ``rejected``
MAX_EVIDENCE = 1_000  # equivocating-vote proofs kept in ``evidence``

FiledVote = tuple[Vote, bytes]  # a vote and the signed batch that carried it (the proof)


class VoteBook:
    def __init__(self, replica_id: str, keys: KeyRing, participants, emit: Callable[[object], None]) -> None:
        self.replica_id = replica_id
        self._emit = emit  # audit events and evidence for the host
        self._votes: dict[str, dict[str, FiledVote]] = {}  # txn id -> participant -> its vote
        self.early = EarlyVotes(participants)
        self._batches = VoteBatches(keys, participants)
        self.evidence: list[Evidence] = []  # one per (participant, transaction), at most MAX_EVIDENCE
        self._evidence_keys: set[tuple[str, str]] = set()
        self.rejected: Counter[str] = Counter()  # per sender, at most MAX_COUNTED_SENDERS (+ "<others>")

    def of(self, txn_id: str) -> dict[str, FiledVote]:
        """The votes filed for ``txn_id``, by participant (empty: none yet)."""
        return self._votes.get(txn_id, {})

    def on_batch(self, env: Envelope, batch: VoteBatch, pending: dict[str, PendingTxn],
                 was_executed: Callable[[str], bool]) -> list[str]:
        """File a signed batch's votes; the transactions that got a new vote."""
        envelope = encode(env)  # canonical: the very bytes the participant sent, kept as evidence
        if self._batches.received(envelope, env, batch) is None:
            self.reject(env.sender, f"bad signature on VoteBatch from {env.sender!r}")
            return []
        changed = []
        for vote in batch.votes:
            txn = pending.get(vote.txn_id)
            if txn is None:
                if not was_executed(vote.txn_id):
                    self.early.keep(env.sender, vote, envelope, len(batch.votes))
            elif self.file(txn, env.sender, vote, envelope):
                changed.append(txn.txn_id)
        return changed

    def file(self, txn: PendingTxn, participant: str, vote: Vote, envelope: bytes) -> bool:
        """Whether this is ``participant``'s first vote for ``txn`` (a different second one is
        evidence; the same one resent is nothing)."""
        if not any(s.participant == participant and s.pseq == vote.pseq for s in txn.slots):
            self.reject(participant, f"vote for {txn.txn_id} at pseq {vote.pseq}, not a slot of {participant!r}")
            return False
        votes = self._votes.setdefault(txn.txn_id, {})
        previous = votes.get(participant)
        if previous is None:
            votes[participant] = (vote, envelope)
            return True
        if (previous[0].yes, previous[0].reads) != (vote.yes, vote.reads):
            self._equivocation(txn.txn_id, participant, (previous[1], envelope))
        return False

    def adopt_early(self, txn: PendingTxn) -> bool:
        """The votes that came before ``txn`` executed here, filed now: whether there was any."""
        filed = False
        for slot in txn.slots:
            early = self.early.take(slot.participant, txn.txn_id)
            if early is not None and self.file(txn, slot.participant, *early):
                filed = True
        return filed

    def decision(self, txn: PendingTxn) -> Due | None:
        """What the filed votes decide, with the signed batches that prove it: ABORT on a NO,
        COMMIT on a YES from every participant, None while a vote is missing."""
        votes = self.of(txn.txn_id)
        for slot in txn.slots:
            vote = votes.get(slot.participant)
            if vote is not None and not vote[0].yes:
                return (txn.txn_id, False, (vote[1],))
        if len(votes) == len(txn.slots):
            return (txn.txn_id, True, tuple(dict.fromkeys(votes[s.participant][1] for s in txn.slots)))
        return None

    def proven(self, txn: PendingTxn, commit: bool, envelopes) -> dict[str, Vote]:
        """The votes for ``txn`` that the signed batches ``envelopes`` prove."""
        return proven_votes(self._batches, txn, commit, envelopes)

    def compare(self, txn: PendingTxn, envelopes) -> None:
        """A DECIDE carries signed votes: one that differs from the vote this replica filed from
        the same participant for the same slot proves equivocation (a replica that saw only one
        of the two batches learns of the other here)."""
        for participant, proof in contradictions(self._batches, txn, self._votes.get(txn.txn_id), envelopes):
            self._equivocation(txn.txn_id, participant, proof)

    def open(self, envelope: bytes) -> OpenedBatch | None:
        """A signed batch checked (None: forged or not a vote batch)."""
        return self._batches.open(envelope)

    def drop(self, txn_id: str) -> None:
        self._votes.pop(txn_id, None)

    def keep_only(self, txn_ids) -> None:
        self._votes = {t: v for t, v in self._votes.items() if t in txn_ids}

    def reject(self, sender: str, reason: str) -> None:
        """Refused input from ``sender`` (no proof): counted, and reported to the host as a
        ``Rejected`` output, which the replica counts per sender in its bounded table."""
        if sender not in self.rejected and len(self.rejected) >= MAX_COUNTED_SENDERS:
            sender = "<others>"  # the transport's sender is unauthenticated: bound what it can grow
        self.rejected[sender] += 1
        self._emit(Rejected(self.replica_id, sender, reason))

    def _equivocation(self, txn_id: str, participant: str, proof: tuple[bytes, bytes]) -> None:
        """Two different signed votes of ``participant`` for one transaction: kept once (a
        resent batch proves nothing new) and reported to the host as an ``Evidence`` output."""
        key = (participant, txn_id)
        if key in self._evidence_keys or len(self._evidence_keys) >= MAX_EVIDENCE:
            return
        self._evidence_keys.add(key)
        evidence = Evidence(self.replica_id, participant, "equivocating-vote", proof, txn_id)
        self.evidence.append(evidence)
        self._emit(evidence)
