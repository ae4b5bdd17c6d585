"""Catching up: what keeps the protocol live over a lossy network and a quiet cluster.

Retransmission: every ``retransmit_ms`` a replica resends its own votes for slots it has not
executed yet, its VIEW-CHANGE while it waits for a NEW-VIEW, and asks (``SlotRequest``) for the
next slot when execution is stuck on a gap; peers answer a straggler's duplicates with their own
votes, once per interval (``_help_lagging``).

STATUS: retransmission only covers slots still in flight; once the clients stop, a replica that
missed the end (partitioned, restarted) hears nothing that tells it it is behind. So a replica
that executed nothing for ``status_interval_ms`` tells its peers where it stands, once per
interval: a few MAC'd bytes per peer per second, and nothing while traffic flows (the normal
messages carry the same news then). The lagging replica fetches the stable state f+1 of them
(one correct) vouch for; a peer that sees it behind resends its votes of the slots above that,
as for any straggler.

A missing PRE-PREPARE: a peer's vote for a slot of our view whose PRE-PREPARE we lack means the
primary sent it to that peer and not (yet) to us. If it has not come ``_missing_wait_ms`` after
that first vote, we ask the voters for it (``SlotRequest``; they relay the primary's signed
PRE-PREPARE, ``_help_lagging``). Without this, a primary that talks to only some backups (the
catalogue's ``selective``) made the others fetch each batch through ``_ask_for_gap``, once per
retransmit interval, and throughput fell to what that interval allowed (measured 0.59 of
fault-free on Ray). The wait is a quarter of the retransmit interval: long enough that a vote
merely overtaking the primary's copy does not make us ask. Once a pre-prepare came relayed
(we asked, and the primary's copy had not come), the primary is starving us: we ask at the
first vote, until a pre-prepare comes from the primary itself again (waiting a quarter interval
per slot would still cost a starved backup that wait on every batch). And a peer asked for a
pre-prepare relays it the next ``RELAY_SLOTS`` ones as it accepts them, before its own PREPARE
(``relaying``), so a starved backup gets each batch one hop after the others, not a round trip;
it waits for those as for the primary's own (``relayed_until``), and asks again, at once, for
the first one after them.
``preprepares_fetched`` counts the slots we had to ask for (``status()``).

Shared state it owns (``_init_catch_up``): ``last_retransmit``, ``last_hinted``,
``last_status_ms``, ``peer_status``, ``higher_views``, ``missing_preprepares``,
``preprepares_fetched``, ``primary_starves``, ``relaying``, ``relayed_until``.
"""

from __future__ import annotations

from dtm_ray.crypto import seal_mac
from dtm_ray.pbft import quorum
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.messages import SlotRequest, Status

RELAY_SLOTS = 32  # after a peer asked us for a pre-prepare, we relay it the next ones up to that seq + this


class CatchUp:
    def _init_catch_up(self) -> None:
        self.last_retransmit = 0
        self.last_hinted: dict[str, int] = {}  # replica -> when we last told it our stable checkpoint
        self.last_status_ms: int | None = None  # when we last sent our STATUS
        self.peer_status: dict[str, Status] = {}  # replica -> the latest STATUS it sent us
        self.higher_views: dict[str, int] = {}  # replica -> highest view seen in its messages
        self.missing_preprepares: dict[int, tuple[int, bool]] = {}  # seq -> (ask its voters at, asked before)
        self.preprepares_fetched = 0  # slots of our view whose pre-prepare we had to ask a peer for
        self.primary_starves = False  # this view's last pre-prepare came from a peer we asked, not the primary
        self.relaying: dict[str, int] = {}  # peer -> the last seq of this view whose pre-prepare we relay to it
        self.relayed_until = 0  # the last seq of this view whose pre-prepare the peers we asked relay to us

    # -----------------------------------------------------------------------------------------
    # Stragglers and messages of other views

    def _help_lagging(self, peer: str, slot: Slot, with_preprepare: bool = False) -> None:
        """Resend our messages of ``slot`` to ``peer``, at most once per retransmit interval (a
        helped peer's duplicate must not make it help us back, forever)."""
        if self.now - slot.helped.get(peer, -self.retransmit_ms) < self.retransmit_ms:
            return
        slot.helped[peer] = self.now
        preprepare = slot.pp_payload if with_preprepare or self.is_primary else None
        for payload in (preprepare, slot.my_prepare, slot.my_commit):
            if payload is not None:
                self._out.send(peer, payload, after_persist=False)

    def _ignore(self, sender: str, seq: int, view: int) -> None:
        """A message of another view or outside the window. If the sender is behind our stable
        checkpoint, tell it (once per retransmit interval) so it can fetch the state; if f+1
        replicas are in a higher view, we missed a view change: ask for it too, which makes its
        primary resend the NEW-VIEW."""
        self.ignored += 1
        self._note_view(sender, view)
        if seq <= self.log.low:
            self._hint_stable(sender)

    def _note_view(self, sender: str, view: int) -> None:
        """Remember the highest view ``sender`` claimed; once f+1 replicas (one correct) are in a
        higher view than ours, we missed a view change: ask for the (f+1)-th highest."""
        if view <= self.view:
            return
        self.higher_views[sender] = max(view, self.higher_views.get(sender, 0))
        ahead = sorted((v for v in self.higher_views.values() if v > self.view), reverse=True)
        if len(ahead) >= quorum.weak(self.config.f):
            self._start_view_change(ahead[quorum.weak(self.config.f) - 1], "peers-ahead")

    def _hint_stable(self, peer: str) -> None:
        """Send ``peer`` our CHECKPOINT of the stable seq (once per retransmit interval)."""
        if self.stable.seq in self.my_checkpoints and \
                self.now - self.last_hinted.get(peer, -self.retransmit_ms) >= self.retransmit_ms:
            self.last_hinted[peer] = self.now
            self._out.send(peer, self.my_checkpoints[self.stable.seq][2], after_persist=False)

    def _on_slot_request(self, sender: str, req: SlotRequest) -> None:
        if req.seq <= self.log.low:
            self._hint_stable(sender)
            return
        slot = self.log.get(req.seq)
        if slot is not None and slot.pp is not None and slot.pp.view == self.view and not self.view_changing:
            self._help_lagging(sender, slot, with_preprepare=True)
            if not self.is_primary and sender != self.primary:  # it lacked the primary's copy: relay the next ones too
                self._relay_from(sender, req.seq)

    def _relay_from(self, peer: str, seq: int) -> None:
        """Relay ``peer`` the pre-prepares after ``seq`` that we hold already, and up to
        ``seq + RELAY_SLOTS`` as we accept them."""
        until = self.relaying.get(peer, 0)
        for s in range(max(seq, until) + 1, seq + RELAY_SLOTS + 1):
            slot = self.log.get(s)
            if slot is not None and slot.pp is not None and slot.pp.view == self.view:
                self._out.send(peer, slot.pp_payload, after_persist=False)
        self.relaying[peer] = max(until, seq + RELAY_SLOTS)

    # -----------------------------------------------------------------------------------------
    # A PRE-PREPARE a peer has and we lack

    def _vote_without_preprepare(self, slot: Slot) -> None:
        """A peer voted in ``slot`` (of our view): if we lack its pre-prepare, ask for it, at
        once if the primary has been starving us, else at the latest ``_missing_wait_ms`` from now."""
        if (slot.pp is None or slot.pp.view != self.view) and slot.held is None and slot.seq > self.executed:
            if slot.seq not in self.missing_preprepares:
                self.missing_preprepares[slot.seq] = (self.now + self._missing_wait_ms(slot.seq), False)
            if self.primary_starves and slot.seq > self.relayed_until:
                self._fetch_missing_preprepares()

    def _relay_preprepare(self, slot: Slot) -> None:
        """Hand the pre-prepare we accepted to the peers that recently had to ask us for one."""
        for peer, until in self.relaying.items():
            if slot.seq <= until:
                self._out.send(peer, slot.pp_payload, after_persist=False)

    def _preprepare_came(self, slot: Slot) -> None:
        """We accepted ``slot``'s pre-prepare: from the primary itself (it does not starve us),
        or relayed by a peer after we asked (it does: ask at once from now on)."""
        if self.delivered_by == self.primary:
            self.primary_starves = False
        elif self.missing_preprepares.get(slot.seq, (0, False))[1]:
            self.primary_starves = True

    def _missing_wait_ms(self, seq: int) -> int:
        """How long a slot's pre-prepare may lag a peer's vote: no time if the primary starves us
        and no peer relays it, else a quarter of the retransmit interval."""
        return 0 if self.primary_starves and seq > self.relayed_until else max(5, self.retransmit_ms // 4)

    def _fetch_missing_preprepares(self) -> None:
        """Ask the voters of each slot whose pre-prepare is overdue, then again once per
        retransmit interval until it comes."""
        if not self.missing_preprepares or self.view_changing:
            return
        for seq, (ask_at, asked) in list(self.missing_preprepares.items()):
            slot = self.log.get(seq)
            if slot is None or seq <= self.executed or slot.held is not None or \
                    (slot.pp is not None and slot.pp.view == self.view):
                del self.missing_preprepares[seq]  # it came, or the slot moved on
            elif self.now >= ask_at:
                self.missing_preprepares[seq] = (self.now + self.retransmit_ms, True)
                self.preprepares_fetched += not asked
                self.relayed_until = max(self.relayed_until, seq + RELAY_SLOTS)  # what they relay now
                for r in sorted((set(slot.prepares) | set(slot.commits)) - {self.id}):
                    self._out.send(r, seal_mac(self.keys, r, SlotRequest(seq)), after_persist=False)

    # -----------------------------------------------------------------------------------------
    # Retransmission

    def _retransmit(self) -> None:
        if self.state_target:
            self._request_state()
        self._ask_for_gap()  # also while we ask for the next view: we may still execute this one's
        if self.view_changing:
            if self.my_view_change is not None:
                self._broadcast(self.my_view_change, after_persist=False)
            return
        self._fetch_wanted()
        for seq in sorted(self.log.slots):
            slot = self.log.slots[seq]
            if seq <= self.executed or slot.pp is None or self.now - slot.accepted_ms < self.retransmit_ms:
                continue  # done, or still young: the first copies are probably on their way
            for payload in (slot.pp_payload if self.is_primary else None, slot.my_prepare, slot.my_commit):
                if payload is not None:
                    self._broadcast(payload, after_persist=False)
        latest = max(self.my_checkpoints, default=0)
        if latest > self.stable.seq and self.now - self.checkpoint_taken_ms >= self.retransmit_ms:
            self._broadcast(self.my_checkpoints[latest][2], after_persist=False)

    def _ask_for_gap(self) -> None:
        """Execution is stuck at the next seq although later slots moved (so the cluster did):
        we lack its PRE-PREPARE or its votes, and peers that executed it do not retransmit.
        Ask them (they answer once per retransmit interval)."""
        nxt = self.executed + 1
        slot = self.log.get(nxt)
        if slot is not None and slot.pp is not None and self.now - slot.accepted_ms < self.retransmit_ms:
            return  # young: the normal messages are probably on their way
        if any(seq > nxt for seq in self.log.slots) or (slot is not None and (slot.prepares or slot.commits)):
            for r in self.peers:
                self._out.send(r, seal_mac(self.keys, r, SlotRequest(nxt)), after_persist=False)

    # -----------------------------------------------------------------------------------------
    # STATUS

    def _send_status(self) -> None:
        interval = self.config.status_interval_ms
        if not interval or (self.last_status_ms is not None and self.now - self.last_status_ms < interval):
            return
        if self.timer_now - self.last_progress_ms < interval:
            return  # traffic flows
        self.last_status_ms = self.now
        status = Status(self.view, self.executed, self.stable.seq)
        for r in self.peers:
            self._out.send(r, seal_mac(self.keys, r, status), after_persist=False)

    def _on_status(self, sender: str, status: Status) -> None:
        self.peer_status[sender] = status
        self._note_view(sender, status.view)
        self._catch_up_to_peers()
        self._help_peer(sender, status)

    def _catch_up_to_peers(self) -> None:
        """f+1 peers claim a stable checkpoint above what we executed: one of them is correct, so
        a certified state at least as high as the (f+1)-th highest claim exists. Fetch it."""
        k = quorum.weak(self.config.f)
        claims = sorted((s.stable_seq for s in self.peer_status.values()), reverse=True)
        if len(claims) >= k and claims[k - 1] > self.executed:
            self._want_state(claims[k - 1])

    def _help_peer(self, peer: str, status: Status) -> None:
        """``peer`` executed less than we did: our stable checkpoint if it is behind it, and our
        messages of the slots it lacks above (each at most once per retransmit interval)."""
        if status.executed >= self.executed:
            return
        if status.executed < self.log.low:
            self._hint_stable(peer)
        if status.view != self.view or self.view_changing:
            return  # it must first join our view (it learns ours from our own STATUS)
        for seq in range(max(status.executed, self.log.low) + 1, self.executed + 1):
            slot = self.log.get(seq)
            if slot is not None and slot.pp is not None and slot.pp.view == self.view:
                self._help_lagging(peer, slot, with_preprepare=True)

