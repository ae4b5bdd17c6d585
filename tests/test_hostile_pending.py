"""Protections the hardening work found MISSING: these tests FAIL today, on purpose.

Each names its finding in /work/notes/h7_findings.md (what, where, a proposed fix of a few
lines). They are excluded from the default run (``-m "not pending"`` in CI would hide them, so
instead they are skipped unless ``DTM_HOSTILE_PENDING=1``): the lead lands a fix, then deletes
the skip of that test (or moves it to the matching ``test_hostile_*`` module).

    DTM_HOSTILE_PENDING=1 python -m pytest tests/test_hostile_pending.py
"""

from __future__ import annotations

import os
import random

import pytest

from dtm_ray.crypto import Envelope
from dtm_ray.faults import make_behaviour
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.sim.hostile import ATTACK_START_MS, hostile_world, vote_batch
from dtm_ray.txn.messages import Vote
from dtm_ray.wire import decode

pytestmark = pytest.mark.skipif(os.environ.get("DTM_HOSTILE_PENDING") != "1",
                                reason="missing protections, see h7_findings.md; DTM_HOSTILE_PENDING=1 runs them")

SEED = 1


def _world(**kwargs):
    world, honest, hostile = hostile_world(SEED, **kwargs)
    world.sim.run_for(ATTACK_START_MS)
    return world, honest, hostile


def test_finding_4_an_equivocation_exposed_by_a_decide_is_recorded():
    """A replica that holds the participant's YES and executes a DECIDE carrying its NO (signed by
    the same participant, same transaction) holds a proof: seed 2 has none recorded today."""
    world, _, _ = hostile_world(2)
    world.byzantine["db-2"] = "equivocate-vote"
    world.sim.set_behaviour("db-2", make_behaviour("equivocate-vote", keys=world.keys["db-2"],
                                                   config=world.config, rng=random.Random(2)), "equivocate-vote")
    world.sim.run_for(1_900)
    aborted = [e for e in world.history.values()
               if e.result is not None and e.result.reason == "equivocating participant"]
    assert aborted
    assert any(world.sim.node(r).app.evidence for r in world.replicas)

