"""Pure functions that build and verify VIEW-CHANGE and NEW-VIEW (PBFT with signatures).

A VIEW-CHANGE for view ``v`` carries the sender's stable checkpoint with its proof and, for every
seq above it, the prepared certificate of the highest view it prepared in. The primary of ``v``
collects ``2f+1`` of them and re-proposes, for every seq between the highest stable checkpoint
among them (``min_s``) and the highest prepared seq (``max_s``), the batch of the highest-view
certificate, or a null batch where there is none. Every backup recomputes that set from the
VIEW-CHANGEs included in the NEW-VIEW; a NEW-VIEW that does not match is signed evidence against
its primary.

Sizes: a certificate quotes the PRE-PREPARE's signed header, not its batch, so a VIEW-CHANGE is at
most ``watermark_window`` certificates of 2f+1 small signed messages and a NEW-VIEW 2f+1 of those
plus one signed header per re-proposed seq, whatever the batches hold (``view_change_bound``,
checked against the decoder's limit by the config). The batches are completed from what each
replica accepted before, or fetched by seq (``views``).

Why this is safe: a batch committed at some correct replica was prepared at ``2f+1`` replicas,
``f+1`` of them correct, and any ``2f+1`` VIEW-CHANGEs include one of those; no certificate for
another batch at that seq can carry a higher view, since correct replicas prepared nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.crypto import Envelope, KeyRing
from dtm_ray.errors import AuthError, RemoteProtocolError
from dtm_ray.pbft import checkpoint, quorum
from dtm_ray.pbft.certcache import VerifiedCertificates
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import (NULL_DIGEST, Checkpoint, NewView, PrePrepareHeader, Prepare, PreparedProof,
                                   ViewChange, header_view, open_certified)
from dtm_ray.wire import decode, encode


@dataclass(frozen=True, slots=True)
class CheckedViewChange:
    sender: str
    vc: ViewChange
    payload: bytes  # the signed envelope, to put into a NEW-VIEW
    prepared: dict[int, PrePrepareHeader]  # seq -> the certified pre-prepare's header


@dataclass(frozen=True, slots=True)
class NewViewPlan:
    view: int
    min_s: int  # the stable checkpoint the new view starts from
    min_proof: tuple[bytes, ...]
    min_digest: bytes | None  # None for seq 0
    entries: tuple[tuple[int, bytes], ...]  # (seq, digest) re-proposed: a certified batch's or NULL_DIGEST


# ---------------------------------------------------------------------------------------------
# VIEW-CHANGE


def verify_prepared(keys: KeyRing, config: PbftConfig, proof: PreparedProof,
                    cache: VerifiedCertificates | None = None) -> PrePrepareHeader:
    """The pre-prepare header of a prepared certificate, or ``RemoteProtocolError``: signed by
    the primary of its view, and 2f matching PREPAREs from distinct backups. With ``cache``, a
    certificate verified before costs a decode, no signature."""
    if cache is None:
        return _verify_prepared(keys, config, proof)
    key = certificate_key(proof)
    if cache.known(key):
        return header_view(proof.preprepare)
    pp = _verify_prepared(keys, config, proof)
    cache.remember(key)
    return pp


def certificate_key(proof: PreparedProof) -> bytes:
    """The cache key of a prepared certificate: the digest of its canonical bytes."""
    return VerifiedCertificates.key(b"prepared", encode(proof))


def _verify_prepared(keys: KeyRing, config: PbftConfig, proof: PreparedProof) -> PrePrepareHeader:
    sender, pp = open_certified(keys, proof.preprepare, PrePrepareHeader)
    if sender != config.primary(pp.view):
        raise AuthError(f"pre-prepare of view {pp.view} signed by {sender!r}, not its primary")
    backups = set()
    for payload in proof.prepares:
        who, p = open_certified(keys, payload, Prepare)
        if who not in config.replicas or who == sender:
            raise AuthError(f"prepare from {who!r} cannot count for view {pp.view}")
        if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
            raise AuthError(f"prepare for {(p.view, p.seq)} in the certificate of {(pp.view, pp.seq)}")
        backups.add(who)
    if len(backups) < quorum.strong(config.f) - 1:
        raise AuthError(f"prepared certificate with {len(backups)} prepares")
    return pp


def verify_checkpoint_proof(keys: KeyRing, config: PbftConfig, seq: int, proof: tuple[bytes, ...],
                            cache: VerifiedCertificates | None = None) -> None:
    """``checkpoint.verify_proof`` of the digest the proof claims, remembered in ``cache``."""
    digest = claimed_digest(proof)
    key = cache.key(b"checkpoint", seq.to_bytes(8, "big"), digest, *proof) if cache is not None else b""
    if cache is not None and cache.known(key):
        return
    checkpoint.verify_proof(keys, config, seq, digest, proof)
    if cache is not None:
        cache.remember(key)


def claimed_digest(proof: tuple[bytes, ...]) -> bytes:
    """The state digest a checkpoint proof claims, read without verifying anything (the proof is
    verified against it next; a malformed proof claims nothing and fails there)."""
    try:
        return decode(decode(proof[0], Envelope).body, Checkpoint).state_digest if proof else b""
    except RemoteProtocolError:
        return b""


def verify_view_change(keys: KeyRing, config: PbftConfig, payload: bytes,
                       cache: VerifiedCertificates | None = None) -> CheckedViewChange:
    """A VIEW-CHANGE checked whole, or ``RemoteProtocolError``. Its own signature is always
    verified; with ``cache``, the certificates it quotes only the first time this replica sees
    them (the same certificates come from every replica that prepared them)."""
    sender, vc = open_certified(keys, payload, ViewChange)
    if sender not in config.replicas:
        raise AuthError(f"view change signed by non-replica {sender!r}")
    verify_checkpoint_proof(keys, config, vc.stable_seq, vc.checkpoint_proof, cache)
    prepared: dict[int, PrePrepareHeader] = {}
    for proof in vc.prepared:
        pp = verify_prepared(keys, config, proof, cache)
        if pp.view >= vc.new_view:
            raise AuthError(f"certificate of view {pp.view} in a view change to {vc.new_view}")
        if not vc.stable_seq < pp.seq <= vc.stable_seq + config.watermark_window:
            raise AuthError(f"certificate for seq {pp.seq} outside the sender's window")
        if pp.seq in prepared:
            raise AuthError(f"two certificates for seq {pp.seq}")
        prepared[pp.seq] = pp
    return CheckedViewChange(sender, vc, payload, prepared)


# ---------------------------------------------------------------------------------------------
# NEW-VIEW


def plan_new_view(config: PbftConfig, view: int, vcs: list[CheckedViewChange]) -> NewViewPlan:
    """What the primary of ``view`` must re-propose, given 2f+1 checked VIEW-CHANGEs."""
    base = max(vcs, key=lambda c: (c.vc.stable_seq, c.sender))
    min_s = base.vc.stable_seq
    best: dict[int, PrePrepareHeader] = {}
    for c in vcs:
        for seq, pp in c.prepared.items():
            if seq > min_s and (seq not in best or pp.view > best[seq].view):
                best[seq] = pp
    max_s = max(best, default=min_s)
    entries = []
    for seq in range(min_s + 1, max_s + 1):
        pp = best.get(seq)
        entries.append((seq, pp.digest if pp else NULL_DIGEST))
    digest = None
    if min_s:
        digest = open_certified_digest(base.vc.checkpoint_proof)
    return NewViewPlan(view, min_s, base.vc.checkpoint_proof, digest, tuple(entries))


def open_certified_digest(proof: tuple[bytes, ...]) -> bytes:
    """The state digest of an already verified checkpoint proof."""
    return decode(decode(proof[0], Envelope).body, Checkpoint).state_digest


def preprepares_for(view: int, plan: NewViewPlan) -> list[PrePrepareHeader]:
    """The headers the primary of ``view`` signs, one per re-proposed seq."""
    return [PrePrepareHeader(view, seq, digest) for seq, digest in plan.entries]


def check_view_changes(keys: KeyRing, config: PbftConfig, view: int, payloads: tuple[bytes, ...],
                       cache: VerifiedCertificates | None = None) -> list[CheckedViewChange]:
    checked = [verify_view_change(keys, config, p, cache) for p in payloads]
    senders = {c.sender for c in checked}
    if len(senders) != len(checked):
        raise AuthError("two view changes from one replica")
    if any(c.vc.new_view != view for c in checked):
        raise AuthError(f"a view change for another view in the NEW-VIEW of {view}")
    if len(senders) < quorum.strong(config.f):
        raise AuthError(f"NEW-VIEW with {len(senders)} view changes")
    return checked


def verify_new_view(keys: KeyRing, config: PbftConfig, sender: str, nv: NewView,
                    cache: VerifiedCertificates | None = None
                    ) -> tuple[NewViewPlan, list[tuple[PrePrepareHeader, bytes]]]:
    """Recompute the NEW-VIEW from its VIEW-CHANGEs; ``AuthError`` if anything differs.

    The caller has checked the NEW-VIEW's own signature, so every failure here is provable
    misbehaviour of ``sender``."""
    if sender != config.primary(nv.view):
        raise AuthError(f"NEW-VIEW of {nv.view} from {sender!r}, not its primary")
    plan = plan_new_view(config, nv.view, check_view_changes(keys, config, nv.view, nv.view_changes, cache))
    expected = preprepares_for(nv.view, plan)
    if len(nv.preprepares) != len(expected):
        raise AuthError(f"NEW-VIEW re-proposes {len(nv.preprepares)} slots, expected {len(expected)}")
    out = []
    for payload, want in zip(nv.preprepares, expected):
        _, pp = open_certified(keys, payload, PrePrepareHeader, signer=sender)
        if pp != want:
            raise AuthError(f"NEW-VIEW pre-prepare for seq {want.seq} differs from the recomputed one")
        out.append((pp, payload))
    return plan, out
