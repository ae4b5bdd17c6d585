"""The interactive workflow as a script: ``dtm-ray start`` (a detached daemon, here joining the
test session's Ray), ``dtm_ray.connect()`` from another process (a transaction and a chaos
operation), ``dtm-ray status`` and ``submit`` seeing the fault, ``dtm-ray stop`` removing it all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from rich.console import Console

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CONNECT_SCRIPT = """
import json, dtm_ray
from dtm_ray import Op
cluster = dtm_ray.connect()
assert isinstance(cluster, dtm_ray.Cluster), type(cluster)
r = cluster.client("alice").submit([Op.put("db-0", "acct:1", 10), Op.put("db-1", "acct:2", 0)])
cluster.chaos.byzantine(1, "mute")
text = repr(cluster)
print(json.dumps({"committed": r.committed, "txn_id": r.txn_id, "repr": text,
                  "state": cluster.participant_state("db-0")}))
cluster.shutdown()  # detaches; the cluster keeps running
"""


def dtm(args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "dtm_ray.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_start_connect_chaos_status_stop(ray_session, tmp_path):
    ray = ray_session
    env = dict(os.environ, DTM_RAY_HOME=str(tmp_path / "home"), RAY_AUTH_MODE="token")
    env.pop("DTM_RAY_FORBID_START", None)
    address = ray.get_runtime_context().gcs_address
    started = dtm(["start", "--address", address, "--data-dir", str(tmp_path / "data"), "--key-seed", "5",
                   "--log-level", "WARNING"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "cluster 'default' running" in started.stdout
    info = json.loads((tmp_path / "home" / "sessions" / "default.json").read_text())
    try:
        again = dtm(["start", "--address", address], env)
        assert again.returncode == 1 and "already running" in again.stderr

        attached = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT], capture_output=True, text=True,
                                  env=env, timeout=180)
        assert attached.returncode == 0, attached.stderr[-3000:]
        seen = json.loads(attached.stdout.strip().splitlines()[-1])
        assert seen["committed"] and seen["txn_id"] == "alice:1"
        assert seen["state"] == {"acct:1": 10}
        assert "R1=byzantine:mute" in seen["repr"] and "4/4 replicas up" in seen["repr"]

        status = dtm(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        status = json.loads(status.stdout)
        assert [r["byzantine"] for r in status["replicas"]] == [None, "mute", None, None]
        assert status["chaos"]["byzantine"] == {"R1": "mute"}

        # with one replica mute (f = 1) the cluster still commits, from the command line
        submitted = dtm(["submit", '[["add", "db-0", "acct:1", -4, {"min": 0}], ["add", "db-1", "acct:2", 4]]',
                         "--client", "bob"], env)
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["outcome"] == "commit"

        _watch_in_this_process(tmp_path)
    finally:
        stopped = dtm(["stop"], env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "home" / "sessions" / "default.json").exists()
    from actors.names import actor_name

    for name, namespace in ((actor_name("R0"), info["namespace"]), ("session:default", "dtm-ray-sessions")):
        assert _gone_within(ray, name, namespace, timeout_s=30), f"{name} outlived `dtm-ray stop`"
    gone = dtm(["status"], env)
    assert gone.returncode == 1 and "no running cluster" in gone.stderr


def _gone_within(ray, name, namespace, timeout_s):
    """Ray releases a dead actor's name asynchronously: poll that observable fact."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        time.sleep(0.1)
    return False


def _watch_in_this_process(tmp_path):
    """connect() in a process already in Ray (a notebook, say) and one frame of watch()."""
    from dtm_ray import session

    previous = os.environ.get("DTM_RAY_HOME")
    os.environ["DTM_RAY_HOME"] = str(tmp_path / "home")
    try:
        cluster = session.connect()
        console = Console(record=True, width=120, file=open(os.devnull, "w"))
        cluster.watch(refresh_s=0.2, duration_s=0.3, console=console)
        text = console.export_text()
        assert "byzantine:mute" in text and "db-0" in text
        cluster.shutdown()
        import ray

        assert ray.is_initialized()  # detaching did not disconnect the test session
    finally:
        if previous is None:
            del os.environ["DTM_RAY_HOME"]
        else:
            os.environ["DTM_RAY_HOME"] = previous
