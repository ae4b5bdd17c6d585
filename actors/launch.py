"""Creating party actors: one place that knows the Ray options, used by the cluster builder and by
the chaos actor when it re-creates a party (``restart`` after ``kill``, ``wipe``)."""

from __future__ import annotations

import time

import ray

from actors.names import actor_name
from actors.party import ClientActor, ParticipantActor, PartyActor

_CLASSES = {"participant": ParticipantActor, "client": ClientActor, "kv-client": ClientActor}
_REMOTE: dict[type, object] = {}


def here() -> str:
    """The Ray node this process runs on."""
    return ray.get_runtime_context().get_node_id()


def alive_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


def launch(spec: dict, *, spread: bool = False):
    """Create the actor for ``spec``; Ray restarts it (rerunning ``__init__``) when it crashes.

    ``spec["node"]``, when set, pins the party to that Ray node (hard affinity: a soft one lets
    Ray pack zero-CPU actors together, defeating the spread). Ray cannot restart a pinned actor
    whose node is gone; the chaos actor's supervisor re-creates it on a live node."""
    cls = _CLASSES.get(spec["role"], PartyActor)
    remote = _REMOTE.get(cls)
    if remote is None:
        remote = _REMOTE[cls] = ray.remote(cls)
    options = dict(name=actor_name(spec["party"]), namespace=spec["namespace"], num_cpus=0,
                   max_restarts=-1, max_task_retries=0)
    if spec.get("node"):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec["node"], soft=False)
    elif spread:
        options["scheduling_strategy"] = "SPREAD"
    deadline = time.monotonic() + 30
    while True:
        try:
            return remote.options(**options).remote(spec)
        except ValueError:  # the name is still held by a killed incarnation being torn down
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_alive(handles: list, timeout_s: float = 60.0) -> None:
    """Block until every actor answers (a constructor that raises surfaces here). An actor being
    restarted by Ray answers ``ActorUnavailableError`` meanwhile: ask again."""
    deadline = time.monotonic() + timeout_s
    pending = list(handles)
    while pending:
        retry = []
        for handle in pending:
            try:
                ray.get(handle.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                retry.append(handle)
        if retry:
            time.sleep(0.05)
        pending = retry


def incarnation(handle) -> str | None:
    try:
        return ray.get(handle.ping.remote(), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def crash_and_wait(handle, timeout_s: float = 60.0) -> None:
    """Kill the process and wait until Ray's restart of it answers (a new incarnation)."""
    before = incarnation(handle)
    kill(handle, restart=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = incarnation(handle)
        if now is not None and now != before:
            return
        time.sleep(0.05)
    raise TimeoutError("the crashed actor was not restarted in time")


def kill(handle, *, restart: bool) -> None:
    try:
        ray.kill(handle, no_restart=not restart)
    except Exception:  # already dead
        pass


def wait_name_released(spec: dict, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(actor_name(spec["party"]), namespace=spec["namespace"])
        except ValueError:
            return
        time.sleep(0.05)
