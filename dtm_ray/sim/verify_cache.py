"""An opt-in, in-process cache of Ed25519 verifications, for the simulator ONLY.

In the simulator every replica of one process verifies the same broadcast signature: n-1
identical verifications (~150 us each) of one (public key, body, signature). Verification is a
pure function of that triple, so remembering the answer changes no outcome, only the CPU a run
costs, and lets CI afford hundreds of seeded runs. Real verifications and cache hits are counted
separately, so a benchmark reports what a real deployment would pay (``verifications + hits``).

Never used outside the simulator: in production each replica is its own process and verifies
for itself, which is the point of signatures.
"""

from __future__ import annotations

from dtm_ray.crypto import KeyRing


class VerifyCache:
    def __init__(self, max_entries: int = 200_000, *, enabled: bool = True) -> None:
        self._answers: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.max_entries = max_entries
        self.enabled = enabled  # False: only count (every verification is a real one)
        self.verifications = 0  # real Ed25519 verifications performed
        self.hits = 0  # verifications answered from the cache
        self.signatures = 0  # signatures made through caching key rings

    def as_dict(self) -> dict:
        return {"verifications": self.verifications, "cache_hits": self.hits, "signatures": self.signatures}


class CachingKeyRing(KeyRing):
    """A KeyRing whose ``verify`` consults a ``VerifyCache`` shared by every party of one simulation."""

    cache: VerifyCache

    def verify(self, sender: str, body: bytes, signature: bytes) -> bool:
        cache = self.cache
        if not cache.enabled:
            cache.verifications += 1
            return super().verify(sender, body, signature)
        key = (self.public_keys.get(sender, b""), body, signature)
        answer = cache._answers.get(key)
        if answer is not None:
            cache.hits += 1
            return answer
        cache.verifications += 1
        answer = super().verify(sender, body, signature)
        if len(cache._answers) >= cache.max_entries:
            cache._answers.clear()
        cache._answers[key] = answer
        return answer

    def sign(self, body: bytes) -> bytes:
        self.cache.signatures += 1
        return super().sign(body)


def caching(ring: KeyRing, cache: VerifyCache) -> CachingKeyRing:
    cached = CachingKeyRing(ring.me, ring.signing_key, dict(ring.public_keys), dict(ring.mac_keys))
    cached.cache = cache
    return cached
