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

Shared state it owns (``_init_catch_up``): ``last_retransmit``, ``last_hinted``,
``last_status_ms``, ``peer_status``, ``higher_views``.
"""

from __future__ import annotations

from dtm_ray.crypto import seal_mac
from dtm_ray.pbft import quorum
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.messages import SlotRequest, Status


class CatchUp:
    def _init_catch_up(self) -> None:
        self.last_retransmit = 0
        self.last_hinted: dict[str, int] = {}  # replica -> when we last told it our stable checkpoint
        self.last_status_ms: int | None = None  # when we last sent our STATUS
        self.peer_status: dict[str, Status] = {}  # replica -> the latest STATUS it sent us
        self.higher_views: dict[str, int] = {}  # replica -> highest view seen in its messages

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

