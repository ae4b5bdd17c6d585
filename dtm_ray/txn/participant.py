"""A participant: one service (a ``kv`` database or a ``queue``) taking part in transactions.

Rules it follows, each enforced in one place below:

1. **f+1 matching, distinct replicas.** It acts on a PREPARE or a decision only once f+1
   replicas sent the same one (``Claims``); a faulty replica alone can neither make it prepare
   something nor apply a decision that was never taken.
2. **Sequence order.** Transactions are accepted strictly in participant-sequence (``pseq``)
   order, and locks are queued in that order (``LockTable``): deterministic locking, so no
   deadlocks and no aborts from conflicts; a transaction runs once it holds all its locks.
3. **Persist, then vote.** Its record (ops, vote, intents) is written before the vote leaves
   (``send_after_persist``); a vote, once cast, is never changed, even after a restart.
4. **Apply once.** A decision is applied once (its record is then deleted and the slot is below
   ``next_pseq``); repeated decisions are only re-acknowledged.
5. **In doubt, ask.** A YES vote still undecided after a while (e.g. after a restart) makes it
   query the replicas, and the answers go through rule 1 like any decision.

Storage layout (besides the data, see ``engine``): ``m/next`` -> next pseq to accept,
``m/counts`` -> [commits, aborts] applied, ``r/<pseq>`` -> ``PreparedRecord``,
``x/<pseq>`` -> ``EarlyDecision`` (a slot decided before this participant reached it).
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import msgspec

from dtm_ray.crypto import KeyRing, open_envelope, open_mac, seal_mac, seal_signed
from dtm_ray.errors import AuthError, ConfigError, RemoteProtocolError
from dtm_ray.node import Outbox, Ready, Storage
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.engine import make_data
from dtm_ray.txn.events import Applied, Voted
from dtm_ray.txn.locks import LockTable
from dtm_ray.txn.messages import (AckBatch, fitting_batches, Cell, DecisionBatch, DecisionItem, EarlyDecision, PrepareBatch,
                                  PreparedRecord, PrepareItem, Query, Vote, VoteBatch)
from dtm_ray.txn.quorum import Claims
from dtm_ray.wire import decode, encode

NEXT_KEY = b"m/next"
COUNTS_KEY = b"m/counts"
RECORD_PREFIX = b"r/"
EARLY_PREFIX = b"x/"
QUERY_AFTER_RESENDS = 3  # an undecided YES vote is in doubt after this many resend periods
RECENT_OUTCOMES = 4_096  # decided slots remembered to spot a late contradicting decision
MAX_COUNTED_SENDERS = 1_000  # senders counted by name in ``rejected`` (the rest as "<others>")


VOTE_BATCH_HEADER = 192  # a signed VoteBatch: envelope, sender names, signature, headers (conservative)


def value_bytes(value) -> int:
    """An upper bound of ``value``'s encoded size."""
    if isinstance(value, (str, bytes)):
        return len(value.encode() if isinstance(value, str) else value) + 5
    if isinstance(value, (list, tuple)):
        return 5 + sum(value_bytes(v) for v in value)
    if isinstance(value, dict):
        return 5 + sum(value_bytes(k) + value_bytes(v) for k, v in value.items())
    return 9  # None, bool, int, float


def vote_bytes(vote: Vote) -> int:
    return 24 + value_bytes(vote.txn_id) + value_bytes(vote.reads) + value_bytes(vote.reason)


def _slot_key(prefix: bytes, pseq: int) -> bytes:
    return prefix + b"%020d" % pseq


def _lock_keys(record: PreparedRecord) -> tuple[str, ...]:
    return tuple(sorted({op.lock_key() for op in record.ops}))


class Participant:
    """A Node: ``receive`` / ``tick`` / ``take_ready``; rebuilt from ``storage`` on construction."""

    def __init__(self, name: str, kind: str, config: TxnConfig, keys: KeyRing, storage: Storage) -> None:
        if config.participants.get(name) != kind:
            raise ConfigError(f"participant {name!r} of kind {kind!r} is not in the configuration "
                              f"({config.participants.get(name)!r})")
        self.node_id = name
        self.kind = kind
        self.config = config
        self.keys = keys
        self._replicas = frozenset(config.replicas)
        self._out = Outbox()
        self._data = make_data(kind, name, storage)
        self._prepares: Claims[PrepareItem] = Claims(self.decision_quorum(), config.claim_bytes)
        self._decisions: Claims[DecisionItem] = Claims(self.decision_quorum())
        self._locks = LockTable()
        self._runnable: list[int] = []
        self._votes_out: dict[int, tuple[Vote, int]] = {}  # pseq -> (vote, its size bound)
        self._vote_dests: set[str] = set()
        self._acks_out: dict[str, dict[int, DecisionItem]] = {}
        self._now: int | None = None
        self._in_doubt_since: dict[int, int] = {}
        self._last_query_ms: int | None = None
        self.evidence: list[Evidence] = []
        self.rejected: Counter[str] = Counter()
        self.contradicted_by: Counter[str] = Counter()  # replica -> decisions it sent that lost to f+1
        self._recent_outcomes: OrderedDict[int, bytes] = OrderedDict()  # pseq -> the decided claim
        self.anomalies: list[str] = []  # decisions that contradict this participant's own records
        self._load(storage)

    def decision_quorum(self) -> int:
        """f+1 (a negative-control test may lower it to show the checkers notice)."""
        return self.config.weak_quorum

    # -- recovery --------------------------------------------------------------------------------
    def _load(self, storage: Storage) -> None:
        raw = storage.get(NEXT_KEY)
        self._next_pseq: int = decode(raw, Cell).value if raw else 0
        raw = storage.get(COUNTS_KEY)
        self._commits, self._aborts = decode(raw, Cell).value if raw else (0, 0)
        self._records: dict[int, PreparedRecord] = {}
        for _key, value in storage.items(RECORD_PREFIX):
            record = decode(value, PreparedRecord)
            self._records[record.pseq] = record
        self._early: dict[int, EarlyDecision] = {}
        for _key, value in storage.items(EARLY_PREFIX):
            early = decode(value, EarlyDecision)
            self._early[early.pseq] = early
        for pseq in sorted(self._records):  # locks re-queued in pseq order, as the first time
            record = self._records[pseq]
            if record.vote is None or record.vote.yes:
                self._locks.enqueue(pseq, _lock_keys(record))
                self._runnable.append(pseq)
        self._run_granted()

    # -- the Node contract -----------------------------------------------------------------------
    def receive(self, sender: str, payload: bytes) -> None:
        try:
            env = open_envelope(payload)
            if env.sender not in self._replicas:
                raise AuthError(f"{env.sender!r} is not a replica")
            msg = open_mac(self.keys, env, (PrepareBatch, DecisionBatch))
        except RemoteProtocolError as exc:
            self._reject(sender, str(exc))
            return
        if isinstance(msg, PrepareBatch):
            for item in msg.items:
                self._on_prepare(env.sender, item)
        else:
            for item in msg.items:
                self._on_decision(env.sender, item)
        self._accept_in_order()
        self._run_granted()

    def tick(self, now_ms: int) -> None:
        if self._now is None:  # the first tick: YES votes recovered from disk start waiting now
            for pseq, record in sorted(self._records.items()):
                if record.vote is not None and record.vote.yes:
                    self._in_doubt_since.setdefault(pseq, now_ms)
        self._now = now_ms
        self._query_in_doubt()

    def take_ready(self) -> Ready:
        if self._votes_out:
            for batch in self._vote_batches():
                sealed = seal_signed(self.keys, batch)
                for dest in sorted(self._vote_dests):
                    self._out.send(dest, sealed)
            self._votes_out.clear()
            self._vote_dests.clear()
        for dest, items in sorted(self._acks_out.items()):
            for batch in fitting_batches(AckBatch, list(items.values())):
                self._out.send(dest, seal_mac(self.keys, dest, batch))
        self._acks_out.clear()
        return self._out.take()

    def _vote_batches(self) -> list[VoteBatch]:
        """The votes to send, in pseq order, cut into signed batches of at most
        ``vote_batch_bytes`` (a single vote larger than that travels alone): a DECIDE carries
        whole batches as evidence, so their size bounds the proposals built from them."""
        batches, votes, size = [], [], VOTE_BATCH_HEADER
        for pseq in sorted(self._votes_out):
            vote, vote_size = self._votes_out[pseq]
            if votes and size + vote_size > self.config.vote_batch_bytes:
                batches.append(VoteBatch(self.node_id, tuple(votes)))
                votes, size = [], VOTE_BATCH_HEADER
            votes.append(vote)
            size += vote_size
        batches.append(VoteBatch(self.node_id, tuple(votes)))
        return batches

    # -- observation -----------------------------------------------------------------------------
    def state(self) -> dict | list:
        """The committed data: a dict for a kv participant, the item list for a queue."""
        return self._data.state()

    def status(self) -> dict:
        in_doubt = sum(1 for r in self._records.values() if r.vote is not None and r.vote.yes)
        return {
            "name": self.node_id, "kind": self.kind, "next_pseq": self._next_pseq,
            "locks": self._locks.locked_keys(), "waiting": self._locks.waiting(),
            "prepared": len(self._records), "in_doubt": in_doubt,
            "applied": self._commits + self._aborts, "committed": self._commits, "aborted": self._aborts,
            "early_decisions": len(self._early), "evidence": len(self.evidence),
            "rejected": sum(self.rejected.values()), "anomalies": len(self.anomalies),
            "contradicted_by": dict(self.contradicted_by),
        }

    # -- prepares --------------------------------------------------------------------------------
    def _on_prepare(self, replica: str, item: PrepareItem) -> None:
        if item.pseq < self._next_pseq:
            record = self._records.get(item.pseq)
            if record is not None and record.txn_id == item.txn_id and record.vote is not None:
                self._send_vote(record.vote, (replica,))  # that replica missed our vote
            return
        if item.pseq >= self._next_pseq + self.config.prepare_window:
            self._reject(replica, f"prepare for pseq {item.pseq} beyond the window")
            return
        if not item.ops or len(item.ops) > self.config.max_ops:
            self._reject(replica, f"prepare for pseq {item.pseq} with {len(item.ops)} ops (1..{self.config.max_ops})")
            return
        key = encode(item)
        if not self._prepares.fits(item.pseq, replica, len(key)):
            self._reject(replica, f"prepare for pseq {item.pseq}: {replica}'s claims exceed claim_bytes")
            return
        self._prepares.add(item.pseq, replica, key, item)

    def _accept_in_order(self) -> None:
        """Accept slots strictly in pseq order, each on f+1 matching prepares (or decided abort)."""
        while True:
            pseq = self._next_pseq
            item = self._prepares.winner(pseq)
            early = self._early.get(pseq)
            if item is None:
                if early is None or early.commit:
                    return
                self._advance_next()  # aborted before we ever saw f+1 prepares: nothing to undo
                self._finish_without_record(early)
                continue
            self._prepares.drop(pseq)
            self._advance_next()
            record = PreparedRecord(item.txn_id, pseq, item.ops, None, (), 0, [])
            self._records[pseq] = record
            self._out.write(_slot_key(RECORD_PREFIX, pseq), encode(record))
            if early is not None and early.txn_id != item.txn_id:
                self._anomaly(f"pseq {pseq}: decision for {early.txn_id} but prepare for {item.txn_id}")
                self._drop_early(pseq)
                early = None
            if early is not None and not early.commit:
                self._finish(record, commit=False)
                continue
            self._locks.enqueue(pseq, _lock_keys(record))
            self._runnable.append(pseq)

    def _advance_next(self) -> None:
        self._next_pseq += 1
        self._out.write(NEXT_KEY, encode(Cell(self._next_pseq)))

    # -- execution and votes -----------------------------------------------------------------------
    def _run_granted(self) -> None:
        """Execute every waiting transaction that now holds all its locks."""
        while self._runnable:
            pseq = self._runnable.pop()
            record = self._records.get(pseq)
            if record is not None and record.vote is None and self._locks.granted(pseq):
                self._execute(record)

    def _execute(self, record: PreparedRecord) -> None:
        outcome = self._data.execute(record.ops)
        vote = Vote(record.txn_id, record.pseq, outcome.yes, outcome.reads if outcome.yes else [], outcome.reason)
        record = msgspec.structs.replace(record, vote=vote, writes=outcome.writes, dequeues=outcome.dequeues,
                                     enqueues=outcome.enqueues)
        self._records[record.pseq] = record
        self._out.write(_slot_key(RECORD_PREFIX, record.pseq), encode(record))
        self._out.output(Voted(self.node_id, record.txn_id, record.pseq, vote.yes, vote.reason))
        self._send_vote(vote, self.config.replicas)
        if not vote.yes:  # the transaction will abort: nobody needs to wait behind it
            self._runnable.extend(self._locks.release(record.pseq))
        elif self._now is not None:
            self._in_doubt_since[record.pseq] = self._now
        early = self._early.get(record.pseq)
        if early is not None:
            self._finish(record, early.commit)

    def _send_vote(self, vote: Vote, dests) -> None:
        self._votes_out[vote.pseq] = (vote, vote_bytes(vote))
        self._vote_dests.update(dests)

    # -- decisions -----------------------------------------------------------------------------
    def _on_decision(self, replica: str, item: DecisionItem) -> None:
        outcome = self._recent_outcomes.get(item.pseq)
        if outcome is not None and encode(item) != outcome:  # a late lie about a decided slot
            self._contradicted(replica)
            return
        if item.pseq < self._next_pseq and item.pseq not in self._records:
            self._ack(replica, item)  # applied already: say so again
            return
        if item.pseq >= self._next_pseq + self.config.prepare_window:
            self._reject(replica, f"decision for pseq {item.pseq} beyond the window")
            return
        if item.pseq in self._early:
            return
        key = encode(item)
        decided = self._decisions.add(item.pseq, replica, key, item)
        if decided is not None:
            self._settle_claims(item.pseq, encode(decided))
            self._on_decided(decided)

    def _settle_claims(self, pseq: int, winner: bytes) -> None:
        """The slot is decided by f+1 matching claims: a replica that claimed another outcome for
        it lied to this participant (it MAC'd the lie itself; only this participant can check the
        MAC, so the proof convinces nobody else, but the count tells the operator who lies)."""
        for replica, key in self._decisions.keys_at(pseq).items():
            if key != winner:
                self._contradicted(replica)
        self._decisions.drop(pseq)
        self._recent_outcomes[pseq] = winner
        while len(self._recent_outcomes) > RECENT_OUTCOMES:
            self._recent_outcomes.popitem(last=False)

    def _contradicted(self, replica: str) -> None:
        self.contradicted_by[replica] += 1  # keyed by replicas only: bounded by n

    def _on_decided(self, item: DecisionItem) -> None:
        record = self._records.get(item.pseq)
        if record is None:  # a slot we have not reached: remember the outcome until we do
            self._remember_early(item)
        elif record.txn_id != item.txn_id:
            self._anomaly(f"pseq {item.pseq}: decision for {item.txn_id} but prepared {record.txn_id}")
        elif record.vote is None and item.commit:  # impossible with f+1 correct: apply after our vote
            self._remember_early(item)
        else:
            self._finish(record, item.commit)

    def _remember_early(self, item: DecisionItem) -> None:
        early = EarlyDecision(item.txn_id, item.pseq, item.commit)
        self._early[item.pseq] = early
        self._out.write(_slot_key(EARLY_PREFIX, item.pseq), encode(early))

    def _finish(self, record: PreparedRecord, commit: bool) -> None:
        """Apply (COMMIT) or drop (ABORT) a transaction's intents, release its locks, ack."""
        vote = record.vote
        if commit:
            if vote is not None and vote.yes:
                for key, value in self._data.apply(record.writes, record.dequeues, record.enqueues):
                    self._out.write(key, value)
            else:
                self._anomaly(f"{record.txn_id}: COMMIT decided without my YES vote")
        self._records.pop(record.pseq, None)
        self._in_doubt_since.pop(record.pseq, None)
        self._out.write(_slot_key(RECORD_PREFIX, record.pseq), None)
        self._drop_early(record.pseq)
        self._runnable.extend(self._locks.release(record.pseq))
        self._count_and_ack(DecisionItem(record.txn_id, record.pseq, commit), vote.yes if vote else None)

    def _finish_without_record(self, early: EarlyDecision) -> None:
        self._drop_early(early.pseq)
        self._count_and_ack(DecisionItem(early.txn_id, early.pseq, early.commit), None)

    def _count_and_ack(self, item: DecisionItem, voted_yes: bool | None) -> None:
        if item.commit:
            self._commits += 1
        else:
            self._aborts += 1
        self._out.write(COUNTS_KEY, encode(Cell([self._commits, self._aborts])))
        self._out.output(Applied(self.node_id, item.txn_id, item.pseq, item.commit, voted_yes))
        for replica in self.config.replicas:
            self._ack(replica, item)

    def _drop_early(self, pseq: int) -> None:
        if self._early.pop(pseq, None) is not None:
            self._out.write(_slot_key(EARLY_PREFIX, pseq), None)

    def _ack(self, replica: str, item: DecisionItem) -> None:
        self._acks_out.setdefault(replica, {})[item.pseq] = item

    # -- in doubt ------------------------------------------------------------------------------
    def _query_in_doubt(self) -> None:
        """Ask about the YES votes undecided for a while: ``_in_doubt_since`` is in the order
        they started waiting, so only the old ones are visited."""
        now, period = self._now, self.config.resend_ms
        if self._last_query_ms is not None and now - self._last_query_ms < period:
            return
        due = []
        for p, since in self._in_doubt_since.items():
            if now - since < QUERY_AFTER_RESENDS * period:
                break
            if p in self._records:
                due.append(DecisionItem(self._records[p].txn_id, p, False))
        if not due:
            return
        self._last_query_ms = now
        for replica in self.config.replicas:
            self._out.send(replica, seal_mac(self.keys, replica, Query(tuple(due))), after_persist=False)

    # -- misbehaviour ------------------------------------------------------------------------------
    def _reject(self, sender: str, reason: str) -> None:
        if sender not in self.rejected and len(self.rejected) >= MAX_COUNTED_SENDERS:
            sender = "<others>"  # the transport's sender is unauthenticated: bound what it can grow
        self.rejected[sender] += 1
        self._out.output(Rejected(self.node_id, sender, reason))

    def _anomaly(self, what: str) -> None:
        self.anomalies.append(what)
        self._out.output(Rejected(self.node_id, "*", f"anomaly: {what}"))
