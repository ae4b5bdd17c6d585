"""Certificates this replica already verified, so that each is checked once.

A prepared certificate (a signed PRE-PREPARE and 2f signed PREPAREs) travels in every VIEW-CHANGE
that covers its seq, from every replica that prepared it, and again inside the NEW-VIEW that
quotes those VIEW-CHANGEs; a stable-checkpoint proof (2f+1 signed CHECKPOINTs) likewise. Before
this cache a replica re-verified all of them each time: a third of a primary's CPU during a view
change under load (docs/performance.md, "What changed the figures").

Whether a certificate verifies is a pure function of its bytes and of this replica's keys and
configuration, both fixed for the replica's life, so the answer can be remembered. Only
successes are: a forged certificate is verified (and rejected) every time it is presented, so a
faulty peer gains nothing by repeating one, and nothing it sends can evict a proof of its
misbehaviour. The cache holds digests only (32 bytes each, least recently used dropped first),
never the certificates, so its memory is bounded by ``max_entries`` whatever peers send.
"""

from __future__ import annotations

from collections import OrderedDict

from dtm_ray.crypto import digest

MAX_VERIFIED_CERTIFICATES = 4096


class VerifiedCertificates:
    def __init__(self, max_entries: int = MAX_VERIFIED_CERTIFICATES) -> None:
        self.max_entries = max_entries
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: bytes, *parts: bytes) -> bytes:
        """An unambiguous digest of ``kind`` and ``parts`` (each length-prefixed)."""
        framed = b"".join(len(p).to_bytes(4, "big") + p for p in (kind, *parts))
        return digest(framed)

    def known(self, key: bytes) -> bool:
        if key in self._verified:
            self._verified.move_to_end(key)
            self.hits += 1
            return True
        self.misses += 1
        return False

    def remember(self, key: bytes) -> None:
        """Record a successful verification (never call it for a failed one)."""
        self._verified[key] = None
        self._verified.move_to_end(key)
        while len(self._verified) > self.max_entries:
            self._verified.popitem(last=False)

    def __len__(self) -> int:
        return len(self._verified)
