"""Shared fixtures: ONE local Ray for the whole test session, and a guard that keeps Ray out of
every test not marked ``ray`` (unit tests must never pay for, or depend on, a Ray cluster).

Ray is imported lazily: a run that selects no ``ray`` test never imports it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_IGNORE_UNHANDLED_ERRORS": "1",  # fire-and-forget deliveries to a dead peer are expected
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _init_local_ray(temp_dir: str):
    """Ray gives its raylet a fixed 30 s to register; on this shared 2-core machine under load
    that is sometimes not enough, so try once more before failing the session."""
    import ray

    for attempt in range(2):
        try:
            ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, _node_ip_address="127.0.0.1",
                     namespace="dtm-tests", log_to_driver=False, configure_logging=False)
            return ray
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt:
                raise
            ray.shutdown()


@pytest.fixture(scope="session")
def _ray_temp_dir():
    temp_dir = tempfile.mkdtemp(prefix="dtmray-")
    yield temp_dir
    import ray

    if "ray" in sys.modules and ray.is_initialized():
        ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(_ray_temp_dir):
    """The session's one loopback-only local Ray (actors use ``num_cpus=0``), started by the first
    test that asks for it and kept for the rest (a multi-node test replaces it for its duration)."""
    os.environ.update(RAY_ENV)
    import ray

    if not ray.is_initialized():
        _init_local_ray(_ray_temp_dir)
    return ray


@pytest.fixture
def multinode_ray(_ray_temp_dir, monkeypatch):
    """A ``ray.cluster_utils.Cluster``: a head and two more nodes on loopback, this driver
    connected to it. The session's local Ray is stopped meanwhile and restarted after."""
    os.environ.update(RAY_ENV)
    import ray
    from ray.cluster_utils import Cluster

    had_local = ray.is_initialized()
    if had_local:
        ray.shutdown()
    private = tempfile.mkdtemp(prefix="dtmmn-")  # short: Ray's socket paths must fit in 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", private)  # cluster_utils writes its address file there
    os.makedirs(os.path.join(private, "ray"), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "temp_dir": private,
        "node_ip_address": "127.0.0.1"})
    workers = [cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1") for _ in range(2)]
    ray.init(address=cluster.address, namespace="dtm-tests", log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    deadline = time.monotonic() + 60  # registered is not yet schedulable: wait until all are alive
    while sum(1 for n in ray.nodes() if n.get("Alive")) < 3:
        assert time.monotonic() < deadline, "the 3 Ray nodes did not come up"
        time.sleep(0.1)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(private, ignore_errors=True)
        if had_local:
            _init_local_ray(_ray_temp_dir)


@pytest.fixture(autouse=True)
def _forbid_ray_outside_ray_tests(request, monkeypatch):
    """A test not marked ``ray`` that starts Ray fails loudly instead of quietly costing seconds."""
    if request.node.get_closest_marker("ray") is not None:
        return

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray but is not marked @pytest.mark.ray")

    ray = sys.modules.get("ray")
    if ray is not None:
        monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("DTM_RAY_FORBID_START", request.node.nodeid)
