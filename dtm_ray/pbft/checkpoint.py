"""Checkpoints: collecting signed CHECKPOINT votes and verifying a stable-checkpoint proof.

A checkpoint at ``seq`` is *stable* once ``2f+1`` distinct replicas signed CHECKPOINTs with one
state digest; those signed envelopes are its proof, verifiable by anybody (a replica installing
a transferred state, a backup checking a VIEW-CHANGE).

Memory stays bounded whatever peers send: votes are kept only for checkpoints inside the window
``(stable, stable + L]``; for anything higher each replica's latest vote is kept (one per
replica), which is what tells a replica that it fell behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.crypto import KeyRing
from dtm_ray.errors import AuthError, DecodeError, RemoteProtocolError
from dtm_ray.pbft import quorum
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import Checkpoint, open_certified


@dataclass(frozen=True, slots=True)
class Conflict:
    """One replica signed two different digests for one checkpoint: proof of misbehaviour."""

    accused: str
    first: bytes
    second: bytes


def verify_proof(keys: KeyRing, config: PbftConfig, seq: int, state_digest: bytes,
                 proof: tuple[bytes, ...]) -> None:
    """Raise ``RemoteProtocolError`` unless ``proof`` holds 2f+1 CHECKPOINTs of (seq, digest)
    signed by distinct replicas. Seq 0 (the initial state) needs no proof."""
    if seq == 0:
        if proof:
            raise DecodeError("the initial checkpoint carries no proof")
        return
    signers = set()
    for payload in proof:
        sender, cp = open_certified(keys, payload, Checkpoint)
        if sender not in config.replicas:
            raise AuthError(f"checkpoint signed by non-replica {sender!r}")
        if cp.seq != seq or cp.state_digest != state_digest:
            raise AuthError(f"checkpoint proof for seq {seq} holds one for {cp.seq}")
        signers.add(sender)
    if len(signers) < quorum.strong(config.f):
        raise AuthError(f"checkpoint proof has {len(signers)} signers, needs {quorum.strong(config.f)}")


def proof_digest(keys: KeyRing, proof: tuple[bytes, ...]) -> bytes | None:
    """The digest a (not yet verified) proof claims, for looking it up before verifying."""
    try:
        return open_certified(keys, proof[0], Checkpoint)[1].state_digest if proof else None
    except RemoteProtocolError:
        return None


class CheckpointVotes:
    def __init__(self, config: PbftConfig) -> None:
        self._config = config
        self.stable = 0
        # seq -> replica -> (state digest, signed payload), for seq in (stable, stable + L]
        self._votes: dict[int, dict[str, tuple[bytes, bytes]]] = {}
        # replica -> (seq, digest) of its latest vote above the window
        self.far: dict[str, tuple[int, bytes]] = {}

    def add(self, sender: str, cp: Checkpoint, payload: bytes) -> Conflict | None:
        if cp.seq <= self.stable or cp.seq % self._config.checkpoint_interval:
            return None
        if cp.seq > self.stable + self._config.watermark_window:
            if cp.seq > self.far.get(sender, (0, b""))[0]:
                self.far[sender] = (cp.seq, cp.state_digest)
            return None
        votes = self._votes.setdefault(cp.seq, {})
        previous = votes.get(sender)
        if previous is not None:
            if previous[0] != cp.state_digest:
                return Conflict(sender, previous[1], payload)
            return None
        votes[sender] = (cp.state_digest, payload)
        return None

    def stable_candidate(self, seq: int) -> tuple[bytes, tuple[bytes, ...]] | None:
        """(digest, proof) if ``seq`` has 2f+1 matching votes."""
        votes = self._votes.get(seq, {})
        digest = quorum.matching(((r, d) for r, (d, _) in votes.items()), quorum.strong(self._config.f))
        if digest is None:
            return None
        proof = tuple(p for d, p in votes.values() if d == digest)
        return digest, proof

    def stable_candidates(self) -> list[tuple[int, bytes, tuple[bytes, ...]]]:
        """(seq, digest, proof) of every checkpoint in the window with 2f+1 matching votes."""
        out = []
        for seq in sorted(self._votes):
            found = self.stable_candidate(seq)
            if found is not None:
                out.append((seq, found[0], found[1]))
        return out

    def ahead(self, executed: int) -> list[str]:
        """Replicas whose latest checkpoint is above the window and above ``executed``."""
        return sorted(r for r, (seq, _) in self.far.items() if seq > executed)

    def mark_stable(self, seq: int) -> None:
        self.stable = max(self.stable, seq)
        for s in [s for s in self._votes if s <= self.stable]:
            del self._votes[s]
        for r in [r for r, (s, _) in self.far.items() if s <= self.stable]:
            del self.far[r]
        # votes that fell into the new window stay in ``far`` until the sender repeats them

    def size(self) -> int:
        return sum(len(v) for v in self._votes.values()) + len(self.far)
