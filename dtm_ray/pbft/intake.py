"""Request intake: which client requests a replica takes in, and which batches it holds back.

A request is authenticated once (``_admit``: the client's signature or authenticator, its size,
the App's policy), then remembered as *pending* until it executes, and forwarded to the primary
by a backup (the client's own envelope, so the primary checks the client's authentication
itself). A PRE-PREPARE is checked request by request with the same ``_admit``; one that waits for
the App (a proposal not valid here yet, ``Verdict.WAIT``) is *held* in its slot and re-checked.

Shared state it owns (set up by ``_init_intake``): ``pending``, ``pending_per_client``,
``_admitted``, ``waiting_since`` (request or due proposal -> first seen: what the view-change
timers watch), ``_refusals``. It uses the replica's ``clients`` table (replays), ``view``,
``primary`` and ``_reject``.
"""

from __future__ import annotations

from collections import Counter

from dtm_ray.crypto import Envelope, seal_mac
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.limits import TokenBucket
from dtm_ray.pbft.app import Verdict
from dtm_ray.pbft import authdefence
from dtm_ray.pbft.messages import BadAuthenticator, PrePrepare, Reply, Request, open_request
from dtm_ray.wire import decode


MAX_PENDING = 10_000  # requests remembered while waiting to be ordered
MAX_PENDING_PER_CLIENT = 16
MAX_ADMITTED_CACHE = 20_000  # authenticated request envelopes remembered (cleared when full)
REFUSALS_PER_S, REFUSAL_BURST = 10, 10  # refusal replies per client: a refused flood is no amplifier


class RequestIntake:
    def _init_intake(self) -> None:
        self.pending: dict[tuple[str, int], bytes] = {}  # requests seen, not yet executed
        self.pending_per_client: Counter[str] = Counter()
        self._admitted: dict[bytes, Request] = {}  # authentic, admissible request envelopes
        self.waiting_since: dict[tuple, int] = {}  # request or due proposal -> when first seen here
        self._refusals = TokenBucket(REFUSALS_PER_S, REFUSAL_BURST)  # keyed by (authenticated) client

    def _admit(self, payload: bytes, env: Envelope) -> tuple[Request, str | None]:
        """Authenticate a client request and ask the App about it: (request, refusal or None).
        Raises ``RemoteProtocolError`` if it is not authentic. A request admitted once (received
        from the client, then again inside a PRE-PREPARE) is not verified twice."""
        known = self._admitted.get(payload)
        if known is not None:
            return known, None
        req = open_request(self.keys, self.config.replicas, self.config.auth_scheme, env)
        if len(req.operation) > self.config.max_request_bytes:
            return req, f"request of {len(req.operation)} bytes exceeds max_request_bytes"
        reason = self.app.check_request(req.client, req.operation)
        if reason is None:
            if len(self._admitted) >= MAX_ADMITTED_CACHE:
                self._admitted.clear()
            self._admitted[payload] = req
        return req, reason

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
            if req.request_id == entry.request_id and entry.result is not None:
                self._send_reply(req.client, req.request_id, entry.result)
            return
        if self._mac_refused(req.client, env):  # f+1 complaints: this client must sign (authdefence)
            self._refuse_authenticator(req.client, req.request_id)
            return
        key = (req.client, req.request_id)
        if key not in self.pending:
            if len(self.pending) >= MAX_PENDING or self.pending_per_client[req.client] >= MAX_PENDING_PER_CLIENT:
                self._reject(req.client, "too many pending requests")
                return
            self.pending[key] = payload
            self.pending_per_client[req.client] += 1
        self.waiting_since.setdefault(("req",) + key, self.now)
        if not self.is_primary:
            self._out.send(self.primary, payload, after_persist=False)  # the client's own envelope

    def _forget_pending(self, key: tuple[str, int]) -> None:
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
            seen.add((req.client, req.request_id))
        waiting = False
        for proposal in pp.proposals:
            verdict = self.app.validate_proposal(proposal)
            if verdict is Verdict.REJECT:
                return Verdict.REJECT, "invalid proposal", ()
            waiting |= verdict is Verdict.WAIT
        return (Verdict.WAIT if waiting else Verdict.ACCEPT), None, tuple(unverified)

    def _retry_held(self) -> None:
        """Pre-prepares held for the App (Verdict.WAIT) are re-checked after every step."""
        for slot in [s for s in self.log.slots.values() if s.held is not None]:
            if slot.held is not None and not self.view_changing:
                pp, payload = slot.held
                slot.held = None
                self._on_preprepare(self.config.primary(pp.view), pp, payload)
