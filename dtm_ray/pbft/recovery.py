"""Recovery: a restarted replica rebuilds itself from its storage.

It reloads its view, its stable checkpoint, the PRE-PREPAREs, prepared certificates and commits
of the slots above it, and its evidence counts; executes what was committed; and then either
redoes the view change it had asked for, re-signs the votes of its current view (lost from
memory, allowed again by the safety rules), or, with an empty store, asks its peers for their
stable state on the first tick.
"""

from __future__ import annotations

from dtm_ray.crypto import Envelope
from dtm_ray.node import Storage
from dtm_ray.pbft import persist
from dtm_ray.pbft.messages import (Checkpoint, EvidenceRecord, PrePrepare, PreparedProof, ReplicaState,
                                   StableRecord, header_view, seal, state_digest)
from dtm_ray.pbft.stability import ClientEntry, Stable
from dtm_ray.wire import decode


class Recovery:
    def _recover(self, storage: Storage) -> None:
        self._resume: int | None = None  # the view change to redo on the first tick
        self._probe = False  # an empty store: ask peers for their stable state on the first tick
        raw_view = storage.get(persist.VIEW_KEY)
        self.view = self.vc_target = persist.from_u64(raw_view) if raw_view else 0
        raw_stable = storage.get(persist.STABLE_KEY)
        # Restarted from its disk: it is behind by whatever it missed while down, and the requests
        # clients resend to it meanwhile are no sign of a failing primary until it has caught up.
        self._restarted = raw_view is not None or raw_stable is not None or any(
            True for _ in storage.items(persist.PP_PREFIX))
        self._catch_up_until: int | None = None
        if raw_stable is not None:
            record = decode(raw_stable, StableRecord)
            state = decode(record.state, ReplicaState)
            self.app.restore(state.app)
            self._app_moved()
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
                proof = decode(raw, PreparedProof)
                header = header_view(proof.preprepare)
                slot.certify(proof, header.view, header.digest)
        for key, digest in storage.items(persist.COMMIT_PREFIX):
            slot = self.log.get(persist.seq_of(persist.COMMIT_PREFIX, key))
            if slot is not None and slot.pp is not None and slot.pp.digest == digest:
                slot.committed = True
        for key, raw in storage.items(persist.EVIDENCE_PREFIX):  # the highest n is the count
            accused, n = persist.evidence_of(key)
            self.evidence_counts[accused] = max(self.evidence_counts[accused], n)
            self._recover_refusal(accused, decode(raw, EvidenceRecord))
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

