"""Parameters of the PBFT protocol, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.crypto import MAC_LEN, SIG_LEN
from dtm_ray.errors import ConfigError
from dtm_ray.wire import MAX_FIELD_BYTES

# What one entry of a batch costs beyond its own bytes in the encoded PRE-PREPARE (a msgpack bin
# header: at most 5 bytes), rounded up; and what the signed PRE-PREPARE adds around its entries
# (view, seq, digest, the envelope's sender and signature, headers), with room to spare.
BATCH_ITEM_OVERHEAD = 8
PREPREPARE_OVERHEAD = 1024
# A request's envelope around its operation: client name, request id, the authenticator (one
# MAC of 32 bytes per replica: room for ~100 replicas) or signature, headers.
REQUEST_OVERHEAD = 4096


def batch_item_bytes(entry: bytes) -> int:
    """What ``entry`` (a request envelope or a proposal) costs in a PRE-PREPARE's byte budget."""
    return len(entry) + BATCH_ITEM_OVERHEAD


@dataclass(frozen=True, slots=True)
class PbftConfig:
    replicas: tuple[str, ...]  # replica ids in index order; the primary of view v is replicas[v % n]
    f: int
    batch_size: int = 100  # most requests + proposals in one PRE-PREPARE
    batch_wait_ms: int = 2  # how long the primary waits to fill a batch
    # The primary pre-prepares no new batch while this many of its batches are pre-prepared but
    # not committed here (BFT-SMaRt): requests accumulate meanwhile, so batches grow with the
    # load and the per-request cost of agreement falls. 0: unbounded (only the watermarks bound).
    max_inflight_batches: int = 2
    checkpoint_interval: int = 16  # K: a CHECKPOINT every K sequence numbers
    watermark_window: int = 64  # L: sequence numbers accepted are (low, low + L]
    view_change_timeout_ms: int = 500  # first view-change timer; doubles per failed view change
    client_retry_ms: int = 400  # a client resends to all replicas after this
    status_interval_ms: int = 1000  # an idle replica tells its peers where it stands this often (0: never)
    max_request_bytes: int = 64 * 1024
    # Admission: at most this many client requests wait at a replica (taken in and not answered:
    # not ordered yet, or executed and waiting for the App's reply); beyond it a request gets a
    # MAC'd BUSY and its client backs off (``intake``), so latency grows with a bounded queue.
    max_waiting_requests: int = 10_000
    # A PRE-PREPARE's entries together cost at most this (``batch_item_bytes``): far below the
    # decoder's 4 MiB field limit, so a batch of large entries is cut early instead of growing
    # past what any replica can decode.
    max_batch_bytes: int = 1024 * 1024
    # Client requests: "hmac" authenticators (one pairwise MAC per replica, ~3 us each: PBFT's
    # normal case) or "ed25519" signatures (~130 us per verify, at every replica). Under "hmac" a
    # client whose MACs were refused (``authdefence``) signs its requests instead.
    auth_scheme: str = "hmac"
    # The declared clients: only they may submit requests (a replica or a participant holds keys
    # too, and must never act as a client). None only in unit harnesses: then any key holder that
    # is not a replica may; every cluster builder (``dtm_ray.config``, the simulator's worlds)
    # declares them.
    clients: frozenset[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.replicas)
        if self.clients is not None:
            object.__setattr__(self, "clients", frozenset(self.clients))
            if self.clients & set(self.replicas):
                raise ConfigError(f"replicas cannot be clients: {sorted(self.clients & set(self.replicas))}")
        if self.f < 0:
            raise ConfigError(f"f must be >= 0, got {self.f}")
        if n < 3 * self.f + 1:
            raise ConfigError(f"n = {n} replicas cannot tolerate f = {self.f}: need n >= 3f+1 = {3 * self.f + 1}")
        if len(set(self.replicas)) != n:
            raise ConfigError("replica ids must be distinct")
        for name in ("batch_size", "checkpoint_interval", "watermark_window",
                     "view_change_timeout_ms", "client_retry_ms", "max_request_bytes", "max_waiting_requests"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.status_interval_ms < 0:
            raise ConfigError(f"status_interval_ms must be >= 0 (0: no STATUS), got {self.status_interval_ms}")
        if self.max_inflight_batches < 0:
            raise ConfigError(f"max_inflight_batches must be >= 0 (0: unbounded), got {self.max_inflight_batches}")
        if self.watermark_window < 2 * self.checkpoint_interval:
            raise ConfigError("watermark_window must be at least 2 * checkpoint_interval "
                              f"({2 * self.checkpoint_interval}), got {self.watermark_window}")
        if self.max_batch_bytes + PREPREPARE_OVERHEAD > MAX_FIELD_BYTES:
            raise ConfigError(f"max_batch_bytes must leave {PREPREPARE_OVERHEAD} bytes below the decoder's "
                              f"limit of {MAX_FIELD_BYTES}, got {self.max_batch_bytes}")
        if self.max_batch_bytes < self.max_request_bytes + REQUEST_OVERHEAD + BATCH_ITEM_OVERHEAD:
            raise ConfigError(f"max_batch_bytes ({self.max_batch_bytes}) must hold one request of "
                              f"max_request_bytes ({self.max_request_bytes}) with its envelope")
        self._check_view_change_fits()
        if self.auth_scheme not in ("ed25519", "hmac"):
            raise ConfigError(f"auth_scheme must be 'ed25519' or 'hmac', got {self.auth_scheme!r}")
        if self.auth_scheme == "hmac" and n * MAC_LEN == SIG_LEN:
            raise ConfigError(f"auth_scheme 'hmac' needs n != {SIG_LEN // MAC_LEN}: an authenticator of "
                              f"{n} MACs is as long as a signature; use 'ed25519'")

    def _check_view_change_fits(self) -> None:
        """The largest NEW-VIEW this configuration can make must decode at every replica, or a
        view change could never complete (``sizes``)."""
        from dtm_ray.pbft.sizes import view_change_bytes

        vc_bytes, nv_bytes = view_change_bytes(self)
        if nv_bytes > MAX_FIELD_BYTES:
            raise ConfigError(f"a NEW-VIEW of f = {self.f} with watermark_window = {self.watermark_window} can reach "
                              f"{nv_bytes} bytes (a VIEW-CHANGE {vc_bytes}), above the decoder's limit of "
                              f"{MAX_FIELD_BYTES}: use a smaller watermark_window")

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def quorum(self) -> int:
        """2f+1: prepared, committed, stable checkpoint, new view."""
        return 2 * self.f + 1

    @property
    def weak_quorum(self) -> int:
        """f+1: at least one correct party among them (client replies, participant decisions)."""
        return self.f + 1

    def may_submit(self, client: str) -> bool:
        """Whether ``client`` may submit requests: a declared client, never a replica."""
        if self.clients is None:
            return client not in self.replicas
        return client in self.clients

    def primary(self, view: int) -> str:
        return self.replicas[view % self.n]
