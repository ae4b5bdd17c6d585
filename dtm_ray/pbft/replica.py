"""The PBFT replica: a sans-I/O ``Node`` that wires the log, safety rules, checkpoints, view
changes and state transfer around an ``App``.

Reading order: ``receive`` authenticates and dispatches; the normal case is ``_on_request`` ->
``_propose`` (primary) -> ``_on_preprepare`` -> ``_on_prepare`` -> ``_on_commit`` ->
``_execute``; then checkpoints, view change, state transfer, timers, recovery, status.

Rules of this module:
- Nothing a peer sends can crash it: every ``RemoteProtocolError`` becomes a ``Rejected`` output
  (counted per sender), and provable misbehaviour (two conflicting signed messages, a signed
  message that is invalid on its face) becomes an ``Evidence`` output with the messages as proof.
- Votes (PRE-PREPARE, PREPARE, COMMIT, VIEW-CHANGE) are signed only by ``SafetyRules`` and leave
  with ``send_after_persist``; the state they depend on is in ``Ready.writes`` of the same step.
- Messages of another view, or outside the watermarks, are ignored (not counted: a correct but
  slow peer sends them too); retransmission on ``tick`` recovers lost messages.
- Roles are not subclasses: the primary differs only in ``_propose`` and in not sending PREPARE.

Liveness over a lossy network, without a message per request: every ``retransmit_ms``
(a quarter of the base view-change timeout) a replica resends its own votes for slots it has not
executed yet, its VIEW-CHANGE while it waits for a NEW-VIEW, and asks (``SlotRequest``) for the
next slot when execution is stuck on a gap; peers answer a straggler's duplicates with their own
votes, once per interval. Timers: a backup asks for a view change when nothing executed for a
timeout while it waited for something, or when one request waited ``CENSORSHIP_FACTOR``
timeouts while batches with room for it went through; the base timeout is the configured one or
``LATENCY_FACTOR`` times the observed batch latency, whichever is longer; timeouts double per
failed view change, and the timer to the next view only starts once 2f+1 replicas asked for
this one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dtm_ray.crypto import Envelope, KeyRing, open_envelope, seal_mac
from dtm_ray.errors import AuthError, ConfigError, RemoteProtocolError
from dtm_ray.limits import TokenBucket
from dtm_ray.node import Outbox, Ready, Storage
from dtm_ray.pbft import checkpoint, persist, quorum, statetransfer
from dtm_ray.pbft.app import App, ReplyItem, Verdict, take_events
from dtm_ray.pbft.certcache import VerifiedCertificates
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import (CheckpointStable, Evidence, Executed, Rejected, StateTransferred,
                                 ViewChanged)
from dtm_ray.pbft.log import Log, Slot
from dtm_ray.pbft.messages import (REPLICA_MESSAGES, Checkpoint, ClientRecord, Commit, EvidenceRecord,
                                   NewView, Prepare, PrePrepare, PreparedProof, Reply, ReplicaState, Request,
                                   SlotRequest, StableRecord, StateReply, StateRequest, Status, ViewChange,
                                   batch_digest,
                                   open_request, seal, state_digest)
from dtm_ray.pbft.safety import SafetyRules
from dtm_ray.pbft.viewchange import (CheckedViewChange, NewViewPlan, certificate_key, plan_new_view,
                                     preprepares_for, verify_new_view, verify_view_change)
from dtm_ray.wire import decode, encode

MAX_PENDING = 10_000  # requests remembered while waiting to be ordered
MAX_PENDING_PER_CLIENT = 16
MAX_EVIDENCE_KEPT = 1_000
MAX_COUNTED_SENDERS = 1_000
CENSORSHIP_FACTOR = 4  # a request that waits this many view-change timeouts replaces the primary
LATENCY_FACTOR = 4  # the view-change timeout is at least this many times the observed batch latency
LATENCY_EWMA_WEIGHT = 1 / 8  # weight of a new latency sample (as TCP's smoothed round-trip time)
# The observed latency stretches the timeout to at most this many configured timeouts: a faulty
# primary that slows everything down raises the latency it is judged by, so that must stay bounded.
MAX_ADAPTIVE_FACTOR = 8
MAX_ADMITTED_CACHE = 20_000  # authenticated request envelopes remembered (cleared when full)
REFUSALS_PER_S, REFUSAL_BURST = 10, 10  # refusal replies per client: a refused flood is no amplifier


@dataclass(slots=True)
class ClientEntry:
    request_id: int  # last executed request
    result: bytes | None  # its reply, once the App produced it


@dataclass(slots=True)
class Stable:
    seq: int = 0
    digest: bytes | None = None
    proof: tuple[bytes, ...] = ()
    state: bytes | None = None  # encode(ReplicaState), served to replicas in state transfer


class Replica:
    def __init__(self, replica_id: str, config: PbftConfig, keys: KeyRing, app: App, storage: Storage) -> None:
        if replica_id not in config.replicas:
            raise ConfigError(f"{replica_id!r} is not one of the replicas {config.replicas}")
        if keys.me != replica_id:
            raise ConfigError(f"key ring of {keys.me!r} handed to replica {replica_id!r}")
        self.node_id = self.id = replica_id
        self.config = config
        self.keys = keys
        self.app = app
        self.peers = tuple(r for r in config.replicas if r != replica_id)
        self._out = Outbox()
        self.safety = SafetyRules(keys, storage, self._out)

        self.view = 0
        self.view_changing = False  # sent VIEW-CHANGE for ``vc_target``, waiting for its NEW-VIEW
        self.vc_target = 0
        self.vc_attempts = 0  # view changes since the last executed batch: the timeout doubles
        self.vc_deadline: int | None = None  # armed once 2f+1 replicas asked for vc_target or more
        self.my_view_change: bytes | None = None
        self.view_changes: dict[str, CheckedViewChange] = {}  # latest valid one per replica
        self.new_view_payload: bytes | None = None  # the NEW-VIEW that started the current view
        self.verified = VerifiedCertificates()  # certificates verified once, not per VIEW-CHANGE

        self.log = Log(config)
        self.checkpoints = checkpoint.CheckpointVotes(config)
        self.stable = Stable()
        self.my_checkpoints: dict[int, tuple[bytes, bytes, bytes]] = {}  # seq -> (digest, state, signed)
        self.executed = 0
        self.next_seq = 1  # the primary's next sequence number
        self.clients: dict[str, ClientEntry] = {}

        self.pending: dict[tuple[str, int], bytes] = {}  # requests seen, not yet executed
        self.pending_per_client: Counter[str] = Counter()
        self._admitted: dict[bytes, Request] = {}  # authentic, admissible request envelopes
        self.inflight: set[tuple[str, int]] = set()  # in a pre-prepare of the current view
        self.inflight_proposals: set[bytes] = set()
        self.waiting_since: dict[tuple, int] = {}  # request or due proposal -> when first seen here
        self.batch_started: int | None = None

        self.state_target = 0  # want a verified stable state with seq >= this (0: none)
        self.state_rounds = 0
        self.now = 0
        self.last_retransmit = 0
        self.checkpoint_taken_ms = 0
        self.last_progress_ms = 0  # when we last executed a batch
        self.last_full_batch_ms = 0  # when we last executed a full batch: the primary had no room
        self.view_started_ms = 0  # when we entered the current view: waiting starts over for its primary
        self.latency_ewma_ms = 0.0  # smoothed batch latency: accepted here -> executed here
        self.clock_start: int | None = None  # the first tick's time: anything stamped before is no sample
        self.last_served: dict[str, int] = {}  # replica -> when we last sent it our state
        self.last_hinted: dict[str, int] = {}  # replica -> when we last told it our stable checkpoint
        self.last_status_ms: int | None = None  # when we last sent our STATUS
        self.peer_status: dict[str, Status] = {}  # replica -> the latest STATUS it sent us
        self._resume: int | None = None  # after a restart: the view change to redo on first tick

        self.evidence_counts: Counter[str] = Counter()
        self.rejected_counts: Counter[str] = Counter()
        self.ignored = 0
        self.higher_views: dict[str, int] = {}  # replica -> highest view seen in its messages
        self._probe = False  # an empty store: ask peers for their stable state on the first tick
        self._evidence_seen: set[tuple[str, str, tuple[bytes, ...]]] = set()
        self._refusals = TokenBucket(REFUSALS_PER_S, REFUSAL_BURST)  # keyed by (authenticated) client
        self._recover(storage)

    # =========================================================================================
    # The Node contract

    def receive(self, sender: str, payload: bytes) -> None:
        try:
            env = open_envelope(payload)
            body = decode(env.body)
        except RemoteProtocolError as exc:
            self._reject(sender, f"malformed: {exc}")
            return
        try:
            if isinstance(body, Request):
                self._on_request(env, payload)
            elif isinstance(body, REPLICA_MESSAGES):
                self._on_replica_message(env, body, payload)
            elif isinstance(body, (StateRequest, StateReply, SlotRequest, Status)):
                self._on_state_message(env, body)
            elif not self.app.receive(env):
                self._reject(sender, f"unexpected {type(body).__name__}")
        except RemoteProtocolError as exc:
            self._reject(sender, str(exc))
        self._after_step()

    def tick(self, now_ms: int) -> None:
        self.now = max(self.now, now_ms)
        if self.clock_start is None:
            self.clock_start = self.now
        if self._resume is not None:
            view, self._resume = self._resume, None
            self._start_view_change(view)
        if self._probe:
            self._probe = False
            for r in self.peers:
                self._out.send(r, seal_mac(self.keys, r, StateRequest(1)), after_persist=False)
        self.app.tick(self.now)
        self._track_due_proposals()
        self._check_timers()
        self._send_status()
        if self.now - self.last_retransmit >= self.retransmit_ms:
            self.last_retransmit = self.now
            self._retransmit()
        self._after_step()

    def take_ready(self) -> Ready:
        return self._out.take()

    def _after_step(self) -> None:
        self._retry_held()
        self._propose()
        for dest, payload in self.app.take_messages():
            self._out.send(dest, payload)
        for event in take_events(self.app):
            if isinstance(event, Evidence):  # the app's proof (a participant's two votes): count it
                self._evidence(event.accused, event.kind, event.proof, event.txn_id)
            elif isinstance(event, Rejected):  # the app refused a participant's input: count it per sender
                self._reject(event.sender, event.reason)
            else:
                self._out.output(event)

    # =========================================================================================
    # Authentication and dispatch

    def _on_replica_message(self, env: Envelope, body: object, payload: bytes) -> None:
        sender = env.sender
        if sender == self.id:
            self.ignored += 1  # our own message coming back (relayed as proof, or replayed)
            return
        if sender not in self.peers:
            raise AuthError(f"{type(body).__name__} from {sender!r}, not a peer replica")
        if not self.keys.verify(sender, env.body, env.auth):
            raise AuthError(f"bad signature on {type(body).__name__} from {sender!r}")
        if isinstance(body, PrePrepare):
            self._on_preprepare(sender, body, payload)
        elif isinstance(body, Prepare):
            self._on_prepare(sender, body, payload)
        elif isinstance(body, Commit):
            self._on_commit(sender, body, payload)
        elif isinstance(body, Checkpoint):
            self._on_checkpoint(sender, body, payload)
        elif isinstance(body, ViewChange):
            self._on_view_change(sender, payload)
        elif isinstance(body, NewView):
            self._on_new_view(sender, body, payload)

    def _on_state_message(self, env: Envelope, body: object) -> None:
        if env.sender not in self.peers:
            raise AuthError(f"{type(body).__name__} from {env.sender!r}, not a peer replica")
        if not self.keys.check_mac(env.sender, env.body, env.auth):
            raise AuthError(f"bad MAC on {type(body).__name__} from {env.sender!r}")
        if isinstance(body, StateRequest):
            self._on_state_request(env.sender, body)
        elif isinstance(body, SlotRequest):
            self._on_slot_request(env.sender, body)
        elif isinstance(body, Status):
            self._on_status(env.sender, body)
        else:
            self._on_state_reply(env.sender, body)

    def _reject(self, sender: str, reason: str) -> None:
        if sender not in self.rejected_counts and len(self.rejected_counts) >= MAX_COUNTED_SENDERS:
            sender = "<others>"  # the transport's sender is unauthenticated: bound what it can grow
        self.rejected_counts[sender] += 1
        self._out.output(Rejected(self.id, sender, reason))

    def _evidence(self, accused: str, kind: str, proof: tuple[bytes, ...], txn_id: str | None = None) -> None:
        key = (accused, kind, proof)
        if key in self._evidence_seen:
            return
        if len(self._evidence_seen) < MAX_EVIDENCE_KEPT:
            self._evidence_seen.add(key)
        self.evidence_counts[accused] += 1
        self._persist_evidence(accused, kind, proof)
        self._out.output(Evidence(self.id, accused, kind, proof, txn_id))

    def _persist_evidence(self, accused: str, kind: str, proof: tuple[bytes, ...]) -> None:
        """The n-th proof against ``accused`` goes to disk; the one EVIDENCE_PER_ACCUSED older is
        deleted, so a party that misbehaves forever costs bounded space (see ``persist``)."""
        n = self.evidence_counts[accused]
        self._out.write(persist.evidence_key(accused, n), encode(EvidenceRecord(accused, kind, proof)))
        if n > persist.EVIDENCE_PER_ACCUSED:
            self._out.write(persist.evidence_key(accused, n - persist.EVIDENCE_PER_ACCUSED), None)

    def _broadcast(self, payload: bytes, *, after_persist: bool = True) -> None:
        for r in self.peers:
            self._out.send(r, payload, after_persist=after_persist)

    @property
    def primary(self) -> str:
        return self.config.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.id

    # =========================================================================================
    # Requests

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

    # =========================================================================================
    # Normal case: the primary proposes

    def _propose(self) -> None:
        """Cut batches while there is room in the window and fewer than ``max_inflight_batches``
        of ours are uncommitted; a batch is cut when full, when the oldest waiting entry waited
        ``batch_wait_ms``, or at once if ``batch_wait_ms`` is 0."""
        if not self.is_primary or self.view_changing or self.state_target:
            return
        while self.next_seq <= self.log.high and self._room_in_flight():
            props = [p for p in self.app.proposals() if p not in self.inflight_proposals]
            reqs = [(k, p) for k, p in self.pending.items() if k not in self.inflight]
            if not props and not reqs:
                self.batch_started = None
                return
            if self.batch_started is None:
                self.batch_started = self.now
            full = len(props) + len(reqs) >= self.config.batch_size
            if not full and self.now - self.batch_started < self.config.batch_wait_ms:
                return
            props = props[: self.config.batch_size]
            reqs = reqs[: self.config.batch_size - len(props)]
            self._send_preprepare(tuple(p for _, p in reqs), tuple(props))
            self.inflight.update(k for k, _ in reqs)
            self.inflight_proposals.update(props)
            self.batch_started = self.now if full else None

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

    # =========================================================================================
    # Normal case: PRE-PREPARE, PREPARE, COMMIT

    def _on_preprepare(self, sender: str, pp: PrePrepare, payload: bytes) -> None:
        if sender != self.config.primary(pp.view):
            raise AuthError(f"pre-prepare for view {pp.view} from {sender!r}, not its primary")
        if pp.view != self.view or self.view_changing or not self.log.in_window(pp.seq):
            self._ignore(sender, pp.seq, pp.view)
            return
        slot = self.log.slot(pp.seq)
        known = self._known_preprepare(slot, pp.view)
        if known is not None:
            if known[0].digest != pp.digest:
                self._evidence(sender, "equivocation", (known[1], payload))
                self._start_view_change(self.view + 1)
            else:  # the primary retransmits: it lacks our votes
                self._help_lagging(sender, slot)
            return
        if batch_digest(pp.requests, pp.proposals) != pp.digest:
            self._evidence(sender, "wrong-digest", (payload,))
            self._start_view_change(self.view + 1)
            return
        verdict, reason = self._check_batch(pp)
        if verdict is Verdict.REJECT:
            if reason is not None:  # provable: the primary signed a batch that is invalid on its face
                self._evidence(sender, "invalid-batch", (payload,))
                self._start_view_change(self.view + 1)
            return
        if verdict is Verdict.WAIT:
            slot.held = (pp, payload)
            return
        self._accept_preprepare(slot, pp, payload)

    @staticmethod
    def _known_preprepare(slot: Slot, view: int) -> tuple[PrePrepare, bytes] | None:
        if slot.pp is not None and slot.pp.view == view:
            return slot.pp, slot.pp_payload
        if slot.held is not None and slot.held[0].view == view:
            return slot.held
        return None

    def _check_batch(self, pp: PrePrepare) -> tuple[Verdict, str | None]:
        """ACCEPT, WAIT (an App proposal not ready here yet), or REJECT with a reason when the
        batch is provably invalid (None when it is only unverifiable here, e.g. an HMAC
        authenticator a faulty client made bad for this replica only)."""
        if len(pp.requests) + len(pp.proposals) > self.config.batch_size:
            # a correct primary never cuts more (``_propose``): refuse before verifying any of it
            return Verdict.REJECT, "batch larger than batch_size"
        seen = set()
        for raw in pp.requests:
            try:
                req, refusal = self._admit(raw, decode(raw, Envelope))
            except RemoteProtocolError:
                return Verdict.REJECT, ("forged request" if self.config.auth_scheme == "ed25519" else None)
            if refusal is not None:
                return Verdict.REJECT, "request the App refuses"
            if (req.client, req.request_id) in seen:
                return Verdict.REJECT, "request twice in one batch"
            seen.add((req.client, req.request_id))
        waiting = False
        for proposal in pp.proposals:
            verdict = self.app.validate_proposal(proposal)
            if verdict is Verdict.REJECT:
                return Verdict.REJECT, "invalid proposal"
            waiting |= verdict is Verdict.WAIT
        return (Verdict.WAIT if waiting else Verdict.ACCEPT), None

    def _retry_held(self) -> None:
        """Pre-prepares held for the App (Verdict.WAIT) are re-checked after every step."""
        for slot in [s for s in self.log.slots.values() if s.held is not None]:
            if slot.held is not None and not self.view_changing:
                pp, payload = slot.held
                slot.held = None
                self._on_preprepare(self.config.primary(pp.view), pp, payload)

    def _accept_preprepare(self, slot: Slot, pp: PrePrepare, payload: bytes) -> None:
        if slot.committed and slot.pp is not None and slot.pp.digest != pp.digest:
            self._reject(self.config.primary(pp.view), f"pre-prepare contradicts committed seq {pp.seq}")
            return
        slot.accept(pp, payload, self.now)
        self._out.write(persist.slot_key(persist.PP_PREFIX, pp.seq), payload)
        self._expose_conflicts(slot)
        if self.config.primary(pp.view) != self.id:
            vote = self.safety.sign_prepare(pp.view, pp.seq, pp.digest)
            if vote is None:
                return
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
            self._expose_conflicts(slot)
            self._check_prepared(slot)

    def _on_commit(self, sender: str, c: Commit, payload: bytes) -> None:
        if not self._current(sender, c.view, c.seq):
            return
        slot = self.log.slot(c.seq)
        if self._record_vote(slot.commits, sender, c.digest, payload, slot):
            self._expose_conflicts(slot)
            self._check_committed(slot)

    def _current(self, sender: str, view: int, seq: int) -> bool:
        if view != self.view or self.view_changing or not self.log.in_window(seq):
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
            self._start_view_change(ahead[quorum.weak(self.config.f) - 1])

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

    def _check_prepared(self, slot: Slot) -> None:
        if slot.prepared or slot.pp is None:
            return
        primary = self.config.primary(slot.pp.view)
        prepares = slot.matching(slot.prepares, exclude=primary)
        if len(prepares) < quorum.strong(self.config.f) - 1:
            return
        slot.prepared = True
        slot.proof = PreparedProof(slot.pp_payload, tuple(prepares))
        slot.proof_view = slot.pp.view
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

    # =========================================================================================
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
            self.waiting_since.pop(("prop", proposal), None)
            replies += self.app.execute_proposal(seq, proposal)
        fresh = []
        # The latency the timers adapt to is the protocol's (this replica accepted the batch ->
        # executed it), not the queue's (a request's first sighting -> executed): the stall rule
        # needs a timeout above the gap between executions, and queueing time under load would
        # stretch it to many seconds and delay the replacement of a crashed primary as much.
        since = slot.accepted_ms
        for raw in pp.requests:
            req = self._admitted.pop(raw, None) or decode(decode(raw, Envelope).body, Request)
            key = (req.client, req.request_id)
            self._forget_pending(key)
            self.inflight.discard(key)
            self.waiting_since.pop(("req",) + key, None)
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
        self.last_progress_ms = self.now
        if len(fresh) + len(pp.proposals) >= self.config.batch_size:
            self.last_full_batch_ms = self.now
        self.next_seq = max(self.next_seq, seq + 1)
        self._out.output(Executed(self.id, pp.view, seq, pp.digest, tuple(fresh), len(pp.proposals)))
        if seq % self.config.checkpoint_interval == 0:
            self._take_checkpoint(seq)

    # =========================================================================================
    # Checkpoints and garbage collection

    def _replica_state(self, seq: int) -> bytes:
        clients = tuple(ClientRecord(c, e.request_id, e.result) for c, e in sorted(self.clients.items()))
        return encode(ReplicaState(seq, self.app.snapshot(), clients))

    def _take_checkpoint(self, seq: int) -> None:
        state = self._replica_state(seq)
        digest = state_digest(state)
        payload = seal(self.keys, Checkpoint(seq, digest))
        self.my_checkpoints[seq] = (digest, state, payload)
        self.checkpoint_taken_ms = self.now
        self._broadcast(payload)
        self.checkpoints.add(self.id, Checkpoint(seq, digest), payload)
        self._check_stable()

    def _on_checkpoint(self, sender: str, cp: Checkpoint, payload: bytes) -> None:
        conflict = self.checkpoints.add(sender, cp, payload)
        if conflict is not None:
            self._evidence(sender, "equivocation", (conflict.first, conflict.second))
            return
        self._check_stable()
        ahead = self.checkpoints.ahead(self.executed)
        if len(ahead) >= quorum.weak(self.config.f):
            self._want_state(self.executed + 1)  # f+1 replicas, one correct, are past our window

    def _check_stable(self) -> None:
        for seq, digest, proof in self.checkpoints.stable_candidates():
            mine = self.my_checkpoints.get(seq)
            if mine is not None and mine[0] == digest:
                self._make_stable(seq, digest, proof, mine[1])
            elif mine is not None or seq > self.executed:
                self._want_state(seq)  # certified by 2f+1 and we cannot produce it: fetch it

    def _make_stable(self, seq: int, digest: bytes, proof: tuple[bytes, ...], state: bytes) -> None:
        if seq <= self.stable.seq:
            return
        self.stable = Stable(seq, digest, proof, state)
        self._out.write(persist.STABLE_KEY, encode(StableRecord(seq, state, proof)))
        old_low = self.log.low
        self.log.collect(seq)
        for s in range(old_low + 1, seq + 1):
            for prefix in persist.SLOT_PREFIXES:
                self._out.write(persist.slot_key(prefix, s), None)
        self.safety.forget_through(seq)
        self.checkpoints.mark_stable(seq)
        for s in [s for s in self.my_checkpoints if s < seq]:
            del self.my_checkpoints[s]
        if self.state_target and self.state_target <= seq:
            self.state_target = 0
        self._out.output(CheckpointStable(self.id, seq, digest, len(self.log)))

    # =========================================================================================
    # View change

    def _base_timeout_ms(self) -> int:
        """The configured timeout, stretched to LATENCY_FACTOR times the latency batches really
        see here (a slow network or a loaded machine is not a faulty primary: the adaptive
        timers of PBFT's implementation and BFT-SMaRt)."""
        configured = self.config.view_change_timeout_ms
        adaptive = min(LATENCY_FACTOR * self.latency_ewma_ms, MAX_ADAPTIVE_FACTOR * configured)
        return max(configured, int(adaptive))

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

    def _track_due_proposals(self) -> None:
        due = set(self.app.proposals())
        for key in [k for k in self.waiting_since if k[0] == "prop" and k[1] not in due]:
            del self.waiting_since[key]
        for proposal in due:
            self.waiting_since.setdefault(("prop", proposal), self.now)

    def _check_timers(self) -> None:
        if self.view_changing:
            if self.vc_deadline is not None and self.now >= self.vc_deadline:
                self._start_view_change(self.vc_target + 1)  # the NEW-VIEW did not come: next one
        elif self.waiting_since and not self.state_target and self._primary_is_failing():
            self._start_view_change(self.view + 1)

    def _primary_is_failing(self) -> bool:
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
        docs/findings/performance-proposals.md). Duplicates and replays do not make a batch
        full (``fresh`` counts first executions only), so a faulty primary cannot pad its way
        out of the rule."""
        oldest = max(min(self.waiting_since.values()), self.view_started_ms)
        timeout = self._timeout_ms()
        stalled = self.now - max(oldest, self.last_progress_ms) >= timeout
        censored = self.now - max(oldest, self.last_full_batch_ms) >= CENSORSHIP_FACTOR * timeout
        return stalled or censored

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= (self.vc_target if self.view_changing else self.view):
            return
        prepared = tuple(s.proof for _, s in sorted(self.log.slots.items())
                         if s.proof is not None and s.seq > self.stable.seq)
        vc = ViewChange(new_view, self.stable.seq, self.stable.proof, prepared)
        payload = self.safety.sign_view_change(vc)
        if payload is None:
            return
        self.view_changing, self.vc_target, self.my_view_change = True, new_view, payload
        for proof in prepared:  # built from messages verified on receipt: not worth checking again
            self.verified.remember(certificate_key(proof))
        self.vc_deadline = None
        self.vc_attempts += 1
        self._broadcast(payload)
        certified = {decode(decode(p.preprepare, Envelope).body, PrePrepare) for p in prepared}
        self.view_changes[self.id] = CheckedViewChange(self.id, vc, payload, {pp.seq: pp for pp in certified})
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
            self._start_view_change(higher[0])
        self._arm_view_change_timer()
        self._try_new_view()

    def _compare_certificates(self, checked: CheckedViewChange) -> None:
        """A certified pre-prepare that contradicts the one we accepted for the same (view, seq)
        proves that its primary equivocated."""
        for proof in checked.vc.prepared:
            pp = decode(decode(proof.preprepare, Envelope).body, PrePrepare)
            slot = self.log.get(pp.seq)
            if slot is not None and slot.pp is not None and slot.pp.view == pp.view and slot.pp.digest != pp.digest:
                self._evidence(self.config.primary(pp.view), "equivocation", (slot.pp_payload, proof.preprepare))

    def _try_new_view(self) -> None:
        view = self.vc_target
        if not self.view_changing or self.config.primary(view) != self.id:
            return
        vcs = sorted((c for c in self.view_changes.values() if c.vc.new_view == view), key=lambda c: c.sender)
        if len(vcs) < quorum.strong(self.config.f):
            return
        plan = plan_new_view(self.config, view, vcs)
        preprepares = []
        for pp in preprepares_for(view, plan):
            payload = self.safety.sign_preprepare(pp)
            if payload is None:
                return
            preprepares.append((pp, payload))
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
            self._start_view_change(max(nv.view, self.vc_target) + 1)
            return
        self.new_view_payload = payload
        self._enter_view(plan, preprepares)

    def _enter_view(self, plan: NewViewPlan, preprepares: list[tuple[PrePrepare, bytes]]) -> None:
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
        self.inflight.clear()
        self.inflight_proposals.clear()
        for pp, payload in preprepares:
            if self.log.in_window(pp.seq):
                self._accept_preprepare(self.log.slot(pp.seq), pp, payload)
                self.inflight.update(self._request_keys(pp))
                self.inflight_proposals.update(pp.proposals)
        self.next_seq = max([plan.min_s, self.executed, self.log.low] + [pp.seq for pp, _ in preprepares]) + 1
        self.view_started_ms = self.now  # a fresh timer for the new primary
        self.batch_started = None
        for key, payload in self.pending.items():  # make sure the new primary has them
            if not self.is_primary and key not in self.inflight:
                self._out.send(self.primary, payload, after_persist=False)
        self._out.output(ViewChanged(self.id, view))

    @staticmethod
    def _request_keys(pp: PrePrepare) -> list[tuple[str, int]]:
        out = []
        for raw in pp.requests:
            req = decode(decode(raw, Envelope).body, Request)
            out.append((req.client, req.request_id))
        return out

    # =========================================================================================
    # State transfer

    def _want_state(self, seq: int) -> None:
        """Note that we need a certified state of at least ``seq``. The request leaves with the
        next retransmission, not at once: a replica only slightly behind usually executes up to
        the checkpoint itself meanwhile, and then nobody has to ship it a snapshot."""
        if seq <= self.stable.seq and seq <= self.executed:
            return
        self.state_target = max(self.state_target, seq)

    def _request_state(self) -> None:
        """Ask f+1 peers (one of them correct), a different group each round."""
        self.state_rounds += 1
        for r in statetransfer.sources(self.peers, self.config.f, self.state_rounds):
            self._out.send(r, seal_mac(self.keys, r, StateRequest(self.state_target)), after_persist=False)

    def _on_state_request(self, sender: str, req: StateRequest) -> None:
        if self.stable.state is None or self.stable.seq < max(req.seq, 1):
            return
        if self.now - self.last_served.get(sender, -self.retransmit_ms) < self.retransmit_ms:
            return
        self.last_served[sender] = self.now
        reply = StateReply(self.stable.seq, self.stable.state, self.stable.proof)
        self._out.send(sender, seal_mac(self.keys, sender, reply), after_persist=False)

    def _on_state_reply(self, sender: str, rep: StateReply) -> None:
        """Any certified state above ours is welcome (it is what 2f+1 replicas vouch for); one at
        or below what we executed only when we asked for it (our own state was found wrong)."""
        wanted = self.state_target and rep.seq >= self.state_target
        if rep.seq <= self.stable.seq or (rep.seq <= self.executed and not wanted):
            return
        digest, state = statetransfer.verify_reply(self.keys, self.config, rep)
        self._install_state(rep.seq, digest, rep.proof, rep.state, state)

    def _install_state(self, seq: int, digest: bytes, proof: tuple[bytes, ...], raw: bytes,
                       state: ReplicaState) -> None:
        self.app.restore(state.app)
        self.clients = {r.client: ClientEntry(r.request_id, r.result) for r in state.clients}
        self.executed = seq
        self.my_checkpoints[seq] = (digest, raw, seal(self.keys, Checkpoint(seq, digest)))
        self._make_stable(seq, digest, proof, raw)
        self.state_target = 0
        for key in [k for k in self.pending if k[1] <= self.clients.get(k[0], ClientEntry(0, None)).request_id]:
            self._forget_pending(key)
            self.waiting_since.pop(("req",) + key, None)
        self.next_seq = max(self.next_seq, seq + 1)
        self._out.output(StateTransferred(self.id, seq))
        self._execute_ready()

    # =========================================================================================
    # Retransmission: what keeps the protocol live over a lossy network

    def _retransmit(self) -> None:
        if self.state_target:
            self._request_state()
        if self.view_changing:
            if self.my_view_change is not None:
                self._broadcast(self.my_view_change, after_persist=False)
            return
        self._ask_for_gap()
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

    # =========================================================================================
    # STATUS: what keeps a quiet cluster from leaving a lagging replica behind
    #
    # Retransmission only covers slots still in flight; once the clients stop, a replica that
    # missed the end (partitioned, restarted) hears nothing that tells it it is behind. So a
    # replica that executed nothing for ``status_interval_ms`` tells its peers where it stands,
    # once per interval: a few MAC'd bytes per peer per second, and nothing while traffic flows
    # (the normal messages carry the same news then). The lagging replica fetches the stable
    # state f+1 of them (one correct) vouch for; a peer that sees it behind resends its votes
    # of the slots above that, as for any straggler.

    def _send_status(self) -> None:
        interval = self.config.status_interval_ms
        if not interval or (self.last_status_ms is not None and self.now - self.last_status_ms < interval):
            return
        if self.now - self.last_progress_ms < interval:
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

    # =========================================================================================
    # Recovery from storage

    def _recover(self, storage: Storage) -> None:
        raw_view = storage.get(persist.VIEW_KEY)
        self.view = self.vc_target = persist.from_u64(raw_view) if raw_view else 0
        raw_stable = storage.get(persist.STABLE_KEY)
        if raw_stable is not None:
            record = decode(raw_stable, StableRecord)
            state = decode(record.state, ReplicaState)
            self.app.restore(state.app)
            self.clients = {r.client: ClientEntry(r.request_id, r.result) for r in state.clients}
            digest = state_digest(record.state)
            self.stable = Stable(record.seq, digest, record.proof, record.state)
            self.my_checkpoints[record.seq] = (digest, record.state, seal(self.keys, Checkpoint(record.seq, digest)))
            self.executed = record.seq
            self.log.collect(record.seq)
            self.checkpoints.mark_stable(record.seq)
        for key, payload in storage.items(persist.PP_PREFIX):
            seq = persist.seq_of(persist.PP_PREFIX, key)
            if self.log.in_window(seq):
                self.log.slot(seq).accept(decode(decode(payload, Envelope).body, PrePrepare), payload, 0)
        for key, raw in storage.items(persist.PROOF_PREFIX):
            slot = self.log.get(persist.seq_of(persist.PROOF_PREFIX, key))
            if slot is not None:
                slot.proof = decode(raw, PreparedProof)
                slot.proof_view = decode(decode(slot.proof.preprepare, Envelope).body, PrePrepare).view
        for key, digest in storage.items(persist.COMMIT_PREFIX):
            slot = self.log.get(persist.seq_of(persist.COMMIT_PREFIX, key))
            if slot is not None and slot.pp is not None and slot.pp.digest == digest:
                slot.committed = True
        for key, _ in storage.items(persist.EVIDENCE_PREFIX):  # the highest n is the count
            accused, n = persist.evidence_of(key)
            self.evidence_counts[accused] = max(self.evidence_counts[accused], n)
        self._execute_ready()
        self.next_seq = max([self.executed, self.log.low] + list(self.log.slots)) + 1
        for slot in self.log.slots.values():
            if slot.pp is not None and slot.pp.view != self.view and not slot.committed:
                slot.pp = slot.pp_payload = None  # accepted in an older view: only its proof matters
        if self.safety.floor > self.view:
            self._resume = self.safety.floor  # we had asked for a view change: ask again
        elif raw_view is None and raw_stable is None and not self.log.slots:
            self._probe = True  # an empty store: a new replica, or one that lost its disk
        elif self.safety.floor == self.view:
            self._revote_after_restart()

    def _revote_after_restart(self) -> None:
        """Votes of the current view were lost from memory; re-sign them (the safety rules allow
        repeating a vote, never changing it) so retransmission can resend them."""
        for slot in self.log.slots.values():
            if slot.pp is None or slot.pp.view != self.view:
                continue
            if self.config.primary(self.view) != self.id:
                slot.my_prepare = self.safety.sign_prepare(self.view, slot.seq, slot.pp.digest)
                if slot.my_prepare is not None:
                    slot.prepares[self.id] = (slot.pp.digest, slot.my_prepare)
            if slot.proof is not None and slot.proof_view == self.view:
                slot.prepared = True
                slot.my_commit = self.safety.sign_commit(self.view, slot.seq, slot.pp.digest)
                if slot.my_commit is not None:
                    slot.commits[self.id] = (slot.pp.digest, slot.my_commit)

    # =========================================================================================
    # Observation

    def status(self) -> dict:
        return {
            "id": self.id,
            "view": self.view,
            "primary": self.primary,
            "view_changing": self.view_changing,
            "view_change_target": self.vc_target if self.view_changing else None,
            "executed_seq": self.executed,
            "stable_checkpoint": self.stable.seq,
            "low_watermark": self.log.low,
            "high_watermark": self.log.high,
            "log_entries": len(self.log),
            "pending_requests": len(self.pending),
            "view_change_timeout_ms": self._timeout_ms(),
            "batch_latency_ms": round(self.latency_ewma_ms, 1),
            "state_transfer_target": self.state_target,
            "evidence": dict(self.evidence_counts),
            "rejected": dict(self.rejected_counts),
            "ignored": self.ignored,
        }
