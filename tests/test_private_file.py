"""The chaos actor's fault plan holds cloudpickled code it runs after a restart: it is written
0600 and a plan file that others could have written is refused, before anything in it is used."""

from __future__ import annotations

import os
import stat

import pytest

from actors import private_file
from actors.private_file import UnsafeFileError
from dtm_ray.errors import ConfigError


def test_the_plan_is_written_private_even_under_a_permissive_umask(tmp_path):
    path = str(tmp_path / "chaos-plan.json")
    old = os.umask(0)
    try:
        with open(path + ".tmp", "w") as leftover:  # a leftover temporary file, world-writable
            leftover.write("{}")
        os.chmod(path + ".tmp", 0o666)
        private_file.write_json(path, {"dead": ["R2"]})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert private_file.read_json(path) == {"dead": ["R2"]}


@pytest.mark.parametrize("mode", [0o602, 0o620, 0o666], ids=oct)
def test_a_group_or_world_writable_plan_is_refused(tmp_path, mode):
    path = str(tmp_path / "chaos-plan.json")
    private_file.write_json(path, {"behaviours": {"R1": [{"pickled": "gASVAAAA"}, 0]}})
    os.chmod(path, mode)
    with pytest.raises(UnsafeFileError, match="writable by group or others"):
        private_file.read_json(path)


def test_a_plan_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "chaos-plan.json")
    private_file.write_json(path, {"dead": []})
    monkeypatch.setattr(os, "getuid", lambda: os.stat(path).st_uid + 1)  # as if another user wrote it
    with pytest.raises(UnsafeFileError, match="owned by uid") as refused:
        private_file.read_json(path)
    assert isinstance(refused.value, ConfigError)  # a typed, local error: fix the file, not a peer


def test_the_chaos_actor_reads_its_plan_through_the_check(tmp_path):
    """``Chaos._load_plan`` goes through ``private_file.read_json``: a world-writable plan stops
    the (re)start of the chaos actor instead of running the code in it."""
    from actors.chaos import Chaos

    path = tmp_path / "chaos-plan.json"
    path.write_text('{"dead": [], "groups": [], "moved": [], "behaviours": {}, "placed": {}}')
    os.chmod(path, 0o666)
    chaos = Chaos.__new__(Chaos)  # just the plan loading: no Ray, no supervisor thread
    chaos.plan_path, chaos.specs = str(path), {}
    with pytest.raises(UnsafeFileError):
        chaos._load_plan()
