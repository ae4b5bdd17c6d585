"""Request intake: which client requests a replica takes in, and which batches it holds back.

A request is authenticated once (``_admit``: the client's signature or authenticator, its size,
the App's policy), then remembered as *pending* until it executes, and forwarded to the primary
by a backup (the client's own envelope, so the primary checks the client's authentication
itself). A PRE-PREPARE is checked request by request with the same ``_admit``; one that waits for
the App (a proposal not valid here yet, ``Verdict.WAIT``) is *held* in its slot and re-checked
only after the App moved (see ``_retry_held``).

Admission (``dtm_ray.pbft.admission``): a new request is kept only while fewer than
``max_waiting_requests`` wait here (pending, or executed and awaiting the App's reply; a backup
stops a little earlier than the primary); otherwise its client gets a MAC'd BUSY and backs off.
A backup forwards a request it keeps at most once per ``retransmit_ms``.

Work per request is O(1): ``queued`` is the primary's queue (pending and in no pre-prepare of
this view, in arrival order), so cutting a batch takes its head instead of filtering every
pending request; ``waiting_requests`` is in arrival order too, so the oldest waiter, which the
view-change timer needs, is its first entry (every waiter has the same timeout and arrivals are
stamped with a clock that never goes back: a deadline heap would only ever pop its oldest entry).

Shared state it owns (set up by ``_init_intake``): ``pending``, ``pending_per_client``,
``queued``, ``forwarded_copies``, ``_admitted``, ``waiting_requests`` (request -> first seen here), ``held_seqs``,
``_refusals``, ``admission``. It uses the replica's ``clients`` table (replays), ``inflight``, ``view``,
``primary`` and ``_reject``.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain

from dtm_ray.crypto import Envelope, seal_mac
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.limits import TokenBucket
from dtm_ray.pbft.admission import Admission
from dtm_ray.pbft.admitted import AdmittedCache
from dtm_ray.pbft.app import Verdict, open_requests
from dtm_ray.pbft import authdefence
from dtm_ray.pbft.config import batch_item_bytes
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.messages import BadAuthenticator, Busy, PrePrepare, Reply, Request, open_request
from dtm_ray.wire import decode


MAX_PENDING = 10_000  # the default of PbftConfig.max_waiting_requests (the bound is the config's)
MAX_PENDING_PER_CLIENT = 16
REFUSALS_PER_S, REFUSAL_BURST = 10, 10  # refusal replies per client: a refused flood is no amplifier


class RequestIntake:
    def _init_intake(self) -> None:
        self.pending: dict[tuple[str, int], bytes] = {}  # requests seen, not yet executed
        self.pending_per_client: Counter[str] = Counter()
        self.queued: dict[tuple[str, int], bytes] = {}  # pending, in no pre-prepare of this view: FIFO
        self.queued_bytes = 0  # their batch_item_bytes: whether a batch is full by bytes, in O(1)
        self.forwarded_copies: set[tuple[str, int]] = set()  # pending at the primary as a backup forwarded it
        self._admitted = AdmittedCache()  # authentic, admissible request envelopes, verified once
        self.waiting_requests: dict[tuple[str, int], int] = {}  # request -> when first seen here (FIFO)
        self.held_seqs: set[int] = set()  # slots holding a pre-prepare for the App
        self._held_stale = False  # the App moved since held pre-prepares were last re-checked
        self._refusals = TokenBucket(REFUSALS_PER_S, REFUSAL_BURST)  # keyed by (authenticated) client
        self.admission = Admission(self.config.max_waiting_requests, len(self.config.clients or ()))

    def _admit(self, payload: bytes, env: Envelope) -> tuple[Request, str | None]:
        """Authenticate a client request and ask the App about it: (request, refusal or None).
        Raises ``RemoteProtocolError`` if it is not authentic. A request the replica keeps
        (pending, or in a batch it checked) is remembered in ``_admitted``: not verified twice."""
        known = self._admitted.get(payload)
        if known is not None:
            return known, None
        req = open_request(self.keys, self.config.replicas, self.config.auth_scheme, env)
        if not self.config.may_submit(req.client):
            return req, f"{req.client!r} is not a declared client"
        if len(req.operation) > self.config.max_request_bytes:
            return req, f"request of {len(req.operation)} bytes exceeds max_request_bytes"
        return req, self.app.check_request(req.client, req.operation)

    def _on_request(self, env: Envelope, payload: bytes) -> None:
        req, reason = self._admit(payload, env)
        if reason is not None:
            self._reject(req.client, f"request refused: {reason}")
            # The refusal is deterministic, so f+1 correct replicas answer alike and the client
            # accepts it like a result (one faulty replica's refusal alone is not enough).
            if self._refusals.allow(req.client, self.now):
                refusal = self.app.refusal_result(req.client, req.request_id, reason)
                self._send_reply(req.client, req.request_id, refusal)
            return
        entry = self.clients.get(req.client)
        if entry is not None and req.request_id <= entry.request_id:
            # A replay (or a client's own retransmission): the cached reply, nothing more. Only
            # declared clients get here, so the count is bounded by the configuration.
            self.replayed_counts[req.client] += 1
            if req.request_id == entry.request_id and entry.result is not None:
                self._send_reply(req.client, req.request_id, entry.result)
            return
        if self._mac_refused(req.client, env):  # f+1 complaints: this client must sign (authdefence)
            self._refuse_authenticator(req.client, req.request_id)
            return
        key = (req.client, req.request_id)
        if key in self.pending:
            self._prefer_clients_copy(key, payload)
        elif not self._keep(key, req, payload):
            return
        self.waiting_requests.setdefault(key, self.timer_now)
        if not self.is_primary and self.admission.may_forward(key, self.now, self.retransmit_ms):
            self._out.send(self.primary, payload, after_persist=False)  # the client's own envelope

    def _prefer_clients_copy(self, key: tuple[str, int], payload: bytes) -> None:
        """The primary holds a copy of this request that a backup forwarded, and now gets one not
        from a replica (the client's own): batch the client's. The forwarder may be faulty and
        have corrupted the authenticator's MACs of the other replicas (ours checked out), which
        would make them unable to vouch for the batch (``authdefence``) and stall its slot."""
        held = self.queued.get(key)
        if held is not None and held != payload and key in self.forwarded_copies \
                and self.delivered_by not in self.config.replicas:
            self.queued[key] = self.pending[key] = payload
            self.queued_bytes += batch_item_bytes(payload) - batch_item_bytes(held)
            self.forwarded_copies.discard(key)

    def _keep(self, key: tuple[str, int], req: Request, payload: bytes) -> bool:
        """Remember a new request as pending, if the admission bound and the client's share
        leave room; otherwise refuse it (a BUSY to the client when the bound is reached)."""
        if self.pending_per_client[req.client] >= MAX_PENDING_PER_CLIENT:
            self._reject(req.client, "too many pending requests")  # an honest client has one at a time
            return False
        waiting = self.requests_waiting()
        if not self.admission.room(waiting, self.is_primary):
            if self.admission.refuse(req.client, self.now) and req.client in self.keys.mac_keys:
                busy = Busy(self.view, req.client, req.request_id)  # depends on no write: may leave now
                self._out.send(req.client, seal_mac(self.keys, req.client, busy), after_persist=False)
            return False
        self.pending[key] = payload
        if self.is_primary and self.delivered_by in self.config.replicas:
            self.forwarded_copies.add(key)
        self.pending_per_client[req.client] += 1
        self._admitted.add(payload, req)
        if key not in self.inflight:
            self.queued[key] = payload
            self.queued_bytes += batch_item_bytes(payload)
        self.admission.admitted(waiting + 1)
        return True

    def requests_waiting(self) -> int:
        """Client requests taken in here and not answered: pending, or executed and waiting for
        the App's reply. The admission bound holds this below ``max_waiting_requests``."""
        return len(self.pending) + open_requests(self.app)

    def _forget_pending(self, key: tuple[str, int]) -> None:
        dropped = self.queued.pop(key, None)
        if dropped is not None:
            self.queued_bytes -= batch_item_bytes(dropped)
        self.admission.forget(key)
        self.forwarded_copies.discard(key)
        if self.pending.pop(key, None) is not None:
            self.pending_per_client[key[0]] -= 1
            if not self.pending_per_client[key[0]]:
                del self.pending_per_client[key[0]]

    def _send_reply(self, client: str, request_id: int, result: bytes) -> None:
        if client in self.keys.mac_keys:
            self._out.send(client, seal_mac(self.keys, client, Reply(self.view, client, request_id, result)))

    # -----------------------------------------------------------------------------------------
    # Checking a PRE-PREPARE's batch

    def _check_batch(self, pp: PrePrepare) -> tuple[Verdict, str | None, tuple[bytes, ...]]:
        """ACCEPT, WAIT (an App proposal not ready here yet), or REJECT with a reason when the
        batch is provably invalid; and the requests whose authenticator has a bad MAC for this
        replica only (not provable: the batch then waits for vouchers, see ``authdefence``)."""
        if len(pp.requests) + len(pp.proposals) > self.config.batch_size:
            # a correct primary never cuts more (``_propose``): refuse before verifying any of it
            return Verdict.REJECT, "batch larger than batch_size", ()
        entries = len(pp.requests) + len(pp.proposals)
        if entries > 1 and sum(map(batch_item_bytes, chain(pp.requests, pp.proposals))) > self.config.max_batch_bytes:
            return Verdict.REJECT, "batch larger than max_batch_bytes", ()
        seen, unverified = set(), []
        for raw in pp.requests:
            try:
                env = decode(raw, Envelope)
                req, refusal = self._admit(raw, env)
            except BadAuthenticator:
                if not authdefence.DEFENCE:
                    return Verdict.REJECT, None, ()
                unverified.append(raw)
                req, refusal = decode(env.body, Request), None
            except RemoteProtocolError:
                return Verdict.REJECT, "forged request", ()  # a correct primary checks it too
            if refusal is not None:
                return Verdict.REJECT, "request the App refuses", ()
            if (req.client, req.request_id) in seen:
                return Verdict.REJECT, "request twice in one batch", ()
            if not unverified or unverified[-1] is not raw:  # only what this replica authenticated
                self._admitted.add(raw, req)
            seen.add((req.client, req.request_id))
        waiting = False
        for proposal in pp.proposals:
            verdict = self.app.validate_proposal(proposal)
            if verdict is Verdict.REJECT:
                return Verdict.REJECT, "invalid proposal", ()
            waiting |= verdict is Verdict.WAIT
        return (Verdict.WAIT if waiting else Verdict.ACCEPT), None, tuple(unverified)

    def _hold(self, slot: Slot, pp: PrePrepare, payload: bytes, waiting_at: int) -> None:
        slot.held, slot.held_from = (pp, payload), waiting_at
        self.held_seqs.add(slot.seq)

    def _retry_held(self) -> None:
        """Re-check the pre-prepares held for the App, but only once the App moved (what a
        proposal waits for, a vote, a timer or an execution, reaches the App only through
        ``receive``, ``tick``, ``execute*`` or ``restore``), and each from the proposal it waited
        on: a held batch costs one ``validate_proposal`` per App step until it is ready, then
        one full check. Also while we ask for the next view: the view's batches still execute
        here once 2f+1 COMMITs make them final (``normalcase._current``), and a held one that
        never got its check would stop execution at its seq for good if nobody joins our view
        change (a restarted replica, its pre-prepare held for a transaction it had not seen)."""
        if not self._held_stale:
            return
        self._held_stale = False
        for seq in sorted(self.held_seqs):
            slot = self.log.get(seq)
            if slot is None or slot.held is None:
                self.held_seqs.discard(seq)  # accepted, collected or dropped by a view change
                continue
            pp, payload = slot.held
            waiting_at = self._first_waiting(pp, slot.held_from)
            if waiting_at is not None:
                slot.held_from = waiting_at
                continue
            slot.held = None
            self.held_seqs.discard(seq)
            self._on_preprepare(self.config.primary(pp.view), pp, payload)

    def _first_waiting(self, pp: PrePrepare, start: int) -> int | None:
        """The index of the first proposal from ``start`` on that still waits (None: none does,
        or one is rejected: the full check then decides)."""
        for i in range(start, len(pp.proposals)):
            verdict = self.app.validate_proposal(pp.proposals[i])
            if verdict is Verdict.WAIT:
                return i
            if verdict is Verdict.REJECT:
                return None
        return None
