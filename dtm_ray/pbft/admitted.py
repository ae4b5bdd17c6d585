"""The admitted-request cache: authentic, admissible request envelopes, verified once.

A request is verified when it arrives from its client and again when it comes back inside a
PRE-PREPARE (and once more if that batch is held); remembering it saves the second and third
signature checks. The cache is fed by clients, so it is bounded in entries and in bytes, and
it only takes requests the replica keeps anyway (pending ones, and the requests of a batch it
checked): a replay or a request over its client's pending quota costs a verification, never
memory. When full, the oldest entry goes first; an evicted request is only verified again.

Bounds: 4,096 entries and 16 MiB per replica (at 64 KiB requests, 256 of them): with n = 10
replicas on one 24 GiB machine that is 160 MiB, against ~1.3 GB per replica before.
"""

from __future__ import annotations

from dtm_ray.pbft.messages import Request

MAX_ADMITTED_ENTRIES = 4_096
MAX_ADMITTED_BYTES = 16 * 1024 * 1024


class AdmittedCache:
    def __init__(self, max_entries: int = MAX_ADMITTED_ENTRIES, max_bytes: int = MAX_ADMITTED_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: dict[bytes, Request] = {}  # insertion order: the oldest first
        self.bytes = 0

    def get(self, payload: bytes) -> Request | None:
        return self._items.get(payload)

    def add(self, payload: bytes, req: Request) -> None:
        if payload in self._items:
            return
        self._items[payload] = req
        self.bytes += len(payload)
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._items))
            del self._items[oldest]
            self.bytes -= len(oldest)

    def pop(self, payload: bytes) -> Request | None:
        req = self._items.pop(payload, None)
        if req is not None:
            self.bytes -= len(payload)
        return req

    def __len__(self) -> int:
        return len(self._items)
