"""The replica's storage layout (``SafetyRules`` owns the ``s/`` keys, see ``safety.py``).

Keys, all written through ``Ready.writes`` so they are durable before the votes of the same step
leave:

- ``r/view``            -> the view the replica is in (8 bytes big-endian)
- ``r/stable``          -> ``StableRecord(seq, state, proof)``: the stable checkpoint, its
                           ``ReplicaState`` (App snapshot + client table) and 2f+1 signed CHECKPOINTs
- ``r/pp/<seq>``        -> the signed PRE-PREPARE accepted for ``seq`` (the batch itself)
- ``r/proof/<seq>``     -> ``PreparedProof``: the prepared certificate (for VIEW-CHANGEs)
- ``r/commit/<seq>``    -> the digest committed at ``seq``
- ``e/<accused>/<n>``   -> ``EvidenceRecord(accused, kind, proof)``: the n-th proof (from 1) this
                           replica recorded against ``accused``; only the EVIDENCE_PER_ACCUSED most
                           recent are kept (writing the n-th deletes the (n-EVIDENCE_PER_ACCUSED)-th),
                           and the highest ``n`` is the count ``status()["evidence"]`` shows after a
                           restart

``<seq>`` is 8 bytes big-endian, so a prefix scan returns slots in order. Keys of seqs at or
below the stable checkpoint are deleted when it becomes stable. Recovery: load ``r/stable``,
restore the App and client table, reload the slots above it, re-execute the committed ones in
order (the App's side-effects are idempotent at participants), and resume.
"""

from __future__ import annotations

import struct

VIEW_KEY = b"r/view"
STABLE_KEY = b"r/stable"
PP_PREFIX = b"r/pp/"
PROOF_PREFIX = b"r/proof/"
COMMIT_PREFIX = b"r/commit/"
SLOT_PREFIXES = (PP_PREFIX, PROOF_PREFIX, COMMIT_PREFIX)
EVIDENCE_PREFIX = b"e/"
EVIDENCE_PER_ACCUSED = 16  # proofs kept on disk per accused party (the most recent)

_U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(raw: bytes) -> int:
    return _U64.unpack(raw)[0]


def slot_key(prefix: bytes, seq: int) -> bytes:
    return prefix + _U64.pack(seq)


def seq_of(prefix: bytes, key: bytes) -> int:
    return _U64.unpack(key[len(prefix):])[0]


def evidence_prefix(accused: str) -> bytes:
    return EVIDENCE_PREFIX + accused.encode() + b"/"


def evidence_key(accused: str, n: int) -> bytes:
    return evidence_prefix(accused) + _U64.pack(n)


def evidence_of(key: bytes) -> tuple[str, int]:
    """(accused, n) of an ``evidence_key`` (the name may hold a "/": n is the last 8 bytes)."""
    return key[len(EVIDENCE_PREFIX):-9].decode(), _U64.unpack(key[-8:])[0]
