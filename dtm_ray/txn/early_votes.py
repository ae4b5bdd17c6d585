"""Votes that arrive before this replica executed their transaction, kept per participant.

A participant may vote before a lagging replica has executed the transaction (the other
replicas' PREPAREs reached it first). Such votes are kept until the transaction executes here,
so the replica need not wait for a resend. What a participant can make a replica keep is bounded
per participant, in entries and in bytes, and the oldest of *that participant's* early votes go
first: a faulty participant flooding votes for transactions that will never exist evicts only
its own, never another participant's.

Bytes: an early vote keeps its signed envelope alive, so each entry is charged its share of the
envelope (``len(envelope) / votes in it``, at least ``MIN_ENTRY_BYTES``).
"""

from __future__ import annotations

from collections import OrderedDict

from dtm_ray.txn.messages import Vote

EARLY_VOTES = 10_000  # per participant: entries
EARLY_VOTE_BYTES = 4 * 1024 * 1024  # per participant: bytes of envelopes kept alive
MIN_ENTRY_BYTES = 64

Entry = tuple[Vote, bytes, int]  # (vote, its signed envelope, bytes charged)


class EarlyVotes:
    def __init__(self, participants, max_entries: int = EARLY_VOTES, max_bytes: int = EARLY_VOTE_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._by_participant: dict[str, OrderedDict[str, Entry]] = {p: OrderedDict() for p in participants}
        self._bytes: dict[str, int] = {p: 0 for p in participants}
        self.evicted = 0

    def keep(self, participant: str, vote: Vote, envelope: bytes, votes_in_envelope: int) -> None:
        queue = self._by_participant.get(participant)
        if queue is None:
            return  # not a configured participant: its votes were refused before this
        self._drop(participant, vote.txn_id)
        charge = max(MIN_ENTRY_BYTES, len(envelope) // max(1, votes_in_envelope))
        queue[vote.txn_id] = (vote, envelope, charge)
        self._bytes[participant] += charge
        while len(queue) > self.max_entries or self._bytes[participant] > self.max_bytes:
            _txn, (_vote, _env, old) = queue.popitem(last=False)
            self._bytes[participant] -= old
            self.evicted += 1

    def take(self, participant: str, txn_id: str) -> tuple[Vote, bytes] | None:
        entry = self._drop(participant, txn_id)
        return None if entry is None else entry[:2]

    def _drop(self, participant: str, txn_id: str) -> Entry | None:
        entry = self._by_participant[participant].pop(txn_id, None)
        if entry is not None:
            self._bytes[participant] -= entry[2]
        return entry

    def count(self, participant: str | None = None) -> int:
        if participant is not None:
            return len(self._by_participant.get(participant, ()))
        return sum(len(q) for q in self._by_participant.values())

    def bytes(self, participant: str) -> int:
        return self._bytes.get(participant, 0)

    def __len__(self) -> int:
        return self.count()
