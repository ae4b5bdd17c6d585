"""The message log: one ``Slot`` per sequence number inside the watermarks ``(low, low + L]``.

A slot holds the accepted PRE-PREPARE of the current view, the PREPARE and COMMIT votes of the
current view (one per replica: a second, different one is equivocation), whether it prepared,
committed and executed, and the highest-view prepared certificate, which survives view changes
because VIEW-CHANGE messages carry it. Everything at or below the low watermark (the stable
checkpoint) is dropped by ``collect``; the replica deletes the matching storage keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import PrePrepare, PreparedProof

# Batches kept per slot: one per view its pre-prepare was accepted in. The highest-view
# certificate's batch is the one a NEW-VIEW re-proposes; older ones only serve peers that lag.
BODIES_PER_SLOT = 3


@dataclass(slots=True)
class Slot:
    seq: int
    pp: PrePrepare | None = None  # accepted pre-prepare (of ``pp.view``)
    pp_payload: bytes | None = None  # its signed envelope, for certificates and retransmission
    held: tuple[PrePrepare, bytes] | None = None  # a pre-prepare waiting for the App (Verdict.WAIT)
    held_from: int = 0  # the first of its proposals that still waits (the earlier ones are valid)
    prepares: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # replica -> (digest, payload)
    commits: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    prepared: bool = False  # prepared in the current view
    committed: bool = False  # committed-local (in any view: the batch is final)
    proof: PreparedProof | None = None  # highest-view prepared certificate
    proof_view: int = -1
    proof_digest: bytes | None = None
    accepted_ms: int = 0  # when the pre-prepare was accepted (retransmission waits a while)
    my_prepare: bytes | None = None
    my_commit: bytes | None = None
    helped: dict[str, int] = field(default_factory=dict)  # peer -> when we last resent it our votes
    notified: set[str] = field(default_factory=set)  # peers we sent our pre-prepare to (a conflict)
    # The batches of the pre-prepares accepted here, by digest, in any view: a certificate quotes
    # only the header, so a NEW-VIEW that re-proposes a digest is completed from them (or, if we
    # never had it, by asking the peers for the slot: ``wanted`` is the header waiting for it).
    bodies: dict[bytes, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = field(default_factory=dict)
    wanted: bytes | None = None  # the quoted header of the current view whose batch we lack

    def accept(self, pp: PrePrepare, payload: bytes, now_ms: int) -> None:
        self.pp, self.pp_payload, self.held, self.accepted_ms = pp, payload, None, now_ms
        self.wanted = None
        self.bodies.pop(pp.digest, None)
        self.bodies[pp.digest] = (pp.requests, pp.proposals)
        if len(self.bodies) > BODIES_PER_SLOT:  # one per view it was accepted in: drop the oldest
            old = next(d for d in self.bodies if d != self.proof_digest)  # never the certified one
            del self.bodies[old]

    def certify(self, proof: PreparedProof, view: int, digest: bytes) -> None:
        self.proof, self.proof_view, self.proof_digest = proof, view, digest

    def body(self, digest: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]] | None:
        return self.bodies.get(digest)

    def enter_view(self) -> None:
        """Forget the votes of the old view. A committed batch keeps its pre-prepare (it will be
        re-proposed with the same digest); anything else must be re-proposed by the NEW-VIEW."""
        self.prepares, self.commits, self.notified = {}, {}, set()
        self.prepared, self.held, self.wanted = False, None, None
        self.my_prepare = self.my_commit = None
        if not self.committed:
            self.pp = self.pp_payload = None

    def matching(self, votes: dict[str, tuple[bytes, bytes]], exclude: str | None = None) -> list[bytes]:
        """Payloads of the votes in ``votes`` that match the accepted pre-prepare."""
        if self.pp is None:
            return []
        return [p for who, (d, p) in sorted(votes.items()) if d == self.pp.digest and who != exclude]


class Log:
    def __init__(self, config: PbftConfig) -> None:
        self._window = config.watermark_window
        self.low = 0  # the stable checkpoint
        self.slots: dict[int, Slot] = {}

    @property
    def high(self) -> int:
        return self.low + self._window

    def in_window(self, seq: int) -> bool:
        return self.low < seq <= self.high

    def get(self, seq: int) -> Slot | None:
        return self.slots.get(seq)

    def slot(self, seq: int) -> Slot:
        """The slot of ``seq`` (created on demand); the caller has checked ``in_window``."""
        s = self.slots.get(seq)
        if s is None:
            s = self.slots[seq] = Slot(seq)
        return s

    def collect(self, stable: int) -> list[int]:
        """Move the low watermark to ``stable``; drop and return the seqs at or below it."""
        self.low = max(self.low, stable)
        gone = sorted(s for s in self.slots if s <= self.low)
        for s in gone:
            del self.slots[s]
        return gone

    def __len__(self) -> int:
        return len(self.slots)
