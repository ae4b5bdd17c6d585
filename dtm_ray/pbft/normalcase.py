"""The normal case: the primary proposes, PRE-PREPARE / PREPARE / COMMIT, execution in seq order.

``_propose`` (primary only) cuts batches from the pending requests and the App's due proposals;
``_on_preprepare`` -> ``_accept_preprepare`` (a backup votes PREPARE) -> ``_check_prepared``
(2f matching PREPAREs: a prepared certificate, vote COMMIT) -> ``_check_committed`` (2f+1
COMMITs) -> ``_execute_ready``, which executes committed slots strictly in seq order.

Shared state it owns (``_init_normal_case``): ``next_seq``, ``inflight`` /
``inflight_proposals`` (what a pre-prepare of the current view already carries),
``batch_started``. It writes ``executed``, ``clients`` and the slots of ``log``; the timers read
``last_progress_ms`` / ``last_full_batch_ms``, which execution updates.
"""

from __future__ import annotations

from itertools import chain

from dtm_ray.crypto import Envelope
from dtm_ray.errors import AuthError
from dtm_ray.pbft import persist, quorum
from dtm_ray.pbft.app import ReplyItem, Verdict
from dtm_ray.pbft.config import batch_item_bytes
from dtm_ray.pbft.events import Executed
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.stability import ClientEntry
from dtm_ray.pbft.messages import Commit, Prepare, PrePrepare, PreparedProof, Request, batch_digest, quote_preprepare
from dtm_ray.wire import decode, encode


class NormalCase:
    def _init_normal_case(self) -> None:
        self.next_seq = 1  # the primary's next sequence number
        self.inflight: set[tuple[str, int]] = set()  # in a pre-prepare of the current view
        self.inflight_proposals: set[bytes] = set()
        self.batch_started: int | None = None
        self.queued_proposals: dict[bytes, None] = {}  # due, in no pre-prepare of this view (App order)
        self.queued_proposal_bytes = 0
        self.waiting_proposals: dict[bytes, int] = {}  # due proposal -> when first seen due here
        self.oldest_proposal_ms: int | None = None
        self._proposals_stale = True  # the App moved since ``proposals()`` was last asked

    # -----------------------------------------------------------------------------------------
    # The primary proposes

    def _propose(self) -> None:
        """Cut batches while there is room in the window and fewer than ``max_inflight_batches``
        of ours are uncommitted; a batch is cut when full, when the oldest waiting entry waited
        ``batch_wait_ms``, or at once if ``batch_wait_ms`` is 0."""
        if not self.is_primary or self.view_changing or self.state_target:
            return
        while self.next_seq <= self.log.high and self._room_in_flight():
            self._refresh_proposals()
            if not self.queued_proposals and not self.queued:
                self.batch_started = None
                return
            if self.batch_started is None:
                self.batch_started = self.now
            entries = len(self.queued_proposals) + len(self.queued)
            queued_bytes = self.queued_bytes + self.queued_proposal_bytes
            if entries < self.config.batch_size and queued_bytes <= self.config.max_batch_bytes \
                    and self.now - self.batch_started < self.config.batch_wait_ms:
                return  # not full yet, by count or bytes: wait (without walking the queue)
            props, reqs, full = self._cut_batch()
            if not full and self.now - self.batch_started < self.config.batch_wait_ms:
                return
            for p in props:
                del self.queued_proposals[p]
                self.queued_proposal_bytes -= batch_item_bytes(p)
            for k, payload in reqs:
                del self.queued[k]
                self.queued_bytes -= batch_item_bytes(payload)
            self._send_preprepare(tuple(p for _, p in reqs), tuple(props))
            self.inflight.update(k for k, _ in reqs)
            self.inflight_proposals.update(props)
            self.batch_started = self.now if full else None

    def _cut_batch(self) -> tuple[list[bytes], list[tuple[tuple[str, int], bytes]], bool]:
        """The next batch from the heads of the queues (proposals first), cut by count and by
        bytes (``batch_item_bytes`` of each entry, at most ``max_batch_bytes`` in all, so the
        signed PRE-PREPARE stays below the decoder's limit); and whether it is full: it reached
        ``batch_size`` or the next entry would not fit. A lone entry larger than the budget
        still goes alone (admission bounds requests well below it)."""
        budget, size = self.config.max_batch_bytes, 0
        props: list[bytes] = []
        reqs: list[tuple[tuple[str, int], bytes]] = []
        for kind, item in chain(((0, p) for p in self.queued_proposals), ((1, kv) for kv in self.queued.items())):
            if len(props) + len(reqs) >= self.config.batch_size:
                return props, reqs, True
            cost = batch_item_bytes(item if kind == 0 else item[1])
            if size + cost > budget and (props or reqs):
                return props, reqs, True
            size += cost
            (props if kind == 0 else reqs).append(item)
        return props, reqs, len(props) + len(reqs) >= self.config.batch_size

    # -----------------------------------------------------------------------------------------
    # The App's due proposals

    def _app_moved(self) -> None:
        """The App's soft state changed (``receive``, ``tick``, ``execute*``, ``restore``: the only
        ways it changes, see ``app``): its due proposals and its verdicts on held pre-prepares may
        be different now. They are asked for again once, at the end of the step, instead of on
        every message."""
        self._proposals_stale = True
        self._held_stale = True

    def _refresh_proposals(self) -> None:
        """Ask the App for its due proposals (only if it moved): which wait (and since when: the
        timers watch the oldest), and which the primary may still put in a batch. Called by the
        primary before it cuts a batch and by every replica on its tick (the timers), never per
        message on a backup: ``proposals()`` may cost the App a pass over its transactions."""
        if not self._proposals_stale:
            return
        self._proposals_stale = False
        due = self.app.proposals()
        self.waiting_proposals = {p: self.waiting_proposals.get(p, self.timer_now) for p in due}
        self.oldest_proposal_ms = min(self.waiting_proposals.values(), default=None)
        self.queued_proposals = dict.fromkeys(p for p in due if p not in self.inflight_proposals)
        self.queued_proposal_bytes = sum(map(batch_item_bytes, self.queued_proposals))

    def _room_in_flight(self) -> bool:
        """Whether the primary may start another instance: fewer than ``max_inflight_batches``
        pre-prepared in this view and not yet committed here (0: no bound)."""
        bound = self.config.max_inflight_batches
        if not bound:
            return True
        running = 0
        for seq in range(self.executed + 1, self.next_seq):
            slot = self.log.get(seq)
            if slot is not None and slot.pp is not None and slot.pp.view == self.view and not slot.committed:
                running += 1
                if running >= bound:
                    return False
        return True

    def _send_preprepare(self, requests: tuple[bytes, ...], proposals: tuple[bytes, ...]) -> None:
        seq = self.next_seq
        self.next_seq += 1
        pp = PrePrepare(self.view, seq, batch_digest(requests, proposals), requests, proposals)
        payload = self.safety.sign_preprepare(pp)
        if payload is None:  # this seq was used in this view before a restart: skip it
            return
        slot = self.log.slot(seq)
        slot.accept(pp, payload, self.now)
        self._out.write(persist.slot_key(persist.PP_PREFIX, seq), payload)
        self._broadcast(payload)
        self._check_prepared(slot)  # prepares may have arrived first (or none are needed: n = 1)

    # -----------------------------------------------------------------------------------------
    # PRE-PREPARE, PREPARE, COMMIT

    def _on_preprepare(self, sender: str, pp: PrePrepare, payload: bytes) -> None:
        if sender != self.config.primary(pp.view):
            raise AuthError(f"pre-prepare for view {pp.view} from {sender!r}, not its primary")
        if pp.view != self.view or not self.log.in_window(pp.seq):
            self._ignore(sender, pp.seq, pp.view)
            return
        slot = self.log.slot(pp.seq)
        known = self._known_preprepare(slot, pp.view)
        if known is not None:
            if known[0].digest != pp.digest:  # two signed headers for one (view, seq): small, and proof
                self._evidence(sender, "equivocation", (quote_preprepare(known[1], known[0]), quote_preprepare(payload, pp)))
                self._start_view_change(self.view + 1, "equivocation")
            else:  # the primary retransmits: it lacks our votes
                self._help_lagging(sender, slot)
            return
        if batch_digest(pp.requests, pp.proposals) != pp.digest:
            # The signature covers the header only: a batch that does not match it may have been
            # attached by anybody, so it proves nothing against the primary. Refused; if the
            # primary never sends the right one, the timers replace it. Counted against whoever
            # handed it to us: a peer relaying the primary's header with another batch is not the primary.
            self._reject(self.delivered_by, f"pre-prepare {pp.seq} of {sender}: the batch does not match its digest")
            return
        if self._wanted_matches(slot, pp):  # the batch of a seq the NEW-VIEW re-proposed
            self._adopt_reproposal(slot, pp, payload)
            return
        verdict, reason, unverified = self._check_batch(pp)
        if verdict is Verdict.REJECT:
            if reason is not None:  # provable: the primary signed a batch that is invalid on its face
                self._evidence(sender, "invalid-batch", (payload,))
                self._start_view_change(self.view + 1, "invalid-batch")
            return
        if verdict is Verdict.WAIT:
            self._hold(slot, pp, payload, self._first_waiting(pp, 0) or 0)
            return
        if unverified:  # a MAC bad for us only: wait for f+1 vouchers, complain (authdefence)
            self._await_vouchers(pp, payload, unverified)
            return
        self._accept_preprepare(slot, pp, payload)

    @staticmethod
    def _known_preprepare(slot: Slot, view: int) -> tuple[PrePrepare, bytes] | None:
        if slot.pp is not None and slot.pp.view == view:
            return slot.pp, slot.pp_payload
        if slot.held is not None and slot.held[0].view == view:
            return slot.held
        return None

    def _accept_preprepare(self, slot: Slot, pp: PrePrepare, payload: bytes) -> None:
        if slot.committed and slot.pp is not None and slot.pp.digest != pp.digest:
            self._reject(self.config.primary(pp.view), f"pre-prepare contradicts committed seq {pp.seq}")
            return
        self._preprepare_came(slot)
        slot.accept(pp, payload, self.now)
        self._out.write(persist.slot_key(persist.PP_PREFIX, pp.seq), payload)
        self._expose_conflicts(slot)
        if self.config.primary(pp.view) != self.id:
            self._relay_preprepare(slot)
            vote = self.safety.sign_prepare(pp.view, pp.seq, pp.digest)
            if vote is not None:  # None: we asked for a later view (we may still learn the outcome)
                slot.my_prepare = vote
                slot.prepares[self.id] = (pp.digest, vote)
                self._broadcast(vote)
        if slot.committed:
            # Re-proposed in a new view a batch we already committed: it is final, and the only
            # batch any view can re-propose at this seq, so vote COMMIT at once. Replicas that
            # have not committed it yet may need our vote; we will not retransmit it ourselves.
            self._send_commit(slot)
        self._check_prepared(slot)

    def _on_prepare(self, sender: str, p: Prepare, payload: bytes) -> None:
        if sender == self.config.primary(p.view):
            raise AuthError(f"PREPARE from {sender!r}, the primary of view {p.view}")
        if not self._current(sender, p.view, p.seq):
            return
        slot = self.log.slot(p.seq)
        if self._record_vote(slot.prepares, sender, p.digest, payload, slot):
            self._vote_without_preprepare(slot)
            self._expose_conflicts(slot)
            self._check_prepared(slot)

    def _on_commit(self, sender: str, c: Commit, payload: bytes) -> None:
        if not self._current(sender, c.view, c.seq):
            return
        slot = self.log.slot(c.seq)
        if self._record_vote(slot.commits, sender, c.digest, payload, slot):
            self._vote_without_preprepare(slot)
            self._expose_conflicts(slot)
            self._check_committed(slot)

    def _current(self, sender: str, view: int, seq: int) -> bool:
        """A vote of our view. While we ask for the next view we still record them (and accept the
        view's PRE-PREPAREs), without voting ourselves (the safety rules refuse: we promised not
        to): a batch with 2f+1 COMMITs is final whatever view comes next, so we may execute it.
        A replica whose view change nobody joined (it timed out alone, e.g. just after a restart)
        thus still catches up with the others in the view it asked to leave."""
        if view != self.view or not self.log.in_window(seq):
            self._ignore(sender, seq, view)
            return False
        return True

    def _record_vote(self, votes: dict[str, tuple[bytes, bytes]], sender: str, digest: bytes,
                     payload: bytes, slot: Slot) -> bool:
        """Keep one vote per replica per slot; a different second one is equivocation. Returns
        whether the vote is new. A repeated vote for a slot we committed means the sender is
        behind: send it what it needs to catch up."""
        previous = votes.get(sender)
        if previous is None:
            votes[sender] = (digest, payload)
            return True
        if previous[0] != digest:
            self._evidence(sender, "equivocation", (previous[1], payload))
        elif slot.committed:
            self._help_lagging(sender, slot)
        return False

    def _expose_conflicts(self, slot: Slot) -> None:
        """A peer voted for another digest in a slot whose pre-prepare we accepted: send it our
        pre-prepare (signed by the primary). If the primary equivocated, the peer now holds two
        conflicting signed pre-prepares: evidence, and a reason to replace the primary. Once per
        peer and slot, so a faulty voter cannot make us repeat it."""
        if slot.pp is None:
            return
        for peer, (digest, _) in list(slot.prepares.items()) + list(slot.commits.items()):
            if digest != slot.pp.digest and peer not in slot.notified and peer != self.id:
                slot.notified.add(peer)
                self._out.send(peer, slot.pp_payload, after_persist=False)

    def _check_prepared(self, slot: Slot) -> None:
        if slot.prepared or slot.pp is None:
            return
        primary = self.config.primary(slot.pp.view)
        prepares = slot.matching(slot.prepares, exclude=primary)
        if len(prepares) < quorum.strong(self.config.f) - 1:
            return
        slot.prepared = True
        slot.certify(PreparedProof(quote_preprepare(slot.pp_payload, slot.pp), tuple(prepares)), slot.pp.view,
                     slot.pp.digest)
        self._out.write(persist.slot_key(persist.PROOF_PREFIX, slot.seq), encode(slot.proof))
        self._send_commit(slot)
        self._check_committed(slot)

    def _send_commit(self, slot: Slot) -> None:
        if slot.my_commit is not None:
            return
        vote = self.safety.sign_commit(slot.pp.view, slot.seq, slot.pp.digest)
        if vote is not None:
            slot.my_commit = vote
            slot.commits[self.id] = (slot.pp.digest, vote)
            self._broadcast(vote)

    def _check_committed(self, slot: Slot) -> None:
        if slot.committed or not slot.prepared:
            return
        if len(slot.matching(slot.commits)) < quorum.strong(self.config.f):
            return
        slot.committed = True
        self._out.write(persist.slot_key(persist.COMMIT_PREFIX, slot.seq), slot.pp.digest)
        self._execute_ready()

    # -----------------------------------------------------------------------------------------
    # Execution

    def _execute_ready(self) -> None:
        while True:
            slot = self.log.get(self.executed + 1)
            if slot is None or not slot.committed or slot.pp is None:
                return
            self._execute(slot)

    def _execute(self, slot: Slot) -> None:
        pp, seq = slot.pp, slot.seq
        replies: list[ReplyItem] = []
        for proposal in pp.proposals:
            self.inflight_proposals.discard(proposal)
            self.waiting_proposals.pop(proposal, None)
            replies += self.app.execute_proposal(seq, proposal)
        self._app_moved()
        fresh = []
        # The latency the timers adapt to is the protocol's (this replica accepted the batch ->
        # executed it), not the queue's (a request's first sighting -> executed): the stall rule
        # needs a timeout above the gap between executions, and queueing time under load would
        # stretch it to many seconds and delay the replacement of a crashed primary as much.
        since = slot.accepted_ms
        for raw in pp.requests:
            req = self._admitted.pop(raw) or decode(decode(raw, Envelope).body, Request)
            key = (req.client, req.request_id)
            self._forget_pending(key)
            self.inflight.discard(key)
            self.waiting_requests.pop(key, None)
            entry = self.clients.get(req.client)
            if entry is not None and req.request_id <= entry.request_id:
                continue  # a replay, or ordered twice: exactly once
            self.clients[req.client] = ClientEntry(req.request_id, None)
            fresh.append(key)
            replies += self.app.execute(seq, req.client, req.request_id, req.operation)
        for client, request_id, result in replies:
            entry = self.clients.get(client)
            if entry is not None and entry.request_id == request_id:
                entry.result = result
            self._send_reply(client, request_id, result)
        self._observe_latency(since)
        self.executed = seq
        self.vc_attempts = 0
        self.last_progress_ms = self.timer_now
        if len(fresh) + len(pp.proposals) >= self.config.batch_size:
            self.last_full_batch_ms = self.timer_now
        self.next_seq = max(self.next_seq, seq + 1)
        self._out.output(Executed(self.id, pp.view, seq, pp.digest, tuple(fresh), len(pp.proposals)))
        if seq % self.config.checkpoint_interval == 0:
            self._take_checkpoint(seq)

