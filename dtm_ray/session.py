"""Long-running clusters: ``dtm-ray start`` / ``stop``, and ``dtm_ray.connect()`` from a shell.

A cluster made by ``dtm_ray.start`` lives as long as the Python process that made it (its actors
are owned by that driver). ``dtm-ray start`` therefore runs that process as a small **daemon**,
detached from the terminal, which:

1. starts the cluster (a loopback-only local Ray of its own, or joins ``address``);
2. creates every client actor up front, so that they outlive any shell that uses them;
3. publishes how to find it: a *session file* ``$DTM_RAY_HOME/sessions/<name>.json`` (default home
   ``~/.dtm-ray``: the Ray address, the cluster's namespace, config, data directory and the
   daemon's pid) and a named *registry actor* ``session:<name>`` in the Ray namespace
   ``dtm-ray-sessions`` (the same facts, for a shell on another machine of a multi-node Ray);
4. waits for SIGTERM/SIGINT (``dtm-ray stop``), then shuts the cluster down and removes the file.

``connect(name)`` attaches to it and hands back an ``AttachedCluster``: the same ``Cluster`` API
(``client``, ``chaos``, ``status``, ``participant_state``, ``run_load``) plus ``watch()``, whose
``shutdown()`` only detaches (the daemon owns the cluster; ``dtm-ray stop`` ends it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dtm_ray.api import Cluster  # imports no Ray: that happens in connect()
from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError, LocalError

DEFAULT_NAME = "default"
REGISTRY_NAMESPACE = "dtm-ray-sessions"
START_TIMEOUT_S = 240.0  # a cold Ray on a busy 2-core machine can take a minute
STOP_TIMEOUT_S = 60.0


class NoCluster(LocalError):
    """No running cluster by that name (never started, stopped, or its daemon died)."""


class SessionError(LocalError):
    """``dtm-ray start``/``stop`` could not do what was asked (the message says why)."""


# ---------------------------------------------------------------------------------------------
# Where sessions are recorded


_SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _SESSION_NAME.match(name):
        raise ConfigError(f"cluster name {name!r} must be letters, digits, '_', '.', '-' (at most 64)")
    return name


def home() -> Path:
    return Path(os.environ.get("DTM_RAY_HOME") or Path.home() / ".dtm-ray")


def session_file(name: str) -> Path:
    return home() / "sessions" / f"{check_name(name)}.json"


def daemon_log(name: str) -> Path:
    return home() / "sessions" / f"{name}.log"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def read_session(name: str = DEFAULT_NAME) -> dict:
    """The session record of a *running* daemon; a stale record (daemon gone) is removed."""
    path = session_file(name)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoCluster(f"no running cluster named {name!r} (start one with `dtm-ray start"
                        f"{'' if name == DEFAULT_NAME else ' --name ' + name}`)") from None
    except ValueError:
        raise NoCluster(f"session file {path} is unreadable: remove it and start again") from None
    if not pid_alive(info["pid"]):
        path.unlink(missing_ok=True)
        raise NoCluster(f"the cluster named {name!r} is gone (its daemon, pid {info['pid']}, exited; "
                        f"see {daemon_log(name)})")
    return info


def _write_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The daemon (``python -m dtm_ray.session serve NAME CONFIG_JSON``)


class Registry:
    """A named actor that tells a shell anywhere in the Ray cluster where the DTM cluster is."""

    def __init__(self, info: dict) -> None:
        self._info = info

    def info(self) -> dict:
        return self._info


def serve(name: str, cfg: ClusterConfig) -> None:
    """Run the cluster until SIGTERM or SIGINT. Blocks; meant for the daemon process."""
    from dtm_ray.api import start

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if cfg.address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # a shell can then connect with the token
    cluster = start(cfg)
    registry = None
    try:
        import ray

        for client in cfg.clients:  # owned by this daemon, so they outlive the shells using them
            cluster.client(client)
        info = {"name": name, "pid": os.getpid(), "address": ray.get_runtime_context().gcs_address,
                "namespace": cluster.namespace, "data_dir": cluster.data_dir,
                "config": cluster.config.to_dict(), "own_ray": cfg.address is None,
                # what this daemon used to talk to Ray: a shell must do the same
                "ray_auth_mode": os.environ.get("RAY_AUTH_MODE"),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        registry = ray.remote(Registry).options(
            name=f"session:{name}", namespace=REGISTRY_NAMESPACE, num_cpus=0).remote(info)
        ray.get(registry.info.remote())
        _write_atomically(session_file(name), info)
        print(f"cluster {name!r} running (pid {os.getpid()}, Ray at {info['address']})", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        path = session_file(name)
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (FileNotFoundError, ValueError):
            pass
        cluster.shutdown()
        print(f"cluster {name!r} stopped", flush=True)


def _serve_main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "serve":
        print("usage: python -m dtm_ray.session serve NAME CONFIG_JSON", file=sys.stderr)
        return 2
    name, config_path = argv[1], argv[2]
    try:
        cfg = ClusterConfig.from_dict(json.loads(Path(config_path).read_text()))
        serve(name, cfg)
    except LocalError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# ``dtm-ray start`` / ``stop``


def start_daemon(cfg: ClusterConfig, name: str = DEFAULT_NAME, timeout_s: float = START_TIMEOUT_S) -> dict:
    """Launch the daemon for ``cfg`` and wait until its cluster answers; returns the session record."""
    try:
        info = read_session(name)
    except NoCluster:
        pass
    else:
        raise SessionError(f"a cluster named {name!r} is already running (pid {info['pid']}): "
                           f"`dtm-ray stop{'' if name == DEFAULT_NAME else ' --name ' + name}` first, "
                           "or choose another --name")
    sessions = session_file(name).parent
    sessions.mkdir(parents=True, exist_ok=True)
    config_path = sessions / f"{name}.config.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    with open(daemon_log(name), "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dtm_ray.session", "serve", name, str(config_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # no terminal signals: it outlives the shell
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SessionError(f"the cluster daemon exited: {_last_error(daemon_log(name))}")
        try:
            info = json.loads(session_file(name).read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.2)
            continue
        if info.get("pid") == proc.pid:
            return info
        time.sleep(0.2)
    proc.terminate()
    raise SessionError(f"the cluster did not come up within {timeout_s:.0f} s (see {daemon_log(name)})")


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return f"{lines[-1] if lines else 'no output'} (see {log})"


def stop_daemon(name: str = DEFAULT_NAME, timeout_s: float = STOP_TIMEOUT_S) -> dict:
    """Ask the daemon to shut its cluster down and wait until it has exited."""
    info = read_session(name)
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(info["pid"]):
        if time.monotonic() > deadline:
            raise SessionError(f"the daemon (pid {info['pid']}) did not exit within {timeout_s:.0f} s")
        time.sleep(0.2)
    session_file(name).unlink(missing_ok=True)
    return info


# ---------------------------------------------------------------------------------------------
# ``connect()``


def connect(name: str = DEFAULT_NAME, *, address: str | None = None) -> "AttachedCluster":
    """Attach this process to the cluster ``name`` that ``dtm-ray start`` runs.

    On the machine that ran ``dtm-ray start`` the session file says where Ray is; elsewhere pass
    ``address`` ("auto" on a node of that Ray cluster, or "host:port")."""
    from dtm_ray.api import RAY_ENV

    local = None
    if address is None:
        local = read_session(name)
        address = local["address"]
        if local.get("ray_auth_mode"):
            os.environ.setdefault("RAY_AUTH_MODE", local["ray_auth_mode"])
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    joined = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise NoCluster(f"cannot reach Ray at {address}: {exc}") from None
        joined = True
    try:
        registry = ray.get_actor(f"session:{name}", namespace=REGISTRY_NAMESPACE)
        info = ray.get(registry.info.remote(), timeout=30)
    except (ValueError, ray.exceptions.RayError):
        if joined:
            ray.shutdown()
        raise NoCluster(f"no cluster named {name!r} in the Ray cluster at {address}") from None
    return AttachedCluster(info, disconnect_on_shutdown=joined)


class AttachedCluster(Cluster):
    """A ``Cluster`` another process owns: every operation works, ``shutdown`` only detaches."""

    def __init__(self, info: dict, *, disconnect_on_shutdown: bool) -> None:
        import ray

        from actors.names import CHAOS, actor_name
        from dtm_ray.api import ChaosControl

        super().__init__(ClusterConfig.from_dict(info["config"]), info["data_dir"], {}, owns_ray=False)
        self.name = info["name"]
        self.info = info
        self.namespace = info["namespace"]
        self._disconnect = disconnect_on_shutdown
        for party in [*self.config.replicas, *self.config.participants]:
            self._handles[party] = ray.get_actor(actor_name(party), namespace=self.namespace)
        self._chaos_actor = ray.get_actor(CHAOS, namespace=self.namespace)
        self.chaos = ChaosControl(self._chaos_actor, self)

    def client(self, name: str):
        """The client ``name``: its actor (created by the daemon) is shared, so use each client
        name from one process at a time."""
        import ray

        from actors.names import actor_name
        from dtm_ray.api import Client

        with self._lock:
            if name in self._clients:
                return self._clients[name]
            if name not in self.config.clients:
                raise ConfigError(f"unknown client {name!r}: clients are {list(self.config.clients)}")
            try:
                handle = ray.get_actor(actor_name(name), namespace=self.namespace)
            except ValueError:
                raise NoCluster(f"client {name!r} is not running in cluster {self.name!r}") from None
            self._handles[name] = handle
            client = self._clients[name] = Client(name, handle, self.config.submit_timeout_s)
            return client

    def watch(self, **kwargs: Any) -> None:
        """A live view of this cluster (Ctrl-C to leave it); see ``dtm_ray.watch.watch``."""
        from dtm_ray.watch import watch

        watch(self, **kwargs)

    def shutdown(self) -> None:
        """Detach (the cluster keeps running: ``dtm-ray stop`` ends it)."""
        if self._closed:
            return
        self._closed = True
        if self._disconnect:
            import ray

            ray.shutdown()

    def __repr__(self) -> str:
        try:
            from dtm_ray.watch import one_line

            return f"<AttachedCluster {self.name!r}: {one_line(self.status(timeout_s=2.0))}>"
        except Exception as exc:  # a repr must never raise
            return f"<AttachedCluster {self.name!r}: status unavailable ({type(exc).__name__})>"


if __name__ == "__main__":
    sys.exit(_serve_main(sys.argv[1:]))
