"""The 2PC coordinator: the deterministic application the PBFT log executes on every replica.

The flow, from this replica's point of view (DESIGN.md section 2, steps 3-6):

1. **execute(request)** assigns the transaction one sequence number (``pseq``) per participant it
   touches, in log order, so every correct replica assigns the same ones, and sends each
   participant a PREPARE (one MAC'd batch per participant per flush). The reply is deferred.
2. **receive(votes)**: participants' signed vote batches arrive here (soft state: which votes this
   replica has seen). Two different signed votes from one participant for one transaction are
   kept as evidence of equivocation.
3. **proposals()** offers, for every pending transaction, the DECIDE it is ready for: COMMIT with
   a YES from every participant, ABORT with a NO, or ABORT after the vote timeout.
   **validate_proposal** is the rule a correct backup applies to the primary's DECIDE (see its
   docstring): forged evidence is REJECTed, a timeout ABORT WAITs for this replica's own timer.
4. **execute_proposal(DECIDE)** is the commit point: the outcome is final, the client's reply
   (an encoded ``TxnResult``) is returned to PBFT, and the decision is sent to the participants,
   resent until each acknowledges (then the transaction is *final* here).

Determinism: everything that ``execute*`` reads is part of the snapshot (``next_pseq``, pending
and decided transactions) or the proposal's own bytes; signature checks are deterministic, the
cache of verified vote batches only saves time. Votes, timers, acks and resends are soft state.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from dtm_ray.crypto import Envelope, KeyRing, digest, seal_mac
from dtm_ray.errors import DecodeError, RemoteProtocolError
from dtm_ray.pbft.app import Outgoing, ReplyItem, Verdict
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.retry import Backoff
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.events import Decided, Final, Ordered, PreparesSent
from dtm_ray.txn.messages import (AckBatch, CoordinatorState, Decide, DecidedTxn, DecisionBatch, DecisionItem,
                                  PendingTxn, PrepareBatch, PrepareItem, Query, Slot, TxnRequest, Vote, VoteBatch)
from dtm_ray.txn.ops import OPS_OF_KIND, TxnResult, txn_id_of
from dtm_ray.wire import decode, encode

VERIFIED_CACHE = 4096  # vote batches whose signature this replica checked (by digest)
EARLY_VOTES = 10_000  # votes for transactions this replica has not executed yet
MAX_COUNTED_SENDERS = 1_000  # senders counted by name in ``rejected``
MAX_EVIDENCE = 1_000  # equivocating-vote proofs kept in ``evidence``
TIMEOUT_REASON = "vote timeout"


class CoordinatorApp:
    def __init__(self, replica_id: str, config: TxnConfig, keys: KeyRing) -> None:
        self.replica_id = replica_id
        self.config = config
        self.keys = keys
        # replicated state (in the snapshot)
        self._next_pseq: dict[str, int] = {p: 0 for p in config.participants}
        self._pending: dict[str, PendingTxn] = {}
        self._decided: OrderedDict[str, DecidedTxn] = OrderedDict()
        # soft state
        self._now = 0
        self._started: dict[str, int] = {}
        self._votes: dict[str, dict[str, tuple[Vote, bytes]]] = {}
        self._early_votes: OrderedDict[tuple[str, str], tuple[Vote, bytes]] = OrderedDict()
        self._verified: OrderedDict[bytes, VoteBatch | None] = OrderedDict()
        self._prepare_out: dict[str, dict[str, PrepareItem]] = {}
        self._decision_out: dict[str, dict[str, DecisionItem]] = {}
        self._prepare_sent: Backoff[str] = Backoff(config.resend_ms)  # PREPAREs not yet voted on
        self._unacked: dict[str, set[str]] = {}
        self._decision_sent: Backoff[str] = Backoff(config.resend_ms)  # decisions not yet acknowledged
        self._counts: Counter[str] = Counter()
        self._proposals_cache: list[bytes] | None = None
        self._proposals_expire: float = 0
        self.evidence: list[Evidence] = []  # bounded: one per (participant, transaction), at most MAX_EVIDENCE
        self._evidence_keys: set[tuple[str, str]] = set()
        self._events: list = []  # audit events and evidence for the host (take_events)
        self.rejected: Counter[str] = Counter()  # per sender, at most MAX_COUNTED_SENDERS (+ "<others>")

    # =========================================================================================
    # Deterministic: part of the replicated state machine

    def check_request(self, client: str, operation: bytes) -> str | None:
        try:
            request = decode(operation, TxnRequest)
        except DecodeError as exc:
            return f"invalid request: {exc}"
        return self.request_problem(client, request)

    def refusal_result(self, client: str, request_id: int, reason: str) -> bytes:
        """A refused transaction is aborted before it is ordered: no participant saw it."""
        return encode(TxnResult(False, "abort", txn_id_of(client, request_id), [], reason))

    def request_problem(self, client: str, request: TxnRequest) -> str | None:
        if not request.ops:
            return "invalid request: a transaction needs at least one op"
        if len(request.ops) > self.config.max_ops:
            return f"invalid request: {len(request.ops)} ops exceed max_ops {self.config.max_ops}"
        policy = self.config.policy(client)
        for op in request.ops:
            reason = op.problem()
            kind = self.config.participants.get(op.participant)
            if reason is None and kind is None:
                reason = f"unknown participant {op.participant!r}"
            if reason is None and op.kind not in OPS_OF_KIND[kind]:
                reason = f"{op.kind} is not an operation of {op.participant} (a {kind})"
            if reason is None and policy is not None:
                reason = policy.refusal(op.participant, op.kind)
            if reason is not None:
                return f"invalid request: {reason}"
        return None

    def execute(self, seq: int, client: str, request_id: int, operation: bytes) -> list[ReplyItem]:
        txn_id = txn_id_of(client, request_id)
        if txn_id in self._pending or txn_id in self._decided:
            return []  # executed before (recovery replays the log): idempotent
        try:
            request = decode(operation, TxnRequest)
        except DecodeError as exc:
            return [self._reply(client, request_id, TxnResult(False, "abort", txn_id, [], f"invalid request: {exc}"))]
        reason = self.request_problem(client, request)
        if reason is not None:
            result = TxnResult(False, "abort", txn_id, [None] * len(request.ops), reason)
            return [self._reply(client, request_id, result)]
        slots = []
        for participant in dict.fromkeys(op.participant for op in request.ops):
            slots.append(Slot(participant, self._next_pseq[participant]))
            self._next_pseq[participant] += 1
        txn = PendingTxn(txn_id, client, request_id, request.ops, tuple(slots))
        self._pending[txn_id] = txn
        self._started[txn_id] = self._now
        self._changed()
        self._events.append(Ordered(txn_id, seq))
        self._adopt_early_votes(txn)
        self._send_prepares(txn)
        self._events.append(PreparesSent(txn_id, tuple(s.participant for s in slots), tuple(s.pseq for s in slots)))
        return []

    def execute_proposal(self, seq: int, proposal: bytes) -> list[ReplyItem]:
        try:
            decide = decode(proposal, Decide)
        except DecodeError:
            return []
        txn = self._pending.get(decide.txn_id)
        if txn is None:
            return []  # decided already (or never executed): a duplicate DECIDE changes nothing
        self._compare_with_my_votes(decide, txn)  # soft: evidence only, the outcome does not read it
        votes = self._evidence_votes(decide, txn)
        if decide.commit:
            yes = {p: v for p, v in votes.items() if v.yes}
            if len(yes) != len(txn.slots):
                return []  # not provable: correct replicas never let this through (see validate)
            return [self._decide(seq, txn, True, self._reads(txn, yes), None)]
        refusals = [votes[s.participant] for s in txn.slots
                    if s.participant in votes and not votes[s.participant].yes]
        reason = refusals[0].reason if refusals else TIMEOUT_REASON
        return [self._decide(seq, txn, False, [None] * len(txn.ops), reason or "participant voted no")]

    def snapshot(self) -> bytes:
        return encode(CoordinatorState(
            tuple(Slot(p, n) for p, n in sorted(self._next_pseq.items())),
            tuple(self._pending.values()),
            tuple(self._decided.values())))

    def restore(self, snapshot: bytes) -> None:
        state = decode(snapshot, CoordinatorState)
        self._changed()
        self._next_pseq = {p: 0 for p in self.config.participants}
        self._next_pseq.update({s.participant: s.pseq for s in state.next_pseq})
        self._pending = {t.txn_id: t for t in state.pending}
        self._decided = OrderedDict((t.txn_id, t) for t in state.decided)
        # soft state follows: timers restart, votes for finished transactions are forgotten
        self._started = {t: self._started.get(t, self._now) for t in self._pending}
        self._votes = {t: v for t, v in self._votes.items() if t in self._pending}
        self._prepare_sent.keep_only(self._pending)

    # -- helpers of the deterministic part ---------------------------------------------------
    def _decide(self, seq: int, txn: PendingTxn, commit: bool, reads: list, reason: str | None) -> ReplyItem:
        del self._pending[txn.txn_id]
        self._changed()
        self._decided[txn.txn_id] = DecidedTxn(txn.txn_id, commit, txn.slots)
        while len(self._decided) > self.config.decided_retention:
            self._decided.popitem(last=False)
        for soft in (self._started, self._votes):
            soft.pop(txn.txn_id, None)
        self._prepare_sent.forget(txn.txn_id)
        self._counts["committed" if commit else "aborted"] += 1
        self._unacked[txn.txn_id] = {s.participant for s in txn.slots}
        self._send_decisions(txn.txn_id)
        outcome = "commit" if commit else "abort"
        self._events.append(Decided(txn.txn_id, outcome, seq, reason))
        return self._reply(txn.client, txn.request_id, TxnResult(commit, outcome, txn.txn_id, reads, reason))

    def _reply(self, client: str, request_id: int, result: TxnResult) -> ReplyItem:
        return (client, request_id, encode(result))

    @staticmethod
    def _reads(txn: PendingTxn, votes: dict[str, Vote]) -> list:
        """One read value per op, in op order, from each participant's reads (in its op order)."""
        position: Counter[str] = Counter()
        reads = []
        for op in txn.ops:
            values = votes[op.participant].reads
            i = position[op.participant]
            reads.append(values[i] if isinstance(values, list) and i < len(values) else None)
            position[op.participant] += 1
        return reads

    def _evidence_votes(self, decide: Decide, txn: PendingTxn) -> dict[str, Vote]:
        """The votes for ``txn`` that ``decide``'s evidence proves, one per participant (when an
        equivocating participant's YES and NO are both shown, the one ``decide`` needs wins)."""
        pseq_of = {s.participant: s.pseq for s in txn.slots}
        found: dict[str, Vote] = {}
        for envelope in decide.evidence:
            batch = self._open_vote_batch(envelope)
            if batch is None or batch.participant not in pseq_of:
                continue
            for vote in batch.votes:
                if vote.txn_id == txn.txn_id and vote.pseq == pseq_of[batch.participant]:
                    previous = found.get(batch.participant)
                    if previous is None or vote.yes == decide.commit:
                        found[batch.participant] = vote
        return found

    def _compare_with_my_votes(self, decide: Decide, txn: PendingTxn) -> None:
        """A DECIDE carries signed votes: one that differs from the vote this replica received
        from the same participant for the same slot proves equivocation (a replica that saw only
        one of the two batches learns of the other here)."""
        mine = self._votes.get(txn.txn_id, {})
        pseq_of = {s.participant: s.pseq for s in txn.slots}
        for envelope in decide.evidence:
            batch = self._open_vote_batch(envelope)
            if batch is None or batch.participant not in mine:
                continue
            my_vote, my_envelope = mine[batch.participant]
            for vote in batch.votes:
                if (vote.txn_id == txn.txn_id and vote.pseq == pseq_of.get(batch.participant)
                        and (vote.yes, vote.reads) != (my_vote.yes, my_vote.reads)):
                    self._record_equivocation(txn.txn_id, batch.participant, (my_envelope, envelope))

    def _open_vote_batch(self, envelope: bytes) -> VoteBatch | None:
        """A participant's signed vote batch, or None if it is not one (cached by digest)."""
        key = digest(envelope)
        if key in self._verified:
            self._verified.move_to_end(key)
            return self._verified[key]
        batch = None
        try:
            env = decode(envelope, Envelope)
            if env.sender in self.config.participants and self.keys.verify(env.sender, env.body, env.auth):
                candidate = decode(env.body, VoteBatch)
                batch = candidate if candidate.participant == env.sender else None
        except RemoteProtocolError:
            batch = None
        self._remember_verified(key, batch)
        return batch

    def _remember_verified(self, key: bytes, batch: VoteBatch | None) -> None:
        self._verified[key] = batch
        while len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)

    # =========================================================================================
    # Soft state: what this replica has seen of the outside world

    def receive(self, env: Envelope) -> bool:
        try:
            msg = decode(env.body, (VoteBatch, AckBatch, Query))
        except DecodeError:
            return False
        if env.sender not in self.config.participants:
            self._reject(env.sender, f"{type(msg).__name__} from {env.sender!r}, not a participant")
            return True
        if isinstance(msg, VoteBatch):
            self._on_vote_batch(env, msg)
        elif not self.keys.check_mac(env.sender, env.body, env.auth):
            self._reject(env.sender, f"bad MAC on {type(msg).__name__} from {env.sender!r}")
        elif isinstance(msg, AckBatch):
            self._on_acks(env.sender, msg)
        else:
            self._on_query(env.sender, msg)
        return True

    def tick(self, now_ms: int) -> None:
        self._now = now_ms
        for txn_id, txn in self._pending.items():
            if txn_id not in self._started:
                self._started[txn_id] = now_ms
                self._changed()
            if self._prepare_sent.due(txn_id, now_ms):
                voted = self._votes.get(txn_id, {})
                self._send_prepares(txn, [s for s in txn.slots if s.participant not in voted])
        for txn_id, waiting in list(self._unacked.items()):
            if self._decision_sent.due(txn_id, now_ms):
                self._send_decisions(txn_id, waiting)

    def proposals(self) -> list[bytes]:
        """Recomputed only when a vote, an execution or an expiring timer changed the answer
        (PBFT asks after every step)."""
        if self._proposals_cache is not None and self._now < self._proposals_expire:
            return list(self._proposals_cache)
        out = []
        expire = None
        for txn in self._pending.values():
            decide = self._due_decide(txn)
            if decide is not None:
                out.append(encode(decide))
            elif txn.txn_id in self._started:
                deadline = self._started[txn.txn_id] + self.config.vote_timeout_ms
                expire = deadline if expire is None else min(expire, deadline)
        self._proposals_cache, self._proposals_expire = out, (expire if expire is not None else float("inf"))
        return list(out)

    def _changed(self) -> None:
        self._proposals_cache = None

    def validate_proposal(self, proposal: bytes) -> Verdict:
        """The rule a correct replica applies to a DECIDE before it prepares it:

        - COMMIT: ACCEPT only with a valid signed YES from every participant of the transaction;
        - ABORT: ACCEPT with a valid signed NO from one of them, or, without evidence, once this
          replica's own vote timer for the transaction expired (WAIT until then);
        - anything else (bad signatures, votes for another transaction) is REJECTed: forged;
        - a transaction this replica has not executed yet: WAIT; decided already: ACCEPT (a no-op).
        """
        try:
            decide = decode(proposal, Decide)
        except DecodeError:
            return Verdict.REJECT
        if decide.txn_id in self._decided:
            return Verdict.ACCEPT
        txn = self._pending.get(decide.txn_id)
        if txn is None:
            return Verdict.WAIT
        if any(self._open_vote_batch(e) is None for e in decide.evidence):
            return Verdict.REJECT
        self._compare_with_my_votes(decide, txn)
        votes = self._evidence_votes(decide, txn)
        if decide.commit:
            all_yes = len(votes) == len(txn.slots) and all(v.yes for v in votes.values())
            return Verdict.ACCEPT if all_yes else Verdict.REJECT
        if any(not v.yes for v in votes.values()):
            return Verdict.ACCEPT
        if decide.evidence:
            return Verdict.REJECT
        return Verdict.ACCEPT if self._timed_out(txn.txn_id) else Verdict.WAIT

    def take_messages(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        for participant, items in sorted(self._prepare_out.items()):
            out.append((participant, seal_mac(self.keys, participant, PrepareBatch(tuple(items.values())))))
        for participant, decisions in sorted(self._decision_out.items()):
            out.append((participant, seal_mac(self.keys, participant, DecisionBatch(tuple(decisions.values())))))
        self._prepare_out.clear()
        self._decision_out.clear()
        return out

    def take_events(self) -> list:
        """Audit events (``txn.events``) and equivocating-vote ``Evidence`` since the last call."""
        events, self._events = self._events, []
        return events

    def status(self) -> dict:
        return {
            "pending": len(self._pending), "in_flight": len(self._unacked),
            "final": self._counts["final"], "committed": self._counts["committed"],
            "aborted": self._counts["aborted"], "decided_kept": len(self._decided),
            "next_pseq": dict(self._next_pseq), "evidence": len(self.evidence),
            "rejected": sum(self.rejected.values()),
        }

    def outcome(self, txn_id: str) -> bool | None:
        """True (committed), False (aborted) or None (pending or unknown here)."""
        decided = self._decided.get(txn_id)
        return None if decided is None else decided.commit

    # -- helpers of the soft part --------------------------------------------------------------
    def _due_decide(self, txn: PendingTxn) -> Decide | None:
        votes = self._votes.get(txn.txn_id, {})
        for slot in txn.slots:
            vote = votes.get(slot.participant)
            if vote is not None and not vote[0].yes:
                return Decide(txn.txn_id, False, (vote[1],))
        if len(votes) == len(txn.slots):
            evidence = tuple(dict.fromkeys(votes[s.participant][1] for s in txn.slots))
            return Decide(txn.txn_id, True, evidence)
        if self._timed_out(txn.txn_id):
            return Decide(txn.txn_id, False, ())
        return None

    def _timed_out(self, txn_id: str) -> bool:
        started = self._started.get(txn_id)
        return started is not None and self._now - started >= self.config.vote_timeout_ms

    def _on_vote_batch(self, env: Envelope, batch: VoteBatch) -> None:
        envelope = encode(env)  # canonical: the very bytes the participant sent, kept as evidence
        key = digest(envelope)
        if key not in self._verified:
            valid = batch.participant == env.sender and self.keys.verify(env.sender, env.body, env.auth)
            self._remember_verified(key, batch if valid else None)
        if self._verified[key] is None:
            self._reject(env.sender, f"bad signature on VoteBatch from {env.sender!r}")
            return
        for vote in batch.votes:
            txn = self._pending.get(vote.txn_id)
            if txn is None:
                if vote.txn_id not in self._decided:
                    self._keep_early_vote(env.sender, vote, envelope)
                continue
            self._record_vote(txn, env.sender, vote, envelope)

    def _record_vote(self, txn: PendingTxn, participant: str, vote: Vote, envelope: bytes) -> None:
        if not any(s.participant == participant and s.pseq == vote.pseq for s in txn.slots):
            self._reject(participant, f"vote for {txn.txn_id} at pseq {vote.pseq}, not a slot of {participant!r}")
            return
        votes = self._votes.setdefault(txn.txn_id, {})
        previous = votes.get(participant)
        if previous is None:
            votes[participant] = (vote, envelope)
            self._changed()
        elif (previous[0].yes, previous[0].reads) != (vote.yes, vote.reads):
            self._record_equivocation(txn.txn_id, participant, (previous[1], envelope))

    def _reject(self, sender: str, reason: str) -> None:
        """Refused input from ``sender`` (no proof): counted, and reported to the host as a
        ``Rejected`` output, which the replica counts per sender in its bounded table."""
        if sender not in self.rejected and len(self.rejected) >= MAX_COUNTED_SENDERS:
            sender = "<others>"  # the transport's sender is unauthenticated: bound what it can grow
        self.rejected[sender] += 1
        self._events.append(Rejected(self.replica_id, sender, reason))

    def _record_equivocation(self, txn_id: str, participant: str, proof: tuple[bytes, bytes]) -> None:
        """Two different signed votes of ``participant`` for one transaction: kept once (a
        resent batch proves nothing new) and reported to the host as an ``Evidence`` output."""
        key = (participant, txn_id)
        if key in self._evidence_keys or len(self._evidence_keys) >= MAX_EVIDENCE:
            return
        self._evidence_keys.add(key)
        evidence = Evidence(self.replica_id, participant, "equivocating-vote", proof, txn_id)
        self.evidence.append(evidence)
        self._events.append(evidence)

    def _keep_early_vote(self, participant: str, vote: Vote, envelope: bytes) -> None:
        self._early_votes[(vote.txn_id, participant)] = (vote, envelope)
        while len(self._early_votes) > EARLY_VOTES:
            self._early_votes.popitem(last=False)

    def _adopt_early_votes(self, txn: PendingTxn) -> None:
        for slot in txn.slots:
            early = self._early_votes.pop((txn.txn_id, slot.participant), None)
            if early is not None:
                self._record_vote(txn, slot.participant, *early)

    def _on_acks(self, participant: str, acks: AckBatch) -> None:
        for item in acks.items:
            waiting = self._unacked.get(item.txn_id)
            decided = self._decided.get(item.txn_id)
            if waiting is None or decided is None or item.commit != decided.commit:
                continue
            waiting.discard(participant)
            if not waiting:
                del self._unacked[item.txn_id]
                self._decision_sent.forget(item.txn_id)
                self._counts["final"] += 1
                self._events.append(Final(item.txn_id))

    def _on_query(self, participant: str, query: Query) -> None:
        for item in query.items:
            decided = self._decided.get(item.txn_id)
            if decided is None:
                continue
            for slot in decided.slots:
                if slot.participant == participant:
                    self._decision_out.setdefault(participant, {})[item.txn_id] = DecisionItem(
                        item.txn_id, slot.pseq, decided.commit)

    def _send_prepares(self, txn: PendingTxn, slots=None) -> None:
        self._prepare_sent.sent(txn.txn_id, self._now)
        for slot in txn.slots if slots is None else slots:
            ops = tuple(op for op in txn.ops if op.participant == slot.participant)
            self._prepare_out.setdefault(slot.participant, {})[txn.txn_id] = PrepareItem(txn.txn_id, slot.pseq, ops)

    def _send_decisions(self, txn_id: str, participants=None) -> None:
        decided = self._decided.get(txn_id)
        if decided is None:
            self._unacked.pop(txn_id, None)
            self._decision_sent.forget(txn_id)
            return
        self._decision_sent.sent(txn_id, self._now)
        for slot in decided.slots:
            if participants is None or slot.participant in participants:
                self._decision_out.setdefault(slot.participant, {})[txn_id] = DecisionItem(
                    txn_id, slot.pseq, decided.commit)
