"""ByzzFuzz-style process faults in the simulator: one faulty replica changes one field of a valid
message it builds, in a few rounds drawn from the seed, and signs or MACs it with its own keys.
Every run checks agreement, atomicity, the bank invariant or serializability, and liveness.

A failure prints the seed and the schedule; replay it with
``DTM_SEED=<seed> python -m pytest tests/test_byzzfuzz.py -k seed_replay``.
"""

from __future__ import annotations

import os
import random

import pytest

from dtm_ray.crypto import generate_keys, seal_signed
from dtm_ray.pbft.messages import PrePrepare, Prepare
from dtm_ray.sim.byzzfuzz import (EVERYONE, KINDS, Fault, Schedule, byzzfuzz, draw_schedule, message_fields,
                                  mutate, run_byzzfuzz)
from dtm_ray.txn.messages import DecisionBatch, DecisionItem
from dtm_ray.txn.participant import Participant
from dtm_ray.wire import decode, encode

SEEDS = 40  # CI; the nightly sweep runs many more
CHUNK = 10
REPLICAS = ("R0", "R1", "R2", "R3")


def _check(seed: int, **kwargs):
    run = run_byzzfuzz(seed, **kwargs)
    assert not run.violations, run.report()
    return run


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds_{s}-{s + CHUNK - 1}")
def test_process_fault_sweep(first):
    mutated = sum(_check(seed).mutated for seed in range(first, first + CHUNK))
    assert mutated > 0  # the schedules did change messages (a sweep that mutates nothing proves nothing)


def test_seed_replay():
    seed = int(os.environ.get("DTM_SEED", "0"))
    run = _check(seed)
    print(run.schedule.describe(), run.mutated)


def test_schedules_are_reproducible_and_distinct():
    schedules = [draw_schedule(s, REPLICAS) for s in range(SEEDS)]
    assert schedules == [draw_schedule(s, REPLICAS) for s in range(SEEDS)]
    assert len({s.describe() for s in schedules}) == SEEDS
    assert {s.faulty for s in schedules} == set(REPLICAS)  # the primary among them
    assert {k for s in schedules for f in s.faults for k in f.kinds} == set(KINDS)


def test_a_mutation_changes_one_message_into_another_well_formed_one():
    rng = random.Random(3)
    pp = PrePrepare(1, 7, b"d" * 32, (b"req-a", b"req-b"), ())
    changed = 0
    for _ in range(200):
        m = mutate(pp, rng)
        assert type(m) is PrePrepare and decode(encode(m)) == m
        changed += m != pp
        assert sum(getattr(m, f) != getattr(pp, f) for f in message_fields(pp)) <= 1  # one field at most
    assert changed >= 150


def test_the_behaviour_reseals_with_the_faulty_replicas_own_key_only_in_scheduled_rounds():
    keys = generate_keys(list(REPLICAS), seed=1)
    schedule = Schedule("R1", (Fault(5, ("Prepare",), ("R2",), 99),))
    behaviour = byzzfuzz(schedule, keys["R1"])
    in_round, other_round = seal_signed(keys["R1"], Prepare(0, 5, b"x" * 32)), seal_signed(keys["R1"], Prepare(0, 6, b"x" * 32))
    assert list(behaviour("R3", in_round)) == [("R3", in_round)]  # not a target
    assert list(behaviour("R2", other_round)) == [("R2", other_round)]  # not the round
    [(dest, sent)] = behaviour("R2", in_round)
    assert dest == "R2" and sent != in_round and behaviour.stats["mutated"] == 1
    env = decode(sent)
    assert env.sender == "R1" and keys["R2"].verify("R1", env.body, env.auth)  # passes authentication
    forwarded = seal_signed(keys["R0"], Prepare(0, 5, b"x" * 32))  # not its own: it cannot re-sign it
    assert list(behaviour("R2", forwarded)) == [("R2", forwarded)]


def test_negative_control_a_participant_trusting_one_replica_is_caught(monkeypatch):
    """With the f+1 rule broken, lies in decision batches must show up as a violation."""
    monkeypatch.setattr(Participant, "decision_quorum", lambda self: 1)
    found = []
    for seed in range(30):
        run = run_byzzfuzz(seed, kinds=("DecisionBatch",), faults=3, rounds=6)
        if run.violations:
            found.append((seed, run.violations[0]))
            break
    assert found, "30 seeds of decision-batch mutations found nothing against a participant that trusts one replica"


@pytest.mark.nightly
@pytest.mark.parametrize("first", range(SEEDS, 20 * SEEDS, 40), ids=lambda s: f"seeds_{s}-{s + 39}")
def test_nightly_process_fault_sweep(first):
    for seed in range(first, first + 40):
        _check(seed)
        _check(seed, n=7, clients=10)
