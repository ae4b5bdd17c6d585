"""The audit trail off the hot loop: ``logs.outputs`` writes a round's transaction steps as ONE
record, and ``logs.audit`` (``dtm-ray audit``) reads back the same trail as one record per step."""

from __future__ import annotations

import json
import os

import pytest
from loguru import logger

from dtm_ray import logs
from dtm_ray.pbft.events import Executed
from dtm_ray.txn.events import Decided, Final, Ordered, PreparesSent

ROUND = [Ordered("alice:3", 5), PreparesSent("alice:3", ("db-0",), (2,)), Decided("alice:3", "commit", 6, None),
         Executed("R1", 0, 6, b"d", (("alice", 3), ("bob", 1)), 1), Final("alice:3"), Ordered("bob:1", 7)]
EXPECTED = [("R1", "Ordered", 5), ("R1", "PreparesSent", "-"), ("R1", "Decided", 6), ("R1", "executed", 6),
            ("R1", "Final", "-")]


@pytest.fixture
def audit_sink(tmp_path, monkeypatch):
    directory = logs.log_dir(str(tmp_path))
    os.makedirs(directory)
    path = os.path.join(directory, "audit-R1.jsonl")
    sink = logger.add(path, serialize=True, level="TRACE", filter=logs.is_audit_record)
    yield directory, path
    logger.remove(sink)


def trail_of(directory, txn):
    return [(r["party"], r["message"].split(" ")[0], r["seq"]) for r in logs.audit(directory, txn)]


@pytest.mark.parametrize("shown_from", [logs._LEVEL_NO["WARNING"], 0])
def test_one_record_per_round_and_the_same_trail_as_one_record_per_step(audit_sink, monkeypatch, shown_from):
    """At WARNING (the bench's level) the round is one record; with everything shown (0) each step
    is its own record, as before. ``dtm-ray audit`` reads the same trail either way."""
    directory, path = audit_sink
    monkeypatch.setattr(logs, "_SHOWN_FROM", shown_from)
    logs.outputs(logger.bind(role="replica", id="R1", view="-", seq="-"), ROUND)
    logger.complete()
    with open(path) as fh:
        lines = fh.readlines()
    assert len(lines) == (1 if shown_from else 7)  # 5 steps of alice:3, 2 of bob:1
    assert trail_of(directory, "alice:3") == EXPECTED
    assert trail_of(directory, "bob:1") == [("R1", "executed", 6), ("R1", "Ordered", 7)]
    if shown_from:
        assert json.loads(lines[0])["record"]["level"]["name"] == "TRACE"  # never on a human sink
