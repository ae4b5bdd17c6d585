"""Parameters of the transaction layer, validated once (``ConfigError`` names the parameter)."""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.errors import ConfigError
from dtm_ray.txn.ops import OPS_OF_KIND
from dtm_ray.wire import MAX_FIELD_BYTES

PARTICIPANT_KINDS = tuple(OPS_OF_KIND)


@dataclass(frozen=True)
class ClientPolicy:
    """What one client may do: the participants it may touch and the op kinds it may use
    (None: no restriction)."""

    participants: frozenset[str] | None = None
    ops: frozenset[str] | None = None

    def refusal(self, participant: str, op_kind: str) -> str | None:
        if self.participants is not None and participant not in self.participants:
            return f"not permitted to touch {participant}"
        if self.ops is not None and op_kind not in self.ops:
            return f"not permitted to {op_kind}"
        return None


@dataclass(frozen=True)
class TxnConfig:
    replicas: tuple[str, ...]
    f: int
    participants: dict[str, str]  # name -> "kv" | "queue"
    vote_timeout_ms: int = 2000  # a replica accepts a timeout ABORT once its own timer expired
    resend_ms: int = 200  # PREPAREs resent until voted, decisions until acked, in-doubt queries
    max_ops: int = 64  # most ops in one transaction
    policies: dict[str, ClientPolicy] | None = None  # per client; clients absent are unrestricted
    decided_retention: int = 100_000  # decided outcomes kept at most (a hard cap: final ones are forgotten first)
    decided_bytes: int = 2 * 1024 * 1024  # ... and at most this many bytes of them (the checkpointed state)
    prepare_window: int = 10_000  # a participant buffers prepares at most this far ahead
    proposal_bytes: int = 256 * 1024  # most bytes of one DecideBatch / Forget the coordinator builds
    vote_batch_bytes: int = 16 * 1024  # a participant cuts its signed vote batches at this size
    claim_bytes: int = 4 * 1024 * 1024  # a participant keeps at most this much unmatched prepares per replica

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(self.replicas))
        object.__setattr__(self, "participants", dict(self.participants))
        n = len(self.replicas)
        if self.f < 0:
            raise ConfigError(f"f must be >= 0, got {self.f}")
        if n < 3 * self.f + 1:
            raise ConfigError(f"n = {n} replicas cannot tolerate f = {self.f}: need n >= {3 * self.f + 1}")
        if len(set(self.replicas)) != n:
            raise ConfigError("replica ids must be distinct")
        if not self.participants:
            raise ConfigError("participants must name at least one participant")
        for name, kind in self.participants.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"participant names must be non-empty strings, got {name!r}")
            if name in self.replicas:
                raise ConfigError(f"participant {name!r} has the name of a replica")
            if kind not in PARTICIPANT_KINDS:
                raise ConfigError(f"participants[{name!r}] must be one of {PARTICIPANT_KINDS}, got {kind!r}")
        for name in ("vote_timeout_ms", "resend_ms", "max_ops", "decided_retention", "decided_bytes",
                     "prepare_window", "proposal_bytes", "vote_batch_bytes", "claim_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.proposal_bytes > MAX_FIELD_BYTES // 8:
            raise ConfigError(f"proposal_bytes must stay well below the decoder's limit: at most "
                              f"{MAX_FIELD_BYTES // 8}, got {self.proposal_bytes}")
        if self.vote_batch_bytes * 2 > self.proposal_bytes:
            raise ConfigError(f"vote_batch_bytes {self.vote_batch_bytes} must be at most half of "
                              f"proposal_bytes {self.proposal_bytes} (a decision needs several vote batches)")
        if self.decided_bytes > MAX_FIELD_BYTES // 2:
            raise ConfigError(f"decided_bytes must fit a checkpoint: at most {MAX_FIELD_BYTES // 2}, "
                              f"got {self.decided_bytes}")
        for client, policy in (self.policies or {}).items():
            if client in self.replicas or client in self.participants:
                raise ConfigError(f"policies: client {client!r} collides with a replica or participant")
            if not isinstance(policy, ClientPolicy):
                raise ConfigError(f"policies[{client!r}] must be a ClientPolicy")
            unknown = set(policy.participants or ()) - set(self.participants)
            if unknown:
                raise ConfigError(f"policies[{client!r}] names unknown participants {sorted(unknown)}")

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def weak_quorum(self) -> int:
        """f+1: among that many distinct replicas at least one is correct."""
        return self.f + 1

    def policy(self, client: str) -> ClientPolicy | None:
        return (self.policies or {}).get(client)
