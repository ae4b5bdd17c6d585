"""``ClusterConfig``: everything an operator chooses about a cluster, typed and validated once.

It is the one object the public API takes (``dtm_ray.start(ClusterConfig(f=1))``), loadable from
a YAML or TOML file (``ClusterConfig.from_file``), and it builds the protocol configurations the
cores take (``pbft_config()``, ``txn_config()``). Every invalid value is a ``ConfigError`` whose
message names the parameter and what is allowed, raised when the object is built, not when the
cluster later misbehaves.

Party ids: replicas are ``R0..R{n-1}``; participants and clients are named by the operator. Ids
share one namespace (they address messages), so a collision is an error.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from dtm_ray.errors import ConfigError

PARTICIPANT_KINDS = ("kv", "queue")
AUTH_SCHEMES = ("ed25519", "hmac")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
PLACEMENTS = ("spread", "pack")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_REPLICA_ID = re.compile(r"^R[0-9]+$")

DEFAULT_PARTICIPANTS = {"db-0": "kv", "db-1": "kv", "mq-0": "queue"}
DEFAULT_CLIENTS = ("alice", "bob", "carol", "dave")


@dataclass(frozen=True)
class ClusterConfig:
    # -- shape of the cluster ---------------------------------------------------------------------
    f: int = 1  # Byzantine replicas tolerated
    n: int | None = None  # replicas; defaults to 3f+1, must be >= 3f+1
    participants: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PARTICIPANTS))
    clients: tuple[str, ...] = DEFAULT_CLIENTS  # client ids with keys (``cluster.client(name)``)
    # A pool of logical load clients (``cluster.run_load(..., concurrency=...)``), hosted by
    # ``load_pool_generators`` actors ``gen0, gen1, ...`` as ``gen<g>..c<i>``: their keys are derived
    # from each generator's keys (``dtm_ray.poolkeys``), so thousands cost no key generation.
    load_pool_clients: int = 2000
    load_pool_generators: int = 2
    # -- where it runs ----------------------------------------------------------------------------
    data_dir: str | None = None  # one RocksDB directory per party below it; a temp dir when None
    address: str | None = None  # None: start a local Ray; "auto" or "host:port": join a running one
    placement: str = "spread"  # "spread": replicas on distinct Ray nodes when there are several
    # -- PBFT -------------------------------------------------------------------------------------
    batch_size: int = 100
    batch_wait_ms: int = 2
    checkpoint_interval: int = 16
    watermark_window: int = 64
    # The floor of the view-change timer (it adapts up to the measured batch latency). 500 ms
    # changed views under plain load at 512 clients on the 2-core machine (a backup saw no
    # execution for ~0.6 s between bursts); 1000 ms did not in the same run, and a crashed
    # primary is still replaced in about a second.
    view_change_timeout_ms: int = 1000
    client_retry_ms: int = 400
    max_request_bytes: int = 64 * 1024
    auth_scheme: str = "hmac"  # client requests: MAC authenticators (~3 us per MAC) or "ed25519" (~130 us per verify)
    max_inflight_batches: int = 2  # the primary's uncommitted batches at once (0: unbounded); fewer = bigger batches
    status_interval_ms: int = 1000  # an idle replica tells its peers where it is (0: never)
    # -- transactions -----------------------------------------------------------------------------
    vote_timeout_ms: int = 2000  # a participant that has not voted by then: the txn aborts
    resend_ms: int = 200  # how often decisions/prepares are resent until acknowledged
    max_ops: int = 64  # operations in one transaction
    # client -> {"participants": [names] | None, "ops": [op kinds] | None}; absent: unrestricted
    policies: Mapping[str, Any] = field(default_factory=dict)
    # -- host loop --------------------------------------------------------------------------------
    tick_ms: int = 50  # how often an idle actor ticks its core (a busy one ticks every 3 ms)
    submit_timeout_s: float = 30.0  # Client.submit gives up (raises) after this
    # -- operations -------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = False  # a JSON-lines sink (one file per party under data_dir/logs)
    key_seed: int | None = None  # reproducible keys (tests); random when None

    def __post_init__(self) -> None:
        object.__setattr__(self, "participants", dict(self.participants))
        object.__setattr__(self, "clients", tuple(self.clients))
        object.__setattr__(self, "policies", dict(self.policies))
        if isinstance(self.log_level, str):
            object.__setattr__(self, "log_level", self.log_level.upper())
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        _validate(self)

    # -- derived ----------------------------------------------------------------------------------
    @property
    def replica_count(self) -> int:
        return self.n if self.n is not None else 3 * self.f + 1

    @property
    def replicas(self) -> tuple[str, ...]:
        return tuple(f"R{i}" for i in range(self.replica_count))

    @property
    def parties(self) -> list[str]:
        """Every party that holds keys, in a fixed order (the pool's clients derive theirs)."""
        return [*self.replicas, *self.participants, *self.clients, *self.load_pool]

    @property
    def load_pool(self) -> dict[str, int]:
        """Load generator -> how many logical clients it hosts (``dtm_ray.poolkeys``)."""
        from dtm_ray.poolkeys import pool_split

        return pool_split(self.load_pool_clients, self.load_pool_generators)

    def pool_clients(self) -> list[str]:
        from dtm_ray.poolkeys import pool_client_names

        return [c for gen, count in self.load_pool.items() for c in pool_client_names(gen, count)]

    def pbft_config(self):
        from dtm_ray.pbft.config import PbftConfig

        return PbftConfig(
            replicas=self.replicas, f=self.f, batch_size=self.batch_size,
            batch_wait_ms=self.batch_wait_ms, checkpoint_interval=self.checkpoint_interval,
            watermark_window=self.watermark_window, view_change_timeout_ms=self.view_change_timeout_ms,
            client_retry_ms=self.client_retry_ms, max_request_bytes=self.max_request_bytes,
            auth_scheme=self.auth_scheme, max_inflight_batches=self.max_inflight_batches,
            status_interval_ms=self.status_interval_ms,
            clients=frozenset(self.clients).union(self.pool_clients()))

    def txn_config(self):
        from dtm_ray.txn.config import TxnConfig

        from dtm_ray.txn.config import ClientPolicy

        policies = {client: ClientPolicy(
            participants=frozenset(p["participants"]) if p.get("participants") is not None else None,
            ops=frozenset(p["ops"]) if p.get("ops") is not None else None)
            for client, p in self.policies.items()}
        return TxnConfig(replicas=self.replicas, f=self.f, participants=dict(self.participants),
                         vote_timeout_ms=self.vote_timeout_ms, resend_ms=self.resend_ms,
                         max_ops=self.max_ops, policies=policies or None)

    def replace(self, **changes: Any) -> "ClusterConfig":
        return dataclasses.replace(self, **changes)

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClusterConfig":
        """Build from plain data (a parsed file); unknown keys are errors, not silently ignored."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a cluster configuration must be a mapping, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown configuration parameter(s) {unknown}; allowed: {allowed}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ClusterConfig":
        """Load a ``.yaml``/``.yml`` or ``.toml`` file. A YAML file may nest the parameters under a
        top-level ``dtm:`` key (so the DTM section can live beside other tools' settings)."""
        path = os.fspath(path)
        if not path.endswith((".yaml", ".yml", ".toml")):
            raise ConfigError(f"{path}: configuration files must end in .yaml, .yml or .toml")
        with open(path, "rb") as fh:
            raw = fh.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            try:
                data = yaml.safe_load(raw) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        else:
            import tomllib

            try:
                data = tomllib.loads(raw.decode())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        if isinstance(data, Mapping) and set(data) == {"dtm"}:
            data = data["dtm"]
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------------------------------------
# Validation: one small check per rule, each naming the parameter


def _validate(c: ClusterConfig) -> None:
    _check_int(c, "f", minimum=0)
    if c.n is not None:
        _check_int(c, "n", minimum=1)
        if c.n < 3 * c.f + 1:
            raise ConfigError(f"n = {c.n} replicas cannot tolerate f = {c.f}: n must be >= 3f+1 = {3 * c.f + 1}")
    _check_participants(c.participants)
    _check_clients(c.clients)
    _check_int(c, "load_pool_clients", minimum=0)
    _check_int(c, "load_pool_generators", minimum=1)
    _check_namespace(c)
    for name in ("batch_size", "checkpoint_interval", "watermark_window", "view_change_timeout_ms",
                 "client_retry_ms", "max_request_bytes", "vote_timeout_ms", "resend_ms", "max_ops",
                 "tick_ms"):
        _check_int(c, name, minimum=1)
    for name in ("batch_wait_ms", "max_inflight_batches", "status_interval_ms"):
        _check_int(c, name, minimum=0)
    if c.watermark_window < 2 * c.checkpoint_interval:
        raise ConfigError(f"watermark_window must be >= 2 * checkpoint_interval = {2 * c.checkpoint_interval}, "
                          f"got {c.watermark_window}")
    if not isinstance(c.submit_timeout_s, (int, float)) or isinstance(c.submit_timeout_s, bool) \
            or c.submit_timeout_s <= 0:
        raise ConfigError(f"submit_timeout_s must be a number > 0, got {c.submit_timeout_s!r}")
    _check_choice(c, "auth_scheme", AUTH_SCHEMES)
    _check_choice(c, "log_level", LOG_LEVELS)
    _check_choice(c, "placement", PLACEMENTS)
    if not isinstance(c.log_json, bool):
        raise ConfigError(f"log_json must be true or false, got {c.log_json!r}")
    for name in ("data_dir", "address"):
        v = getattr(c, name)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{name} must be a non-empty string or None, got {v!r}")
    if c.key_seed is not None:
        _check_int(c, "key_seed", minimum=0)
    _check_policies(c)


def _check_policies(c: ClusterConfig) -> None:
    unknown_policy = sorted(set(c.policies) - set(c.clients))
    if unknown_policy:
        raise ConfigError(f"policies name unknown client(s) {unknown_policy}; clients: {list(c.clients)}")
    for client, policy in c.policies.items():
        if not isinstance(policy, Mapping) or set(policy) - {"participants", "ops"}:
            raise ConfigError(f"policies[{client!r}] must be a mapping with keys 'participants' and/or 'ops', "
                              f"got {policy!r}")
        unknown = sorted(set(policy.get("participants") or ()) - set(c.participants))
        if unknown:
            raise ConfigError(f"policies[{client!r}] names unknown participant(s) {unknown}")


def _check_int(c: ClusterConfig, name: str, *, minimum: int) -> None:
    v = getattr(c, name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")


def _check_choice(c: ClusterConfig, name: str, allowed: tuple[str, ...]) -> None:
    v = getattr(c, name)
    if v not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {v!r}")


def _check_participants(participants: dict) -> None:
    if not participants:
        raise ConfigError("participants must name at least one service, e.g. {'db-0': 'kv'}")
    for name, kind in participants.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"participants: {name!r} is not a valid name (letters, digits, _.:-, at most 64)")
        if kind not in PARTICIPANT_KINDS:
            raise ConfigError(f"participants[{name!r}] has unknown kind {kind!r}; allowed: {list(PARTICIPANT_KINDS)}")


def _check_clients(clients: tuple) -> None:
    for name in clients:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"clients: {name!r} is not a valid name (letters, digits, _.:-, at most 64)")
    if len(set(clients)) != len(clients):
        raise ConfigError(f"clients must be distinct, got {list(clients)}")


def _check_namespace(c: ClusterConfig) -> None:
    """Replica, participant and client ids address messages: they must not collide."""
    for name in [*c.participants, *c.clients]:
        if _REPLICA_ID.match(name):
            raise ConfigError(f"{name!r} looks like a replica id (R<number>), reserved for replicas")
    clash = sorted(set(c.participants) & set(c.clients))
    if clash:
        raise ConfigError(f"names used both as participant and client: {clash}")
    taken = sorted(set(c.load_pool) & {*c.participants, *c.clients})
    if taken:
        raise ConfigError(f"{taken} name the load generators (load_pool_clients > 0): rename them or set "
                          "load_pool_clients=0")
