"""The public facade: ``dtm_ray.start(cfg)`` builds a cluster of Ray actors and hands back a
``Cluster`` (a context manager) to submit transactions, look at state and inject faults.

What ``start`` does:
1. joins Ray (``cfg.address``) or starts a loopback-only local Ray without the dashboard, unless
   this process is already connected;
2. opens ``cfg.data_dir`` (a temporary directory when unset): its key file is created on the first
   start and reused afterwards, so a ``start`` on an existing directory *recovers* the cluster
   (every actor rebuilds from its RocksDB directory ``data_dir/<party>``);
3. creates one named actor per replica, participant and client (``num_cpus=0``, restarted by Ray
   when they crash) and the chaos actor, and waits until all answer.

Each actor receives only its own key ring. Ray is imported here, never by ``import dtm_ray``.
"""

from __future__ import annotations

import atexit
import os
import secrets
import tempfile
import threading
from typing import Any, Iterable

import msgspec

from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError, LocalError

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_IGNORE_UNHANDLED_ERRORS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
KEY_FILE = "cluster-keys.msgpack"


class SubmitTimeout(LocalError, TimeoutError):
    """No result accepted within ``submit_timeout_s`` (the cluster may be stalled or too faulty)."""


# ---------------------------------------------------------------------------------------------
# Starting


def start(cfg: ClusterConfig | None = None, **overrides: Any) -> "Cluster":
    """Start (or recover, on an existing ``data_dir``) a cluster; use as ``with start(cfg) as c``.
    Keyword arguments override fields of ``cfg``."""
    cfg = cfg or ClusterConfig()
    return start_with_roles(cfg.replace(**overrides) if overrides else cfg)


def start_with_roles(cfg: ClusterConfig, roles: dict[str, str] | None = None) -> "Cluster":
    """``start`` with other cores in the replica and client actors (``{"replica": "kv-replica",
    "client": "kv-client"}``: the PBFT core alone over a toy key-value store, for its own tests)."""
    if os.environ.get("DTM_RAY_FORBID_START"):
        raise RuntimeError(f"{os.environ['DTM_RAY_FORBID_START']} starts a cluster but is not marked "
                           "@pytest.mark.ray")
    owns_ray = _ensure_ray(cfg)
    data_dir = cfg.data_dir or tempfile.mkdtemp(prefix="dtm-ray-data-")
    os.makedirs(data_dir, exist_ok=True)
    keyrings = _load_or_create_keys(cfg, data_dir)
    cluster = Cluster(cfg, data_dir, keyrings, owns_ray, roles)
    try:
        cluster._launch()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _ensure_ray(cfg: ClusterConfig) -> bool:
    """Connect to Ray; True if this call started a local Ray (then ``shutdown`` stops it)."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return False
    if cfg.address is not None:
        ray.init(address=cfg.address, log_to_driver=False)
        return False
    for attempt in range(2):  # Ray gives its raylet a fixed 30 s to register: once more on a busy machine
        try:
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                     _temp_dir=tempfile.mkdtemp(prefix="dtmray-"), configure_logging=False)
            return True
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt:
                raise
            ray.shutdown()
    return True


def _load_or_create_keys(cfg: ClusterConfig, data_dir: str) -> dict[str, dict]:
    """Every party's key ring, persisted (0600) in ``data_dir`` so that a restart verifies the
    signatures its own log holds. A directory made for other parties is refused."""
    from dtm_ray.crypto import generate_keys

    path = os.path.join(data_dir, KEY_FILE)
    if os.path.exists(path):
        with open(path, "rb") as fh:
            stored = msgspec.msgpack.decode(fh.read())
        if sorted(stored) != sorted(cfg.parties):
            raise ConfigError(f"data_dir {data_dir!r} holds a cluster of parties {sorted(stored)}, "
                              f"not {sorted(cfg.parties)}: use another data_dir or the same "
                              "replicas, participants, clients and load generators "
                              "(load_pool_clients, load_pool_generators)")
        return stored
    rings = {p: k.to_dict() for p, k in generate_keys(cfg.parties, cfg.key_seed).items()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.msgpack.encode(rings))
    return rings


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """A running cluster. ``client(name)``, ``participant_state(name)``, ``status()``,
    ``chaos``, ``shutdown()``; a context manager that shuts down on exit."""

    def __init__(self, cfg: ClusterConfig, data_dir: str, keyrings: dict[str, dict], owns_ray: bool,
                 roles: dict[str, str] | None = None) -> None:
        self.config = cfg
        self.data_dir = data_dir
        self.namespace = "dtm-" + secrets.token_hex(4)
        self._keyrings = keyrings
        self._owns_ray = owns_ray
        self._roles = roles or {"replica": "replica", "client": "client"}
        self._specs: dict[str, dict] = {}
        self._handles: dict[str, Any] = {}
        self._clients: dict[str, Client] = {}
        self._generators: dict[str, Any] = {}  # load-generator actors of the load pool, by party
        self._chaos_actor = None
        self._home: str | None = None  # the node participants and clients are pinned to, if several
        self.chaos: ChaosControl | None = None
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self.shutdown)

    # -- building -------------------------------------------------------------------------------
    def spec(self, party: str, role: str) -> dict:
        keys = self._keyrings[party]
        if party in self.config.replicas and self.config.load_pool:
            keys = {**keys, "pool": self.config.load_pool}  # replicas derive pool clients' keys
        return {"party": party, "role": role, "namespace": self.namespace,
                "config": self.config.to_dict(), "keys": keys,
                "path": os.path.join(self.data_dir, party), "epoch": 0}

    def _launch(self) -> None:
        import ray

        from actors import launch
        from actors.chaos import Chaos
        from actors.names import CHAOS

        spread = self.config.placement == "spread"
        nodes = launch.alive_nodes() if spread else []
        for i, party in enumerate(self.config.replicas):
            spec = self.spec(party, self._roles["replica"])
            if len(nodes) > 1:  # round-robin over the nodes: a node's loss costs few replicas
                spec["node"] = nodes[i % len(nodes)]
            self._start_party(spec)
        # Participants and clients keep state that cannot be re-created elsewhere (a service's
        # data, a client's request counter), so with several nodes they are pinned beside this
        # driver, where their directories are, and never moved by the placement supervisor.
        self._home = launch.here() if len(nodes) > 1 else None
        for party in self.config.participants:
            spec = self.spec(party, "participant")
            spec["node"] = self._home
            self._start_party(spec)
        launch.wait_alive(list(self._handles.values()))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # beside this driver (a chaos actor on a node that fails would take the fault plan with
        # it); restarted by Ray if it dies anyway
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        chaos_cls = ray.remote(Chaos).options(name=CHAOS, namespace=self.namespace, num_cpus=0,
                                              max_restarts=-1, scheduling_strategy=here)
        # no handles: the chaos actor looks the parties up by name (handles as constructor
        # arguments of a restartable actor make Ray warn on every start)
        # The chaos actor keeps its fault plan in the data directory for its own restarts; a plan
        # left there by an earlier cluster describes actors that no longer exist.
        stale_plan = os.path.join(self.data_dir, "chaos-plan.json")
        if os.path.exists(stale_plan):
            os.remove(stale_plan)
        self._chaos_actor = chaos_cls.remote(self._specs, None, list(self.config.replicas), spread)
        # Return only once it has looked every party up: until then a lost node could take a
        # party with it before the chaos actor knew it.
        ray.get(self._chaos_actor.plan.remote(), timeout=60)
        self.chaos = ChaosControl(self._chaos_actor, self)

    def _start_party(self, spec: dict, *, spread: bool = False) -> Any:
        from actors import launch

        self._specs[spec["party"]] = spec
        handle = self._handles[spec["party"]] = launch.launch(spec, spread=spread)
        return handle

    # -- the public API -------------------------------------------------------------------------
    def client(self, name: str) -> "Client":
        """The client ``name`` (one of ``config.clients``), its actor created on first use."""
        with self._lock:
            if name in self._clients:
                return self._clients[name]
            if name not in self.config.clients:
                raise ConfigError(f"unknown client {name!r}: clients are {list(self.config.clients)} "
                                  "(ClusterConfig.clients)")
            from actors import launch

            spec = self.spec(name, self._roles["client"])
            spec["node"] = self._home
            handle = self._start_party(spec)
            launch.wait_alive([handle])
            self._register_client(name, handle)
            client = self._clients[name] = Client(name, handle, self.config.submit_timeout_s)
            return client

    def _register_client(self, name: str, handle: Any) -> None:
        """The chaos actor learns about clients created after it (they can be crashed too)."""
        import ray

        ray.get(self._chaos_actor.adopt.remote(name, self._specs[name], handle))

    def run_load(self, workload: str, clients: list[str] | None = None, *, concurrency: int | None = None,
                 rate: float | None = None, count: int | None = None, duration_s: float | None = None,
                 generators: int | None = None, accounts: int = 10_000, seed: int = 0,
                 params: dict | None = None, timeout_s: float | None = None) -> list[dict] | dict:
        """Run a workload; two forms.

        ``run_load("bank", concurrency=2000, duration_s=60)`` (or ``rate=`` txn/s, open loop):
        that many logical clients of the load pool (``ClusterConfig.load_pool_clients``) in the
        load-generator actors (``generators``: how many of them, default all), on a bank of
        ``accounts`` accounts per kv participant opened first ("bank" or "hot-key"). Returns a
        report: committed/aborted/unknown, ``committed_per_s``, ``latency_ms`` (p50/p90/p95/p99),
        ``per_committed`` costs (actor calls, fsyncs, CPU s, bytes, MACs, signatures), the bank
        setup's time and the checks' verdicts (``checks``: bank total conserved, atomicity).

        ``run_load(workload, clients, count=.. | duration_s=..)``: ``workload`` ("bank" or
        "list-append") from each declared client actor concurrently; returns every client's records
        (``actors.loadgen.Record`` as dicts). Seeds differ per client: ``seed * 1000 + index``."""
        import ray

        if concurrency is not None or rate is not None:
            from actors.loadrun import run_pool_load

            if clients is not None:
                raise ConfigError("run_load: give client names or concurrency/rate, not both")
            return run_pool_load(self, workload, concurrency=concurrency, rate=rate,
                                 duration_s=60.0 if duration_s is None else duration_s,
                                 generators_count=generators, seed=seed, accounts=accounts,
                                 params=params, timeout_s=timeout_s)
        if clients is None:
            raise ConfigError("run_load needs client names, or concurrency= / rate= for the load pool")
        for name in clients:
            self.client(name)
        timeout = timeout_s or self.config.submit_timeout_s
        refs = [self._current_handle(name).run_load.remote(
            workload, count=count, duration_s=duration_s, seed=seed * 1000 + i, timeout_s=timeout,
            params=params) for i, name in enumerate(clients)]
        budget = (duration_s or 0) + (count or 0) * timeout + 60
        return [rec for recs in ray.get(refs, timeout=budget) for rec in recs]

    def _load_generator(self, name: str) -> Any:
        """The load-generator actor ``name`` of the load pool, started on first use. Not restarted
        by Ray: its clients' request ids live in its memory (``actors.loadgen_actor``)."""
        with self._lock:
            handle = self._generators.get(name)
            if handle is not None:
                return handle
            import ray

            from actors import launch
            from actors.loadgen_actor import LoadGenActor
            from actors.names import actor_name

            options = dict(name=actor_name(name), namespace=self.namespace, num_cpus=0, max_concurrency=10_000)
            if self._home is not None:  # beside the driver, like the clients
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._home, soft=False)
            spec = {"party": name, "namespace": self.namespace, "config": self.config.to_dict(),
                    "generator_keys": self._keyrings[name]}
            handle = ray.remote(LoadGenActor).options(**options).remote(spec)
            launch.wait_alive([handle])
            self._generators[name] = handle
            return handle

    def participant_state(self, name: str) -> Any:
        import ray

        if name not in self.config.participants:
            raise ConfigError(f"unknown participant {name!r}: participants are {list(self.config.participants)}")
        return ray.get(self._current_handle(name).state.remote(), timeout=30)

    def applied(self) -> list[Any]:
        """Every participant's ``Applied`` events since its process started (for the atomicity
        checker, ``dtm_ray.checks.atomicity``)."""
        import ray

        refs = [self._current_handle(p).applied.remote() for p in self.config.participants]
        return [event for events in ray.get(refs, timeout=30) for event in events]

    def status(self, timeout_s: float = 5.0) -> dict:
        """A plain, JSON-serialisable picture of every party (``alive: False`` if it did not answer)."""
        import ray

        clients = list(self._clients)  # a snapshot: other threads may add clients meanwhile
        parties = [*self.config.replicas, *self.config.participants, *clients]
        refs = {p: self._current_handle(p).status.remote() for p in parties}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        ready = set(ready)
        out = {}
        for party, ref in refs.items():
            try:
                out[party] = _plain(ray.get(ref)) if ref in ready else {"id": party, "alive": False}
            except Exception as exc:
                out[party] = {"id": party, "alive": False, "error": type(exc).__name__}
        return {
            "replicas": [out[p] for p in self.config.replicas],
            "participants": {p: out[p] for p in self.config.participants},
            "clients": {p: out[p] for p in clients},
            "chaos": self._chaos_plan(timeout_s),
            "data_dir": self.data_dir,
        }

    def _chaos_plan(self, timeout_s: float) -> dict:
        import ray

        if self._chaos_actor is None:
            return {}
        try:
            return ray.get(self._chaos_actor.plan.remote(), timeout=timeout_s)
        except Exception as exc:
            return {"error": type(exc).__name__}

    def _current_handle(self, party: str) -> Any:
        """Chaos may have re-created the actor: look it up by name."""
        import ray

        from actors.names import actor_name

        try:
            return ray.get_actor(actor_name(party), namespace=self.namespace)
        except ValueError:
            return self._handles[party]

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        from actors.names import actor_name

        if ray.is_initialized():
            for party in list(self._specs):
                try:
                    ray.kill(ray.get_actor(actor_name(party), namespace=self.namespace), no_restart=True)
                except Exception:
                    pass
            for handle in self._generators.values():
                ray.kill(handle, no_restart=True)
            if self._chaos_actor is not None:
                ray.kill(self._chaos_actor, no_restart=True)
            if self._owns_ray:
                ray.shutdown()
        atexit.unregister(self.shutdown)

    def watch(self, **kwargs: Any) -> None:
        """A live view of this cluster (Ctrl-C to leave it); see ``dtm_ray.watch.watch``."""
        from dtm_ray.watch import watch

        watch(self, **kwargs)

    def __repr__(self) -> str:
        if self._closed:
            return f"<Cluster {self.namespace}: shut down>"
        try:
            from dtm_ray.watch import one_line

            return f"<Cluster {self.namespace}: {one_line(self.status(timeout_s=2.0))}>"
        except Exception as exc:  # a repr must never raise
            return f"<Cluster {self.namespace}: status unavailable ({type(exc).__name__})>"

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _plain(value: Any) -> Any:
    """JSON-friendly: bytes as hex, tuples as lists, dataclasses/sets handled."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class Client:
    """One client party. ``submit`` blocks until f+1 replicas agree on the result; use one
    ``Client`` per thread (a client has one request outstanding at a time)."""

    def __init__(self, name: str, handle: Any, timeout_s: float) -> None:
        self.name = name
        self._handle = handle
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def submit(self, ops: Iterable[Any] | Any, timeout_s: float | None = None) -> Any:
        import ray

        timeout = timeout_s or self._timeout_s
        operation = list(ops) if isinstance(ops, (list, tuple)) else ops
        with self._lock:
            try:
                return ray.get(self._handle.submit.remote(operation, timeout), timeout=timeout + 5)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError) as exc:
                if isinstance(exc, ray.exceptions.GetTimeoutError) or "TimeoutError" in str(exc):
                    raise SubmitTimeout(f"{self.name}: no result accepted within {timeout} s") from None
                raise


class ChaosControl:
    """``cluster.chaos``: the chaos actor's operations, blocking until each has taken effect."""

    def __init__(self, actor: Any, cluster: Cluster) -> None:
        self._actor = actor
        self._cluster = cluster

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self._actor, method).remote(*args), timeout=120)

    def crash(self, target: int | str) -> str:
        return self._call("crash", target)

    def kill(self, target: int | str) -> str:
        return self._call("kill", target)

    def restart(self, target: int | str) -> str:
        return self._call("restart", target)

    def wipe(self, target: int | str) -> str:
        return self._call("wipe", target)

    def byzantine(self, target: int | str, behaviour: Any, seed: int = 0) -> str:
        """``behaviour``: a catalogue name, or a callable ``fn(dest, payload) -> [(dest, payload)]``
        shipped with cloudpickle (operator code; never message content)."""
        if callable(behaviour):
            import cloudpickle

            behaviour = cloudpickle.dumps(behaviour)
        elif not isinstance(behaviour, str):
            raise ConfigError(f"behaviour must be a catalogue name or a callable, got {type(behaviour).__name__}")
        return self._call("byzantine", target, behaviour, seed)

    def heal(self, target: int | str) -> str:
        return self._call("heal", target)

    def partition(self, *groups: Iterable[int | str]) -> list[list[str]]:
        return self._call("partition", *[list(g) for g in groups])

    def heal_network(self) -> None:
        return self._call("heal_network")

    def plan(self) -> dict:
        return self._call("plan")
