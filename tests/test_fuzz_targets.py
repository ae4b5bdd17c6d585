"""The fuzz targets of ``fuzz/`` run here through hypothesis (always), and through atheris for a
short coverage-guided run when atheris is installed (``pip install -e ".[fuzz]"``).

A failing atheris run leaves its input as ``crash-*`` in a temporary directory and prints it;
replay it with ``python -m fuzz.<target> <crash file>``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from fuzz.targets import ROLES, decoder, handler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=600))
def test_decoder_target(data):
    decoder(data)


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.binary(min_size=0, max_size=64))
def test_handler_targets(role, data):
    handler(role)(data)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed (fuzz extra)")
@pytest.mark.parametrize("target,runs", [("decoder", 5_000), ("replica", 1_000), ("participant", 1_000),
                                         ("client", 1_000)])
def test_short_atheris_run(target, runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", f"fuzz.{target}", f"-atheris_runs={runs}", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    crashes = list(tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, (proc.returncode, crashes, proc.stderr[-3000:])
