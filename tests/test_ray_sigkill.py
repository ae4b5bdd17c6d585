"""Durability when the whole Ray cluster dies at once: a private Ray head (``ray start --head``
in its own process group) and a driver commit transactions; both process groups are SIGKILLed
(every raylet, worker and actor with them); a new head and driver start on the same data_dir.
Every acknowledged commit must be there, and nothing is left in doubt.

It uses its own Ray, not the session's; only process groups this test started are killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.ray_helpers import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

DRIVER = str(Path(__file__).with_name("sigkill_driver.py"))
ROOT = str(Path(__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(temp_dir: str, port: int) -> subprocess.Popen:
    # a private loopback cluster for this test: no auth token to hand around
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    env.pop("DTM_RAY_FORBID_START", None)
    return subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", "--num-cpus=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)


def start_driver(address: str, data_dir: str, phase: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    env.pop("DTM_RAY_FORBID_START", None)
    return subprocess.Popen([sys.executable, DRIVER, address, data_dir, phase], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True, env=env, cwd=ROOT)


def sigkill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test created (start_new_session)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except ProcessLookupError:
                pass
    return out


def test_acknowledged_commits_survive_sigkill_of_the_whole_ray_cluster(tmp_path):
    data_dir = str(tmp_path / "data")
    temp_dir = tempfile.mkdtemp(prefix="dtmsk-")
    port = free_port()
    address = f"127.0.0.1:{port}"

    head = start_head(temp_dir, port)
    driver = start_driver(address, data_dir, "commit")
    try:
        line = driver.stdout.readline()
        assert line, "the committing driver printed nothing"
        acked = json.loads(line)["acked"]
        assert acked, "nothing was acknowledged"
    finally:
        sigkill_group(driver)
        sigkill_group(head)
    wait_until(lambda: not group_members(head.pid), timeout_s=30, what="the killed head's processes gone")

    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_head(temp_dir, port)
    driver = start_driver(address, data_dir, "recover")
    try:
        out, _ = driver.communicate(timeout=240)
        recovered = json.loads(out.strip().splitlines()[-1])
    finally:
        sigkill_group(driver)
        sigkill_group(head)
    assert recovered["after"] is True
    queue = recovered["mq-0"]
    assert all(i in queue for i in acked), (acked, queue)
    moved = len(queue)  # each enqueued item is one committed transfer: atomic with the adds
    assert recovered["db-0"]["a"] == 100 - moved and recovered["db-1"]["b"] == 100 + moved, recovered
