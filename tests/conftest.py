"""Shared fixtures: ONE local Ray for the whole test session, and a guard that keeps Ray out of
every test not marked ``ray`` (unit tests must never pay for, or depend on, a Ray cluster).

Ray is imported lazily: a run that selects no ``ray`` test never imports it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_IGNORE_UNHANDLED_ERRORS": "1",  # fire-and-forget deliveries to a dead peer are expected
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@pytest.fixture(scope="session")
def ray_session():
    """Start one loopback-only local Ray for the session (actors use ``num_cpus=0``)."""
    os.environ.update(RAY_ENV)
    import ray

    if ray.is_initialized():  # a test started its own (multi-node tests shut theirs down)
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="dtmray-")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, _node_ip_address="127.0.0.1",
             namespace="dtm-tests", log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


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
