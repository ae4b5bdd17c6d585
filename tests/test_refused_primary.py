"""A primary whose own channel carries what no correct replica sends (bytes that are no message, a
message in its name under a signature that is not its own) is replaced at once.

Such a primary used to keep its view: every PRE-PREPARE it corrupted stalled in-order execution
until a retransmission, while enough got through that the replicas never looked stalled (a
sixth of the fault-free throughput in the simulator, under half on Ray). The transport's sender
is what makes the rule sound: the simulator's network cannot lie about it, and the Ray host names
a deliverer only when its call proves it (``tests/test_actor_host.py``), so a faulty backup
cannot frame the primary (last test here).
"""

from __future__ import annotations

import functools
import random

import pytest

from benchmarks.sim_txn import CLIENT_TICK_MS, TransferWorkload
from dtm_ray.crypto import Envelope
from dtm_ray.faults import make_behaviour
from dtm_ray.pbft.messages import NULL_DIGEST, PrePrepare, seal
from dtm_ray.sim.txn_world import build_txn_world
from dtm_ray.wire import decode, encode
from tests.pbft_harness import Harness

SEEDS = range(1, 7)
PER_CLIENT = 20
PBFT = {"batch_size": 100, "batch_wait_ms": 2, "checkpoint_interval": 16, "watermark_window": 64,
        "view_change_timeout_ms": 1000, "client_retry_ms": 1000}


def run_transfers(seed: int, behaviour: str | None) -> tuple[int, object]:
    """Virtual ms for 60 closed-loop clients to commit PER_CLIENT transfers each, R0 faulty from the start."""
    world = build_txn_world(seed, 4, clients=60, participants={"db-0": "kv", "db-1": "kv"},
                            client_tick_ms=CLIENT_TICK_MS, pbft=PBFT, txn={"vote_timeout_ms": 5000},
                            client_pair_keys=False)
    world.verify_cache.enabled = True
    if behaviour is not None:
        world.make_byzantine("R0", make_behaviour(behaviour, keys=world.keys["R0"], config=world.config,
                                                  rng=random.Random(seed)), behaviour)
    world.start(TransferWorkload(), PER_CLIENT)
    assert world.sim.run_until(world.done, 120_000), f"seed={seed} {behaviour}: not finished"
    return world.sim.now_ms, world


@functools.lru_cache(maxsize=None)
def fault_free_ms(seed: int) -> int:
    return run_transfers(seed, None)[0]


@pytest.mark.parametrize("behaviour", ["corrupt-auth", "flood"])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_primary_whose_channel_carries_forgeries_or_garbage_is_replaced_and_throughput_holds(seed, behaviour):
    faulty_ms, world = run_transfers(seed, behaviour)
    context = f"seed={seed} {behaviour}: {faulty_ms} virtual ms against {fault_free_ms(seed)} fault-free"
    assert not world.violations(complete=False), context
    assert fault_free_ms(seed) / faulty_ms >= 0.7, context  # the target for a Byzantine primary
    causes = [world.sim.node(r).status()["view_change_causes"] for r in ("R1", "R2", "R3")]
    assert sum(c.get("refused-primary", 0) for c in causes) >= 2, (context, causes)  # f+1 saw it
    print(context)


def _forged_in_the_primarys_name(h: Harness) -> bytes:
    env = decode(seal(h.keys["R0"], PrePrepare(0, 1, NULL_DIGEST, (), ())), Envelope)
    return encode(Envelope(env.sender, env.body, bytes([env.auth[0] ^ 1]) + env.auth[1:]))


def test_a_forgery_in_the_primarys_name_handed_over_by_another_replica_changes_no_view():
    h = Harness(4)
    r1 = h.replica("R1")
    r1.receive("R3", _forged_in_the_primarys_name(h))  # R3 could have flipped that bit itself
    r1.receive("R3", b"garbage")
    assert not r1.view_changing and r1.status()["rejected"] == {"R3": 2}
    r1.receive("R0", _forged_in_the_primarys_name(h))  # on the primary's own channel: its doing
    assert r1.view_changing and r1.status()["view_change_causes"] == {"refused-primary": 1}
    h.replica("R2").receive("R0", b"garbage")
    assert h.replica("R2").view_changing
