"""The PBFT replica: a sans-I/O ``Node`` that wires the log, safety rules, checkpoints, view
changes and state transfer around an ``App``.

``Replica`` is a facade in etcd-raft's manner: ``receive(sender, payload)``, ``tick(now_ms)`` and
``take_ready()`` are the whole contract; it authenticates and dispatches, and the protocol's
parts live in one module each, as mixins that share the replica's state (each module names the
fields it owns in its docstring):

- ``intake``: client requests (admission, forwarding, pending, held batches);
- ``authdefence``: requests a backup cannot authenticate (vouchers, complaints, the Aardvark attack);
- ``normalcase``: the primary's batches, PRE-PREPARE / PREPARE / COMMIT, execution;
- ``views``: the view-change timers, VIEW-CHANGE and NEW-VIEW;
- ``stability``: checkpoints, garbage collection, state transfer;
- ``catchup``: retransmission, STATUS, help for stragglers;
- ``recovery``: rebuilding from storage after a restart.

Rules of the replica:
- Nothing a peer sends can crash it: every ``RemoteProtocolError`` becomes a ``Rejected`` output
  (counted per sender), and provable misbehaviour (two conflicting signed messages, a signed
  message that is invalid on its face) becomes an ``Evidence`` output with the messages as proof.
- Votes (PRE-PREPARE, PREPARE, COMMIT, VIEW-CHANGE) are signed only by ``SafetyRules`` and leave
  with ``send_after_persist``; the state they depend on is in ``Ready.writes`` of the same step.
- Messages of another view, or outside the watermarks, are ignored (not counted: a correct but
  slow peer sends them too); retransmission on ``tick`` recovers lost messages.
- Roles are not subclasses: the primary differs only in ``_propose`` and in not sending PREPARE.
"""

from __future__ import annotations

from collections import Counter

from dtm_ray.crypto import Envelope, KeyRing, open_envelope, seal_mac, signed_bytes
from dtm_ray.errors import AuthError, ConfigError, RemoteProtocolError
from dtm_ray.node import Outbox, Ready, Storage
from dtm_ray.pbft import persist
from dtm_ray.pbft.app import App, take_events
from dtm_ray.pbft.authdefence import AuthDefence
from dtm_ray.pbft.catchup import CatchUp
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.pbft.intake import MAX_PENDING, MAX_PENDING_PER_CLIENT, RequestIntake
from dtm_ray.pbft.log import Log
from dtm_ray.pbft.messages import (REPLICA_MESSAGES, AuthComplaint, Checkpoint, Commit, EvidenceRecord, NewView, Prepare,
                                   PrePrepare, Request, SlotRequest, StateReply, StateRequest, Status,
                                   ViewChange)
from dtm_ray.pbft.normalcase import NormalCase
from dtm_ray.pbft.recovery import Recovery
from dtm_ray.pbft.safety import SafetyRules
from dtm_ray.pbft.stability import ClientEntry, Stability
from dtm_ray.pbft.views import ViewChanges
from dtm_ray.wire import decode, encode

__all__ = ["MAX_PENDING", "MAX_PENDING_PER_CLIENT", "Replica"]

MAX_EVIDENCE_KEPT = 1_000
MAX_COUNTED_SENDERS = 1_000


class Replica(RequestIntake, AuthDefence, NormalCase, ViewChanges, Stability, CatchUp, Recovery):
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
        self.log = Log(config)
        self.executed = 0  # the last executed seq
        self.clients: dict[str, ClientEntry] = {}  # the client table: last executed request, its reply
        self.now = 0
        self.clock_start: int | None = None  # the first tick's time: anything stamped before is no sample
        self.evidence_counts: Counter[str] = Counter()
        self.rejected_counts: Counter[str] = Counter()
        self.replayed_counts: Counter[str] = Counter()  # declared client -> requests at or below its last executed id
        self.ignored = 0
        self.delivered_by = ""
        self._evidence_seen: set[tuple[str, str, tuple[bytes, ...]]] = set()
        self._init_intake()
        self._init_auth_defence()
        self._init_normal_case()
        self._init_views()
        self._init_stability()
        self._init_catch_up()
        self._recover(storage)

    # =========================================================================================
    # The Node contract

    def receive(self, sender: str, payload: bytes) -> None:
        self.delivered_by = sender  # who handed us this message (not necessarily its signer)
        try:
            env = open_envelope(payload)
            body = decode(env.body)
        except RemoteProtocolError as exc:
            self._reject(sender, f"malformed: {exc}")
            if sender == self.primary:
                self._refused_from_primary()
            return
        try:
            if isinstance(body, Request):
                self._on_request(env, payload)
            elif isinstance(body, REPLICA_MESSAGES):
                self._on_replica_message(env, body, payload)
            elif isinstance(body, AuthComplaint):
                self._on_complaint(env, payload)
            elif isinstance(body, (StateRequest, StateReply, SlotRequest, Status)):
                self._on_state_message(env, body)
            elif self.app.receive(env):
                self._app_moved()
            else:
                self._reject(sender, f"unexpected {type(body).__name__}")
        except RemoteProtocolError as exc:
            self._reject(sender, str(exc))
        self._after_step()

    def tick(self, now_ms: int) -> None:
        if self.clock_start is not None:
            self._note_pause(now_ms - self.now)
        self.now = max(self.now, now_ms)
        if self.clock_start is None:
            self.clock_start = self.now
            if self._restarted:  # catch up (STATUS, resent slots) before suspecting the primary
                self._catch_up_until = self.now + self._catch_up_grace_ms()
        if self._resume is not None:
            view, self._resume = self._resume, None
            self._start_view_change(view, "resumed")  # the one it had asked for before a restart
        if self._probe:
            self._probe = False
            for r in self.peers:
                self._out.send(r, seal_mac(self.keys, r, StateRequest(1)), after_persist=False)
        self.app.tick(self.now)
        self._app_moved()
        self._refresh_proposals()
        self._check_timers()
        self._send_status()
        self._fetch_missing_preprepares()
        if self.now - self.last_retransmit >= self.retransmit_ms:
            self.last_retransmit = self.now
            self._retransmit()
        self._after_step()

    def take_ready(self) -> Ready:
        return self._out.take()

    def _after_step(self) -> None:
        self._retry_held()
        self._retry_awaiting()
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
        if sender == self.id and not (isinstance(body, PrePrepare) and self._wants_own_reproposal(body)):
            self.ignored += 1  # our own message coming back (relayed as proof, or replayed)
            return
        if sender not in self.peers and sender != self.id:
            raise AuthError(f"{type(body).__name__} from {sender!r}, not a peer replica")
        if not self.keys.verify(sender, signed_bytes(body, env.body), env.auth):
            if sender == self.delivered_by == self.primary:
                self._refused_from_primary()
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
            "admission": self.admission.status(self.requests_waiting()),  # bound, BUSY, forwards
            "view_change_timeout_ms": self._timeout_ms(),
            "view_change_causes": dict(self.view_change_causes),  # the rule behind each one it started
            "paused": {"count": self.pauses, "ms": self.paused_ms},  # not counted by its timers
            "batch_latency_ms": round(self.latency_ewma_ms, 1),
            "state_transfer_target": self.state_target,
            "evidence": dict(self.evidence_counts),
            "mac_refused": sorted(self.mac_refused),  # clients that must sign (authdefence)
            "rejected": dict(self.rejected_counts),
            "replayed": dict(self.replayed_counts),
            "ignored": self.ignored,
            "preprepares_fetched": self.preprepares_fetched,  # the primary's copy overdue: asked a peer
            "next_slot": self._next_slot_status(),
        }

    def _next_slot_status(self) -> dict | None:
        """Why the next seq has not executed: what this replica holds of it (a stuck replica's
        first question)."""
        slot = self.log.get(self.executed + 1)
        if slot is None:
            return None
        return {"seq": slot.seq, "preprepare": slot.pp is not None, "held": slot.held is not None,
                "prepared": slot.prepared, "committed": slot.committed,
                "prepares": sorted(slot.prepares), "commits": sorted(slot.commits),
                "matching_commits": len(slot.matching(slot.commits))}
