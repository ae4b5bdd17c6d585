"""View changes and the timers that start them.

Timers: a backup asks for a view change when nothing executed for a timeout while it waited for
something, or when one request waited ``CENSORSHIP_FACTOR`` timeouts while batches with room for
it went through; the base timeout is the configured one or ``LATENCY_FACTOR`` times the observed
batch latency, whichever is longer; timeouts double per failed view change, and the timer to the
next view only starts once 2f+1 replicas asked for this one.

The view change itself is PBFT's: VIEW-CHANGE with the prepared certificates above the stable
checkpoint, NEW-VIEW from the new primary with 2f+1 of them and the re-proposed PRE-PREPAREs
(built and verified by the pure functions of ``viewchange``).

Shared state it owns (``_init_views``): ``view``, ``view_changing``, ``vc_target``,
``vc_attempts``, ``vc_deadline``, ``my_view_change``, ``view_changes``, ``new_view_payload``,
``verified``, and the timer inputs ``last_progress_ms``, ``last_full_batch_ms``,
``view_started_ms``, ``latency_ewma_ms``, all on ``timer_now`` (the clock without the replica's
own pauses).
"""

from __future__ import annotations

from dtm_ray.crypto import Envelope, seal_mac
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.pbft import persist, quorum
from dtm_ray.pbft.certcache import VerifiedCertificates
from dtm_ray.pbft.config import batch_item_bytes
from dtm_ray.pbft.events import ViewChanged
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.messages import (NULL_DIGEST, NewView, PrePrepare, PrePrepareHeader, Request, SlotRequest, ViewChange,
                                   assemble_preprepare, header_view, quote_preprepare, seal)
from dtm_ray.pbft.viewchange import (CheckedViewChange, NewViewPlan, certificate_key, plan_new_view,
                                     preprepares_for, verify_new_view, verify_view_change)
from dtm_ray.wire import decode


CENSORSHIP_FACTOR = 4  # a request that waits this many view-change timeouts replaces the primary
LATENCY_FACTOR = 4  # the view-change timeout is at least this many times the observed batch latency
LATENCY_EWMA_WEIGHT = 1 / 8  # weight of a new latency sample (as TCP's smoothed round-trip time)
# The observed latency stretches the timeout to at most this many configured timeouts: a faulty
# primary that slows everything down raises the latency it is judged by, so that must stay bounded.
MAX_ADAPTIVE_FACTOR = 8
# A gap between two ticks longer than this is a pause of the replica itself (a garbage collection,
# a starved process, one long turn): its excess is not counted by the view-change timers. Hosts
# tick every 3-50 ms and the simulator every 5, so a correct replica's normal gap is far below it.
PAUSE_MS = 100
# A restarted replica holds back its own suspicion for at most this many catch-up graces while
# its peers' STATUS says it is behind (``_catching_up``).
CATCH_UP_MAX_FACTOR = 4


class ViewChanges:
    def _init_views(self) -> None:
        self.view = 0
        self.view_changing = False  # sent VIEW-CHANGE for ``vc_target``, waiting for its NEW-VIEW
        self.vc_target = 0
        self.vc_attempts = 0  # view changes since the last executed batch: the timeout doubles
        self.vc_deadline: int | None = None  # armed once 2f+1 replicas asked for vc_target or more
        self.my_view_change: bytes | None = None
        self.view_changes: dict[str, CheckedViewChange] = {}  # latest valid one per replica
        # Why this replica asked for each view change it started (status: a view change under
        # plain load must say which rule tripped, or nobody can tell load from a faulty primary).
        self.view_change_causes: dict[str, int] = {}
        self.new_view_payload: bytes | None = None  # the NEW-VIEW that started the current view
        self.verified = VerifiedCertificates()  # certificates verified once, not per VIEW-CHANGE
        self.last_progress_ms = 0  # when we last executed a batch
        self.last_full_batch_ms = 0  # when we last executed a full batch: the primary had no room
        self.view_started_ms = 0  # when we entered the current view: waiting starts over for its primary
        # The timers run on ``timer_now``: the replica's clock minus the pauses it did not live
        # through (``_note_pause``). Every timer input above is stamped on that clock.
        self.paused_ms = 0
        self.pauses = 0
        self.latency_ewma_ms = 0.0  # smoothed batch latency: accepted here -> executed here

    # -----------------------------------------------------------------------------------------
    # Timers

    def _base_timeout_ms(self) -> int:
        """The configured timeout, stretched to LATENCY_FACTOR times the latency batches really
        see here (a slow network or a loaded machine is not a faulty primary: the adaptive
        timers of PBFT's implementation and BFT-SMaRt)."""
        configured = self.config.view_change_timeout_ms
        adaptive = min(LATENCY_FACTOR * self.latency_ewma_ms, MAX_ADAPTIVE_FACTOR * configured)
        return max(configured, int(adaptive))

    @property
    def timer_now(self) -> int:
        return self.now - self.paused_ms

    def _note_pause(self, gap_ms: int) -> None:
        """Called by ``tick`` with the time since the previous tick. A replica cannot judge its
        primary for time it was not running: measured on Ray at 512 clients, replicas' turns of
        0.3-0.9 s (taking in the first burst of requests, a starved process at a run's end) made
        backups blame a primary whose batches were on their way, so load alone changed views.
        Only the excess over PAUSE_MS is discounted, pause by pause, so a replica slowed down all
        the time (a flooding primary's traffic) still times its primary out, only later."""
        if gap_ms > PAUSE_MS:
            self.paused_ms += gap_ms - PAUSE_MS
            self.pauses += 1

    def _timeout_ms(self) -> int:
        """The base timeout, doubled per view change that did not lead to an execution."""
        return self._base_timeout_ms() * 2 ** min(self.vc_attempts, 10)

    @property
    def retransmit_ms(self) -> int:
        """A quarter of the base timeout: on a slow network, resending a vote before its first
        copy could have been answered only multiplies messages."""
        return max(10, self._base_timeout_ms() // 4)

    def _observe_latency(self, since_ms: int) -> None:
        """Soft state: replicas need not agree on it, and a restart starts over from the config.
        A batch stamped before our clock started (recovered from disk, received before the
        first tick) is no measure of anything."""
        if self.clock_start is None or since_ms < self.clock_start:
            return
        sample_ms = self.now - since_ms
        if self.latency_ewma_ms == 0.0:
            self.latency_ewma_ms = float(sample_ms)
        else:
            self.latency_ewma_ms += LATENCY_EWMA_WEIGHT * (sample_ms - self.latency_ewma_ms)

    def _check_timers(self) -> None:
        if self.view_changing:
            if self.vc_deadline is not None and self.now >= self.vc_deadline:
                self._start_view_change(self.vc_target + 1, "new-view-timeout")  # the NEW-VIEW did not come: next one
        elif (self.waiting_requests or self.waiting_proposals) and not self.state_target \
                and not self._catching_up():
            failing = self._primary_is_failing()
            if failing is not None:
                self._start_view_change(self.view + 1, failing)

    def _catch_up_grace_ms(self) -> int:
        """How long a restarted replica gives itself to learn what it missed (two rounds of its
        peers' STATUS messages and a view-change timeout) before its own timers may blame the
        primary. A view change it started alone, while the others go on in the current view,
        would leave it out until the next real view change: PBFT cannot take a VIEW-CHANGE back."""
        return 2 * self.config.status_interval_ms + self.config.view_change_timeout_ms

    def _catching_up(self) -> bool:
        """Within the grace after a restart; past it, still while the replica has not yet heard
        STATUS from f+1 peers, or f+1 of them (one correct) report having executed more than it
        has, up to CATCH_UP_MAX_FACTOR graces. A fixed grace was not enough: peers whose handle
        to it went stale while it was down only reach it again after their own retry (seconds on
        a loaded machine), and a lone view change started meanwhile shuts it out of the view it
        must catch up in (the idle catch-up test failed 1 run in 2 of CI on it). The f+1 view-change
        rule is unaffected: it joins a view change others ask for at once."""
        if self._catch_up_until is None:
            return False
        if self.now < self._catch_up_until:
            return True
        if self.now >= self._catch_up_until + (CATCH_UP_MAX_FACTOR - 1) * self._catch_up_grace_ms():
            self._catch_up_until = None
            return False
        k = quorum.weak(self.config.f)
        executed = sorted((s.executed for s in self.peer_status.values()), reverse=True)
        if len(executed) >= k and executed[k - 1] <= self.executed:
            self._catch_up_until = None  # caught up with what one correct peer at least reports
            return False
        return True

    def _primary_is_failing(self) -> str | None:
        """Something we wait for (a request, a due App proposal) is not being executed: either
        nothing executed for a timeout while we waited (PBFT's rule: a slow but working cluster
        keeps its primary), or one item waited CENSORSHIP_FACTOR timeouts although others went
        through in batches that had room for it (a primary that censors a client, or never
        proposes what the App needs).

        Waiting behind a queue is not censorship: every executed batch that was full (fresh
        requests + proposals = batch_size) restarts the censorship clock of everything waiting,
        because the primary had no room for it. Only batches with room that skip an item count
        against the primary, so a busy primary's latency grows with its queue instead of being
        replaced (which stalls the cluster and lengthens the queue: the collapse measured in
        docs/performance.md). Duplicates and replays do not make a batch
        full (``fresh`` counts first executions only), so a faulty primary cannot pad its way
        out of the rule."""
        first_request = next(iter(self.waiting_requests.values()), None)  # FIFO: the oldest
        oldest = min(t for t in (first_request, self.oldest_proposal_ms) if t is not None)
        oldest = max(oldest, self.view_started_ms)
        timeout = self._timeout_ms()
        if self.timer_now - max(oldest, self.last_progress_ms) >= timeout:
            return "stalled"
        if self.timer_now - max(oldest, self.last_full_batch_ms) >= CENSORSHIP_FACTOR * timeout:
            return "censored"
        return None

    # -----------------------------------------------------------------------------------------
    # VIEW-CHANGE and NEW-VIEW

    def _refused_from_primary(self) -> None:
        """The primary's own channel carried bytes that are no message, or a message in its name
        under a signature that is not its own. A correct replica sends neither, and nobody else
        can put anything on that channel: the transport names a message's deliverer only when it
        proves it (the Ray host, ``actors.channel``; the simulator's network cannot lie). So the
        primary is faulty and we ask to replace it at once; the others join when f+1 of us ask.
        Waiting for a timeout instead let a primary that corrupts half its messages hold the
        cluster at a sixth of its throughput for good: each lost PRE-PREPARE stalls in-order
        execution until a retransmission, while enough gets through never to look stalled."""
        if not self.is_primary and not self.view_changing:
            self._start_view_change(self.view + 1, "refused-primary")

    def _start_view_change(self, new_view: int, cause: str) -> None:
        """Ask for ``new_view``; ``cause`` names the rule that asked (counted in status)."""
        if new_view <= (self.vc_target if self.view_changing else self.view):
            return
        prepared = tuple(s.proof for _, s in sorted(self.log.slots.items())
                         if s.proof is not None and s.seq > self.stable.seq)
        vc = ViewChange(new_view, self.stable.seq, self.stable.proof, prepared)
        payload = self.safety.sign_view_change(vc)
        if payload is None:
            return
        self.view_changing, self.vc_target, self.my_view_change = True, new_view, payload
        self.view_change_causes[cause] = self.view_change_causes.get(cause, 0) + 1
        for proof in prepared:  # built from messages verified on receipt: not worth checking again
            self.verified.remember(certificate_key(proof))
        self.vc_deadline = None
        self.vc_attempts += 1
        self._broadcast(payload)
        certified = (header_view(p.preprepare) for p in prepared)
        self.view_changes[self.id] = CheckedViewChange(self.id, vc, payload, {h.seq: h for h in certified})
        self._arm_view_change_timer()
        self._try_new_view()

    def _arm_view_change_timer(self) -> None:
        """PBFT's rule: the timer that moves on to the next view starts only once 2f+1 replicas
        asked for this view or a later one. A replica that alone timed out waits for the others
        instead of racing ahead alone, so correct replicas never drift apart by more than what the
        f+1 rule (join a higher view f+1 others ask for) closes."""
        if not self.view_changing or self.vc_deadline is not None:
            return
        asking = sum(1 for c in self.view_changes.values() if c.vc.new_view >= self.vc_target)
        if asking >= quorum.strong(self.config.f):
            self.vc_deadline = self.now + self._timeout_ms()

    def _on_view_change(self, sender: str, payload: bytes) -> None:
        try:
            checked = verify_view_change(self.keys, self.config, payload, self.verified)
        except RemoteProtocolError as exc:  # signed by the sender, so its contents are its own
            self._evidence(sender, "forged-certificate", (payload,))
            self._reject(sender, f"invalid VIEW-CHANGE: {exc}")
            return
        self._compare_certificates(checked)
        new_view = checked.vc.new_view
        if new_view <= self.view:
            if new_view == self.view and self.is_primary and self.new_view_payload is not None:
                self._out.send(sender, self.new_view_payload, after_persist=False)  # it missed it
            return
        previous = self.view_changes.get(sender)
        if previous is not None and previous.vc.new_view >= new_view:
            return
        self.view_changes[sender] = checked
        # PBFT's liveness rule: f+1 replicas (one of them correct) want a higher view: join them
        mine = self.vc_target if self.view_changing else self.view
        higher = sorted(c.vc.new_view for r, c in self.view_changes.items() if r != self.id and c.vc.new_view > mine)
        if len(higher) >= quorum.weak(self.config.f):
            self._start_view_change(higher[0], "joined")  # f+1 asked first
        self._arm_view_change_timer()
        self._try_new_view()

    def _compare_certificates(self, checked: CheckedViewChange) -> None:
        """A certified pre-prepare that contradicts the one we accepted for the same (view, seq)
        proves that its primary equivocated."""
        for proof in checked.vc.prepared:
            pp = header_view(proof.preprepare)
            slot = self.log.get(pp.seq)
            if slot is not None and slot.pp is not None and slot.pp.view == pp.view and slot.pp.digest != pp.digest:
                # two headers the primary signed for one (view, seq): small, and proof on their own
                self._evidence(self.config.primary(pp.view), "equivocation",
                               (quote_preprepare(slot.pp_payload, slot.pp), proof.preprepare))

    def _try_new_view(self) -> None:
        view = self.vc_target
        if not self.view_changing or self.config.primary(view) != self.id:
            return
        vcs = sorted((c for c in self.view_changes.values() if c.vc.new_view == view), key=lambda c: c.sender)
        if len(vcs) < quorum.strong(self.config.f):
            return
        plan = plan_new_view(self.config, view, vcs)
        preprepares = []
        for header in preprepares_for(view, plan):
            payload = self.safety.sign_preprepare_header(header)
            if payload is None:
                return
            preprepares.append((header, payload))
        nv = NewView(view, tuple(c.payload for c in vcs), tuple(p for _, p in preprepares))
        self.new_view_payload = seal(self.keys, nv)
        self._broadcast(self.new_view_payload)
        self._enter_view(plan, preprepares)

    def _on_new_view(self, sender: str, nv: NewView, payload: bytes) -> None:
        if nv.view <= self.view or nv.view < self.safety.floor:
            return
        try:
            plan, preprepares = verify_new_view(self.keys, self.config, sender, nv, self.verified)
        except RemoteProtocolError as exc:
            self._evidence(sender, "forged-new-view", (payload,))
            self._reject(sender, f"invalid NEW-VIEW: {exc}")
            self._start_view_change(max(nv.view, self.vc_target) + 1, "forged-new-view")
            return
        self.new_view_payload = payload
        self._enter_view(plan, preprepares)

    def _enter_view(self, plan: NewViewPlan, headers: list[tuple[PrePrepareHeader, bytes]]) -> None:
        view = plan.view
        self.safety.raise_floor(view)
        self.view, self.view_changing, self.vc_target = view, False, view
        self._out.write(persist.VIEW_KEY, persist.u64(view))
        self.view_changes = {r: c for r, c in self.view_changes.items() if c.vc.new_view > view}
        if plan.min_s > self.stable.seq:
            mine = self.my_checkpoints.get(plan.min_s)
            if mine is not None and mine[0] == plan.min_digest:
                self._make_stable(plan.min_s, plan.min_digest, plan.min_proof, mine[1])
            else:
                self._want_state(plan.min_s)
        for slot in self.log.slots.values():
            slot.enter_view()
        self.missing_preprepares.clear()  # votes of the old view: its primary's copies no longer come
        self.primary_starves, self.relaying, self.relayed_until = False, {}, 0  # a new primary
        self.inflight.clear()
        self.inflight_proposals.clear()
        for header, quote in headers:
            if self.log.in_window(header.seq):
                self._complete_reproposal(self.log.slot(header.seq), header, quote)
        self.queued = {k: p for k, p in self.pending.items() if k not in self.inflight}
        self.queued_bytes = sum(map(batch_item_bytes, self.queued.values()))
        self._proposals_stale = True  # the proposals in flight changed
        self.next_seq = max([plan.min_s, self.executed, self.log.low] + [h.seq for h, _ in headers]) + 1
        self.view_started_ms = self.timer_now  # a fresh timer for the new primary
        self.batch_started = None
        for key, payload in self.pending.items():  # make sure the new primary has them
            if not self.is_primary and key not in self.inflight:
                self._out.send(self.primary, payload, after_persist=False)
        self._out.output(ViewChanged(self.id, view))

    # -----------------------------------------------------------------------------------------
    # Re-proposed batches: the NEW-VIEW names them by digest

    def _complete_reproposal(self, slot: Slot, header: PrePrepareHeader, quote: bytes) -> None:
        """Accept a re-proposed seq of the new view with its batch: one this replica accepted
        before (any view), the null batch, or, lacking both, ask every peer for the slot. A
        replica that has the batch completes the same signed PRE-PREPARE and serves it
        (``_on_slot_request``). Somebody correct has it: a certificate is 2f+1 signatures (the
        primary's header, 2f PREPAREs), so f+1 of its signers are correct, and a correct replica
        signs only for a batch it accepted (and keeps: ``log.BODIES_PER_SLOT``)."""
        body = ((), ()) if header.digest == NULL_DIGEST else slot.body(header.digest)
        if body is None:
            slot.wanted = quote
            self._fetch_slot(slot.seq)
            return
        pp, payload = assemble_preprepare(quote, *body)
        self._adopt_reproposal(slot, pp, payload)

    def _adopt_reproposal(self, slot: Slot, pp: PrePrepare, payload: bytes) -> None:
        self._accept_preprepare(slot, pp, payload)
        self.inflight.update(self._request_keys(pp))
        self.inflight_proposals.update(pp.proposals)

    def _wanted_matches(self, slot: Slot, pp: PrePrepare) -> bool:
        if slot.wanted is None:
            return False
        header = header_view(slot.wanted)
        return (header.view, header.digest) == (pp.view, pp.digest)

    def _wants_own_reproposal(self, pp: PrePrepare) -> bool:
        """A new primary whose NEW-VIEW re-proposed a batch it never had asks its peers for it
        like anybody (``_complete_reproposal``), and what they send back is the completed
        PRE-PREPARE in its own name: that one goes through the normal checks (signature, batch
        against digest, ``_wanted_matches``); anything else of ours coming back is ignored."""
        slot = self.log.get(pp.seq)
        return slot is not None and pp.view == self.view and self._wanted_matches(slot, pp)

    def _fetch_slot(self, seq: int) -> None:
        for r in self.peers:
            self._out.send(r, seal_mac(self.keys, r, SlotRequest(seq)), after_persist=False)

    def _fetch_wanted(self) -> None:
        """Retransmission: ask again for the batches of re-proposed seqs we still lack."""
        for seq, slot in sorted(self.log.slots.items()):
            if slot.wanted is not None:
                self._fetch_slot(seq)

    @staticmethod
    def _request_keys(pp: PrePrepare) -> list[tuple[str, int]]:
        out = []
        for raw in pp.requests:
            req = decode(decode(raw, Envelope).body, Request)
            out.append((req.client, req.request_id))
        return out

