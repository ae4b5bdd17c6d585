"""The pure VIEW-CHANGE / NEW-VIEW functions, on hand-built certificates."""

from __future__ import annotations

import pytest

from dtm_ray.crypto import generate_keys
from dtm_ray.errors import AuthError
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import (NULL_DIGEST, Checkpoint, NewView, PrePrepare, PrePrepareHeader, Prepare,
                                   PreparedProof, ViewChange, batch_digest, quote_preprepare, seal)
from dtm_ray.pbft.viewchange import (plan_new_view, preprepares_for, verify_new_view, verify_prepared,
                                     verify_view_change)

REPLICAS = ("R0", "R1", "R2", "R3")
CONFIG = PbftConfig(REPLICAS, 1, checkpoint_interval=4, watermark_window=8)


@pytest.fixture(scope="module")
def keys():
    return generate_keys(list(REPLICAS), seed=3)


def prepared(keys, view: int, seq: int, requests: tuple[bytes, ...], backups=("R1", "R2")) -> PreparedProof:
    primary = CONFIG.primary(view)
    pp = PrePrepare(view, seq, batch_digest(requests, ()), requests, ())
    prepares = tuple(seal(keys[b], Prepare(view, seq, pp.digest)) for b in backups if b != primary)
    return PreparedProof(quote_preprepare(seal(keys[primary], pp)), prepares)


def checkpoint_proof(keys, seq: int, digest: bytes = b"s" * 32) -> tuple[bytes, ...]:
    return tuple(seal(keys[r], Checkpoint(seq, digest)) for r in ("R0", "R1", "R2"))


def view_change(keys, sender: str, new_view: int, stable: int = 0, proofs=()) -> bytes:
    proof = checkpoint_proof(keys, stable) if stable else ()
    return seal(keys[sender], ViewChange(new_view, stable, proof, tuple(proofs)))


def test_a_prepared_certificate_needs_2f_backup_prepares(keys):
    assert verify_prepared(keys["R3"], CONFIG, prepared(keys, 0, 1, (b"a",))).seq == 1
    with pytest.raises(AuthError):
        verify_prepared(keys["R3"], CONFIG, prepared(keys, 0, 1, (b"a",), backups=("R1",)))
    with pytest.raises(AuthError):  # the primary's own PREPARE does not count
        verify_prepared(keys["R3"], CONFIG, prepared(keys, 0, 1, (b"a",), backups=("R0", "R1")))
    good = prepared(keys, 0, 1, (b"a",))
    forged_pp = PreparedProof(quote_preprepare(seal(keys["R1"], PrePrepare(0, 1, batch_digest((b"a",), ()), (b"a",), ()))),
                              good.prepares)
    with pytest.raises(AuthError):  # a pre-prepare not signed by the primary of its view
        verify_prepared(keys["R3"], CONFIG, forged_pp)


def test_a_view_change_is_checked_against_its_window_and_view(keys):
    ok = view_change(keys, "R2", 1, stable=4, proofs=[prepared(keys, 0, 5, (b"a",))])
    assert verify_view_change(keys["R1"], CONFIG, ok).prepared[5].digest == batch_digest((b"a",), ())
    with pytest.raises(AuthError):  # a certificate at or below the sender's stable checkpoint
        verify_view_change(keys["R1"], CONFIG, view_change(keys, "R2", 1, stable=4, proofs=[prepared(keys, 0, 4, (b"a",))]))
    with pytest.raises(AuthError):  # a certificate of the view being changed to
        verify_view_change(keys["R1"], CONFIG, view_change(keys, "R2", 1, proofs=[prepared(keys, 1, 1, (b"a",), ("R2", "R3"))]))
    bad_cp = seal(keys["R2"], ViewChange(1, 4, checkpoint_proof(keys, 4)[:2], ()))
    with pytest.raises(AuthError):
        verify_view_change(keys["R1"], CONFIG, bad_cp)


def test_new_view_re_proposes_the_highest_view_certificate_and_fills_gaps(keys):
    vcs = [
        view_change(keys, "R0", 2, proofs=[prepared(keys, 0, 1, (b"old",)), prepared(keys, 0, 3, (b"c",))]),
        view_change(keys, "R1", 2, proofs=[prepared(keys, 1, 1, (b"new",), ("R2", "R3"))]),
        view_change(keys, "R3", 2),
    ]
    checked = [verify_view_change(keys["R2"], CONFIG, p) for p in vcs]
    plan = plan_new_view(CONFIG, 2, checked)
    assert plan.min_s == 0
    assert list(plan.entries) == [(1, batch_digest((b"new",), ())), (2, NULL_DIGEST), (3, batch_digest((b"c",), ()))]
    pps = preprepares_for(2, plan)
    assert pps[1].digest == NULL_DIGEST
    nv = NewView(2, tuple(vcs), tuple(seal(keys["R2"], pp) for pp in pps))
    _, accepted = verify_new_view(keys["R0"], CONFIG, "R2", nv)
    assert [pp.seq for pp, _ in accepted] == [1, 2, 3]


def test_new_view_starts_from_the_highest_stable_checkpoint(keys):
    vcs = [view_change(keys, "R0", 1, stable=4, proofs=[prepared(keys, 0, 6, (b"x",))]),
           view_change(keys, "R2", 1, stable=8),
           view_change(keys, "R3", 1)]
    plan = plan_new_view(CONFIG, 1, [verify_view_change(keys["R1"], CONFIG, p) for p in vcs])
    assert plan.min_s == 8 and plan.entries == () and plan.min_digest == b"s" * 32


@pytest.mark.parametrize("tamper", ["drop-certified", "null-for-certified", "too-few", "wrong-signer", "duplicate-sender"])
def test_a_new_view_that_does_not_match_its_view_changes_is_rejected(keys, tamper):
    vcs = [view_change(keys, "R0", 1, proofs=[prepared(keys, 0, 1, (b"a",)), prepared(keys, 0, 2, (b"b",))]),
           view_change(keys, "R2", 1), view_change(keys, "R3", 1)]
    plan = plan_new_view(CONFIG, 1, [verify_view_change(keys["R1"], CONFIG, p) for p in vcs])
    pps = [seal(keys["R1"], pp) for pp in preprepares_for(1, plan)]
    signer = "R1"
    if tamper == "drop-certified":
        pps = pps[:1]
    elif tamper == "null-for-certified":
        pps[1] = seal(keys["R1"], PrePrepareHeader(1, 2, NULL_DIGEST))
    elif tamper == "too-few":
        vcs = vcs[:2]
    elif tamper == "wrong-signer":
        pps[0] = seal(keys["R2"], preprepares_for(1, plan)[0])
    elif tamper == "duplicate-sender":
        vcs = [vcs[0], vcs[1], vcs[1]]
    with pytest.raises(AuthError):
        verify_new_view(keys["R2"], CONFIG, signer, NewView(1, tuple(vcs), tuple(pps)))
    with pytest.raises(AuthError):  # and only the primary of the view may send one at all
        verify_new_view(keys["R2"], CONFIG, "R3", NewView(1, tuple(vcs), tuple(pps)))
