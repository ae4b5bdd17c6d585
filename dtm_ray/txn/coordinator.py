"""The 2PC coordinator: the deterministic application the PBFT log executes on every replica.

The flow, from this replica's point of view (the whole transaction: README.md, "Architecture"):

1. **execute(request)** assigns the transaction one sequence number (``pseq``) per participant it
   touches, in log order, so every correct replica assigns the same ones, and sends each
   participant a PREPARE (one MAC'd batch per participant per flush). The reply is deferred.
2. **receive(votes)**: participants' signed vote batches arrive here (soft state: which votes this
   replica has seen). Two different signed votes from one participant for one transaction are
   kept as evidence of equivocation.
3. **proposals()** offers ``DecideBatch``es: COMMIT with a YES from every participant, ABORT with
   a NO, or ABORT after the vote timeout, each signed vote batch carried once per proposal and
   referenced by index (``proposals``). **validate_proposal** is the rule a correct backup
   applies to the primary's proposal (see its docstring): forged evidence is REJECTed, a timeout
   ABORT WAITs for this replica's own timer.
4. **execute_proposal(DECIDE)** is the commit point: the outcome is final, the client's reply
   (an encoded ``TxnResult``) is returned to PBFT, and the decision is sent to the participants,
   resent until each acknowledges (then the transaction is *final* here).
5. **Forget**: final transactions leave the replicated state by agreement (below).

Cost: every step does work for what changed, not for what is waiting. A new vote or an expired
vote timer marks its transaction (``_dirty``); ``proposals()`` checks only those and builds
each proposal once (``proposals.Pending`` keeps its bytes until executed); timers live in heaps
(``timers``). So a transaction costs O(1) amortised however many are pending.

Bounded state (why ``Forget`` and not a plain retention window). The decided table is needed
until every participant has applied the decision: for resending it, and for answering a
participant in doubt. After that nobody correct asks again (a participant acknowledges only a
decision it has durably applied), so a *final* transaction can go. Whether it is final is soft
state (the acknowledgements are MAC'd to each replica), so dropping it is agreed through the
log: a replica proposes ``Forget(txn ids)`` for transactions final here for a while, and a
correct replica ACCEPTs only ids it knows final itself (or knows gone already), and WAITs
otherwise, so a faulty primary cannot make correct replicas forget an unfinished transaction
(it would need f+1 correct replicas that all saw every acknowledgement). An executed request
id per client (``_executed``, bounded by the number of clients) tells "forgotten" from "not
executed yet", keeps execution idempotent once the entry is gone, and lets a stale DECIDE for a
forgotten transaction be a no-op. As a hard cap, the table never exceeds ``decided_bytes`` /
``decided_retention``: when a participant stays silent so long that the cap is reached, the
oldest decisions are dropped (counted as ``evicted_unfinal``): that participant can no longer
learn them from the replicas, the price of a checkpoint that fits the decoder.

Determinism: everything that ``execute*`` reads is part of the snapshot (``next_pseq``, pending
and decided transactions, executed request ids) or the proposal's own bytes; signature checks
are deterministic, the cache of verified vote batches only saves time. Votes, timers, acks,
resends and proposals under construction are soft state.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from dtm_ray.crypto import Envelope, KeyRing, seal_mac
from dtm_ray.errors import DecodeError
from dtm_ray.pbft.app import Outgoing, ReplyItem, Verdict
from dtm_ray.pbft.events import Evidence
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.delivery import Delivery
from dtm_ray.txn.events import Decided, Final, Ordered, PreparesSent
from dtm_ray.txn.messages import (AckBatch, fitting_batches, CoordinatorState, Decide, DecideBatch, DecidedTxn, DecisionBatch,
                                  Forget, PendingTxn, Query, Slot,
                                  Vote, VoteBatch)
from dtm_ray.txn.ops import TxnResult, txn_id_of
from dtm_ray.txn.prepares import PrepareOutbox
from dtm_ray.txn.proposals import DecideBuilder, DecodedProposals, Due, Pending, forget_proposals
from dtm_ray.txn.requests import RequestRules
from dtm_ray.txn.timers import DeadlineHeap
from dtm_ray.txn.votebook import MAX_COUNTED_SENDERS, MAX_EVIDENCE, VoteBook  # noqa: F401  (re-exported)
from dtm_ray.wire import decode, encode

TIMEOUT_REASON = "vote timeout"


def _client_and_request(txn_id: str) -> tuple[str, int] | None:
    client, _, request_id = txn_id.rpartition(":")
    return (client, int(request_id)) if client and request_id.isdigit() else None


def _decided_bytes(decided: DecidedTxn) -> int:
    """An upper bound of its encoded size (deterministic: every replica charges the same)."""
    return len(decided.txn_id.encode()) + 16 + sum(len(s.participant.encode()) + 12 for s in decided.slots)


def reads_in_op_order(txn: PendingTxn, votes: dict[str, Vote]) -> list:
    """One read value per op, in op order, from each participant's reads (in its op order)."""
    position: Counter[str] = Counter()
    reads = []
    for op in txn.ops:
        values = votes[op.participant].reads
        i = position[op.participant]
        reads.append(values[i] if isinstance(values, list) and i < len(values) else None)
        position[op.participant] += 1
    return reads


class CoordinatorApp:
    def __init__(self, replica_id: str, config: TxnConfig, keys: KeyRing) -> None:
        self.replica_id = replica_id
        self.config = config
        self.keys = keys
        # replicated state (in the snapshot)
        self._next_pseq: dict[str, int] = {p: 0 for p in config.participants}
        self._pending: dict[str, PendingTxn] = {}
        self._decided: OrderedDict[str, DecidedTxn] = OrderedDict()
        self._decided_size = 0
        self._executed: dict[str, int] = {}  # client -> last request id executed
        # soft state
        self._now = 0
        self._started: dict[str, int] = {}
        self._vote_timers: DeadlineHeap[str] = DeadlineHeap()
        self._events: list = []  # audit events and evidence for the host (take_events)
        self._book = VoteBook(replica_id, keys, config.participants, emit=lambda e: self._events.append(e))
        self._decoded = DecodedProposals()
        self._rules = RequestRules(config)
        self._prepares = PrepareOutbox(config.resend_ms)
        self._delivery = Delivery(config.resend_ms)  # decisions until acknowledged, then final
        self._dirty: dict[str, None] = {}  # transactions whose DECIDE may have become due
        self._decides = Pending()
        self._forgets = Pending()
        self._counts: Counter[str] = Counter()
        self.work: Counter[str] = Counter()  # due checks and timer visits (the flat-cost test)

    @property
    def evidence(self) -> list[Evidence]:
        """Equivocating-vote proofs, one per (participant, transaction), at most MAX_EVIDENCE."""
        return self._book.evidence

    @property
    def rejected(self) -> Counter[str]:
        """Refused inputs per sender, at most MAX_COUNTED_SENDERS (+ "<others>")."""
        return self._book.rejected

    # =========================================================================================
    # Deterministic: part of the replicated state machine

    def check_request(self, client: str, operation: bytes) -> str | None:
        return self._rules.check(client, operation)

    def refusal_result(self, client: str, request_id: int, reason: str) -> bytes:
        """A refused transaction is aborted before it is ordered: no participant saw it."""
        return encode(TxnResult(False, "abort", txn_id_of(client, request_id), [], reason))

    def execute(self, seq: int, client: str, request_id: int, operation: bytes) -> list[ReplyItem]:
        txn_id = txn_id_of(client, request_id)
        if self._was_executed(txn_id):
            return []  # executed before (recovery replays the log): idempotent
        self._executed[client] = request_id
        request, reason = self._rules.for_execution(client, operation)
        if reason is not None:
            reads = [] if request is None else [None] * len(request.ops)
            return [self._reply(client, request_id, TxnResult(False, "abort", txn_id, reads, reason))]
        slots = []
        for participant in dict.fromkeys(op.participant for op in request.ops):
            slots.append(Slot(participant, self._next_pseq[participant]))
            self._next_pseq[participant] += 1
        txn = PendingTxn(txn_id, client, request_id, request.ops, tuple(slots))
        self._pending[txn_id] = txn
        self._start_timer(txn_id, self._now)
        self._events.append(Ordered(txn_id, seq))
        if self._book.adopt_early(txn):
            self._dirty[txn_id] = None
        self._prepares.send(txn, txn.slots, self._now)
        self._events.append(PreparesSent(txn_id, tuple(s.participant for s in slots), tuple(s.pseq for s in slots)))
        return []

    def execute_proposal(self, seq: int, proposal: bytes) -> list[ReplyItem]:
        parsed = self._parse(proposal)
        if isinstance(parsed, Forget):
            for txn_id in parsed.txn_ids:
                self._forget(txn_id)
            return []
        replies = []
        for txn_id, commit, envelopes in self._decoded.decisions(proposal):
            reply = self._execute_decision(seq, txn_id, commit, envelopes)
            if reply is not None:
                replies.append(reply)
        return replies

    def snapshot(self) -> bytes:
        return encode(CoordinatorState(
            tuple(Slot(p, n) for p, n in sorted(self._next_pseq.items())),
            tuple(self._pending.values()),
            tuple(self._decided.values()),
            tuple(Slot(c, r) for c, r in sorted(self._executed.items()))))

    def restore(self, snapshot: bytes) -> None:
        state = decode(snapshot, CoordinatorState)
        self._next_pseq = {p: 0 for p in self.config.participants}
        self._next_pseq.update({s.participant: s.pseq for s in state.next_pseq})
        self._pending = {t.txn_id: t for t in state.pending}
        self._decided = OrderedDict((t.txn_id, t) for t in state.decided)
        self._decided_size = sum(_decided_bytes(d) for d in self._decided.values())
        self._executed = {s.participant: s.pseq for s in state.executed}
        self._restart_soft_state()

    def _restart_soft_state(self) -> None:
        """After a restore: timers restart, votes for finished transactions are forgotten,
        proposals are rebuilt, and every decision kept is resent until acknowledged."""
        self._started = {t: self._started.get(t, self._now) for t in self._pending}
        self._vote_timers = DeadlineHeap()
        for txn_id, started in self._started.items():
            self._vote_timers.schedule(txn_id, started + self.config.vote_timeout_ms)
        self._book.keep_only(self._pending)
        self._prepares.restart()
        for txn in self._pending.values():
            voted = self._book.of(txn.txn_id)
            self._prepares.send(txn, [s for s in txn.slots if s.participant not in voted], self._now)
        self._decides.clear()
        self._forgets.clear()
        self._dirty = dict.fromkeys(self._pending)
        self._delivery.restart(self._decided, self._now)

    # -- helpers of the deterministic part ---------------------------------------------------
    def _was_executed(self, txn_id: str) -> bool:
        """Whether this transaction's request executed here (pending, decided or forgotten):
        a client's requests execute in increasing request id order (PBFT's replay rule)."""
        parsed = _client_and_request(txn_id)
        if parsed is None:
            return False
        last = self._executed.get(parsed[0])
        return last is not None and parsed[1] <= last

    def _execute_decision(self, seq: int, txn_id: str, commit: bool, envelopes) -> ReplyItem | None:
        txn = self._pending.get(txn_id)
        if txn is None:
            return None  # decided already (or never executed): a duplicate DECIDE changes nothing
        self._book.compare(txn, envelopes)  # soft: evidence only, the outcome does not read it
        votes = self._book.proven(txn, commit, envelopes)
        if commit:
            yes = {p: v for p, v in votes.items() if v.yes}
            if len(yes) != len(txn.slots):
                return None  # not provable: correct replicas never let this through (see validate)
            return self._decide(seq, txn, True, reads_in_op_order(txn, yes), None)
        refusals = [votes[s.participant] for s in txn.slots
                    if s.participant in votes and not votes[s.participant].yes]
        reason = refusals[0].reason if refusals else TIMEOUT_REASON
        return self._decide(seq, txn, False, [None] * len(txn.ops), reason or "participant voted no")

    def _decide(self, seq: int, txn: PendingTxn, commit: bool, reads: list, reason: str | None) -> ReplyItem:
        del self._pending[txn.txn_id]
        decided = DecidedTxn(txn.txn_id, commit, txn.slots)
        self._decided[txn.txn_id] = decided
        self._decided_size += _decided_bytes(decided)
        self._enforce_decided_cap()
        for soft in (self._started, self._dirty):
            soft.pop(txn.txn_id, None)
        self._book.drop(txn.txn_id)
        self._vote_timers.cancel(txn.txn_id)
        self._prepares.done(txn.txn_id)
        self._decides.done(txn.txn_id)
        self._counts["committed" if commit else "aborted"] += 1
        if txn.txn_id in self._decided:
            self._delivery.decided(decided, self._now)
        outcome = "commit" if commit else "abort"
        self._events.append(Decided(txn.txn_id, outcome, seq, reason))
        return self._reply(txn.client, txn.request_id, TxnResult(commit, outcome, txn.txn_id, reads, reason))

    def _enforce_decided_cap(self) -> None:
        """The hard cap on the decided table (final transactions normally left long before)."""
        while self._decided and (len(self._decided) > self.config.decided_retention
                                 or self._decided_size > self.config.decided_bytes):
            txn_id = next(iter(self._decided))
            if txn_id in self._delivery.unacked:
                self._counts["evicted_unfinal"] += 1
            self._forget(txn_id)

    def _forget(self, txn_id: str) -> None:
        decided = self._decided.pop(txn_id, None)
        if decided is None:
            return
        self._decided_size -= _decided_bytes(decided)
        self._counts["forgotten"] += 1
        self._delivery.drop(txn_id)
        self._forgets.done(txn_id)

    def _reply(self, client: str, request_id: int, result: TxnResult) -> ReplyItem:
        return (client, request_id, encode(result))

    def _parse(self, proposal: bytes) -> Decide | DecideBatch | Forget | None:
        return self._decoded.parse(proposal)

    # =========================================================================================
    # Soft state: what this replica has seen of the outside world

    def receive(self, env: Envelope) -> bool:
        try:
            msg = decode(env.body, (VoteBatch, AckBatch, Query))
        except DecodeError:
            return False
        if env.sender not in self.config.participants:
            self._book.reject(env.sender, f"{type(msg).__name__} from {env.sender!r}, not a participant")
            return True
        if isinstance(msg, VoteBatch):
            for txn_id in self._book.on_batch(env, msg, self._pending, self._was_executed):
                self._dirty[txn_id] = None
        elif not self.keys.check_mac(env.sender, env.body, env.auth):
            self._book.reject(env.sender, f"bad MAC on {type(msg).__name__} from {env.sender!r}")
        elif isinstance(msg, AckBatch):
            self._on_acks(env.sender, msg)
        else:
            self._delivery.query(env.sender, msg, self._decided)
        return True

    def tick(self, now_ms: int) -> None:
        """Only what expired: vote timeouts, PREPAREs and decisions due for a resend."""
        self._now = now_ms
        for txn_id in self._vote_timers.expired(now_ms):
            if txn_id in self._pending:
                self._dirty[txn_id] = None
        for txn_id in self._prepares.due(now_ms):
            txn = self._pending.get(txn_id)
            if txn is not None:
                voted = self._book.of(txn_id)
                missing = [s for s in txn.slots if s.participant not in voted]
                if missing:
                    self._prepares.send(txn, missing, now_ms)
        self._delivery.resend_due(self._decided, now_ms)
        self.work["timer_visits"] = self._vote_timers.visits + self._prepares.visits + self._delivery.visits

    def proposals(self) -> list[bytes]:
        """The proposals built and not yet executed; what became due since the last call is
        built now (PBFT asks after every step, so this costs only what changed)."""
        if self._dirty:
            self._build_decides()
        oldest = self._delivery.oldest_final()
        if oldest is not None and oldest + self.config.resend_ms <= self._now:
            self._build_forgets()
        return self._decides.proposals() + self._forgets.proposals()

    def _build_decides(self) -> None:
        builder = DecideBuilder(self.config.proposal_bytes)
        for txn_id in self._dirty:
            txn = self._pending.get(txn_id)
            if txn is not None and not self._decides.covers(txn_id):
                due = self._due_decide(txn)
                if due is not None:
                    builder.add(*due)
        self._dirty.clear()
        for proposal, txn_ids in builder.finish():
            self._decides.add(proposal, txn_ids)

    def _build_forgets(self) -> None:
        """Transactions final here for a resend period (the other replicas' acknowledgements
        have had time to arrive, so a Forget rarely makes a backup WAIT)."""
        ready = self._delivery.take_final(self._now - self.config.resend_ms)
        for proposal, txn_ids in forget_proposals(ready, self.config.proposal_bytes):
            self._forgets.add(proposal, txn_ids)

    def validate_proposal(self, proposal: bytes) -> Verdict:
        """The rule a correct replica applies to a proposal before it prepares it.

        A DECIDE, for each of its decisions:

        - COMMIT: ACCEPT only with a valid signed YES from every participant of the transaction;
          one without any vote is REJECTed whatever this replica knows of the transaction;
        - ABORT: ACCEPT with a valid signed NO from one of them, or, without evidence, once this
          replica's own vote timer for the transaction expired (WAIT until then);
        - anything else (bad signatures, votes for another transaction, an index that points
          nowhere) is REJECTed: forged;
        - a transaction this replica has not executed yet: WAIT; decided already: ACCEPT (a no-op).

        A FORGET: ACCEPT for transactions this replica knows final (or gone already), WAIT while
        it does not; a pending transaction is never final. A proposal larger than any a correct
        replica builds is REJECTed. The proposal's verdict is the worst of its parts'.
        """
        parsed = self._parse(proposal)
        if parsed is None:
            return Verdict.REJECT
        if isinstance(parsed, Forget):
            return self._forget_verdict(parsed, len(proposal))
        if isinstance(parsed, DecideBatch):
            if len(parsed.decisions) > 1 and len(proposal) > self.config.proposal_bytes:
                return Verdict.REJECT
            if any(not all(0 <= i < len(parsed.vote_batches) for i in d.evidence) for d in parsed.decisions):
                return Verdict.REJECT
            envelopes = parsed.vote_batches
        else:
            envelopes = parsed.evidence
        if any(self._book.open(e) is None for e in envelopes):
            return Verdict.REJECT
        verdict = Verdict.ACCEPT
        for due in self._decoded.decisions(proposal):
            one = self._decision_verdict(*due)
            if one is Verdict.REJECT:
                return one
            if one is Verdict.WAIT:
                verdict = one
        return verdict

    def _decision_verdict(self, txn_id: str, commit: bool, envelopes) -> Verdict:
        if commit and not envelopes:
            # No transaction has zero participants, so a COMMIT without a single signed vote is
            # forged on its face, whatever this replica knows of the transaction: decided here
            # already or not executed yet, it is still evidence against the primary that signed it.
            return Verdict.REJECT
        txn = self._pending.get(txn_id)
        if txn is None:
            return Verdict.ACCEPT if self._was_executed(txn_id) else Verdict.WAIT
        self._book.compare(txn, envelopes)
        votes = self._book.proven(txn, commit, envelopes)
        if commit:
            all_yes = len(votes) == len(txn.slots) and all(v.yes for v in votes.values())
            return Verdict.ACCEPT if all_yes else Verdict.REJECT
        if any(not v.yes for v in votes.values()):
            return Verdict.ACCEPT
        if envelopes:
            return Verdict.REJECT
        return Verdict.ACCEPT if self._timed_out(txn_id) else Verdict.WAIT

    def _forget_verdict(self, forget: Forget, size: int) -> Verdict:
        if size > self.config.proposal_bytes:
            return Verdict.REJECT
        for txn_id in forget.txn_ids:
            if txn_id in self._decided:
                if not self._delivery.final_for(txn_id, self._decided):
                    return Verdict.WAIT  # not final here (yet)
            elif txn_id in self._pending or not self._was_executed(txn_id):
                return Verdict.WAIT  # not decided here yet: an earlier slot will decide it
        return Verdict.ACCEPT

    def take_messages(self) -> list[Outgoing]:
        out = self._prepares.take(self.keys)
        for participant, decisions in sorted(self._delivery.outbox.items()):
            for batch in fitting_batches(DecisionBatch, list(decisions.values())):
                out.append((participant, seal_mac(self.keys, participant, batch)))
        self._delivery.outbox.clear()
        return out

    def take_events(self) -> list:
        """Audit events (``txn.events``) and equivocating-vote ``Evidence`` since the last call."""
        events, self._events = self._events, []
        return events

    def open_requests(self) -> int:
        """Transactions ordered and not decided yet: their clients still wait (the replica's
        admission bound counts them, so a queue of undecided transactions cannot outgrow it)."""
        return len(self._pending)

    def status(self) -> dict:
        return {
            "pending": len(self._pending), "in_flight": len(self._delivery.unacked),
            "final": self._delivery.finals, "committed": self._counts["committed"],
            "aborted": self._counts["aborted"], "decided_kept": len(self._decided),
            "decided_bytes": self._decided_size, "forgotten": self._counts["forgotten"],
            "evicted_unfinal": self._counts["evicted_unfinal"],
            "next_pseq": dict(self._next_pseq), "evidence": len(self.evidence),
            "rejected": sum(self.rejected.values()), "early_votes": len(self._book.early),
        }

    def outcome(self, txn_id: str) -> bool | None:
        """True (committed), False (aborted) or None (pending, forgotten or unknown here)."""
        decided = self._decided.get(txn_id)
        return None if decided is None else decided.commit

    # -- helpers of the soft part --------------------------------------------------------------
    def _due_decide(self, txn: PendingTxn) -> Due | None:
        self.work["due_checks"] += 1
        due = self._book.decision(txn)
        if due is None and self._timed_out(txn.txn_id):
            return (txn.txn_id, False, ())  # ABORT without evidence: every backup's own timer agrees
        return due

    def _start_timer(self, txn_id: str, now: int) -> None:
        self._started[txn_id] = now
        self._vote_timers.schedule(txn_id, now + self.config.vote_timeout_ms)

    def _timed_out(self, txn_id: str) -> bool:
        started = self._started.get(txn_id)
        return started is not None and self._now - started >= self.config.vote_timeout_ms

    def _on_acks(self, participant: str, acks: AckBatch) -> None:
        for txn_id in self._delivery.acks(participant, acks, self._decided, self._now):
            self._events.append(Final(txn_id))
