"""Checkpoints, garbage collection and state transfer.

Every ``checkpoint_interval`` seqs a replica signs a CHECKPOINT of its state (App snapshot and
client table); 2f+1 matching ones make it stable, which moves the low watermark and deletes the
log below it, in memory and in storage. A replica that cannot produce a state 2f+1 replicas
certified (it fell behind, or its own state was wrong) fetches it from f+1 peers and installs it
after checking it against the certified digest.

Shared state it owns (``_init_stability``): ``checkpoints`` (votes), ``stable``,
``my_checkpoints``, ``state_target`` / ``state_rounds`` (state transfer), ``checkpoint_taken_ms``,
``last_served``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.crypto import seal_mac
from dtm_ray.pbft import checkpoint, persist, quorum, statetransfer
from dtm_ray.pbft.events import CheckpointStable, StateTransferred
from dtm_ray.pbft.messages import (Checkpoint, ClientRecord, ReplicaState, StableRecord, StateReply,
                                   StateRequest, seal, state_digest)
from dtm_ray.wire import encode


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


class Stability:
    def _init_stability(self) -> None:
        self.checkpoints = checkpoint.CheckpointVotes(self.config)
        self.stable = Stable()
        self.my_checkpoints: dict[int, tuple[bytes, bytes, bytes]] = {}  # seq -> (digest, state, signed)
        self.state_target = 0  # want a verified stable state with seq >= this (0: none)
        self.state_rounds = 0
        self.checkpoint_taken_ms = 0
        self.last_served: dict[str, int] = {}  # replica -> when we last sent it our state

    # -----------------------------------------------------------------------------------------
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

    # -----------------------------------------------------------------------------------------
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
        self._app_moved()
        self.clients = {r.client: ClientEntry(r.request_id, r.result) for r in state.clients}
        self.executed = seq
        self.my_checkpoints[seq] = (digest, raw, seal(self.keys, Checkpoint(seq, digest)))
        self._make_stable(seq, digest, proof, raw)
        self.state_target = 0
        for key in [k for k in self.pending if k[1] <= self.clients.get(k[0], ClientEntry(0, None)).request_id]:
            self._forget_pending(key)
            self.waiting_requests.pop(key, None)
        self.next_seq = max(self.next_seq, seq + 1)
        self._out.output(StateTransferred(self.id, seq))
        self._execute_ready()

