"""Everything at once: a Byzantine replica, a hostile participant, a hostile client and a fuzzing
sender, next to four honest closed-loop clients, on the bank and on the list-append workloads.

After the attack window the load stops and the run settles; then PBFT agreement, atomicity, the
bank invariant (bank) or strict serializability (Elle, list-append) and liveness must hold, the
honest clients must have committed throughout the attack, and every attacker must have been
caught (evidence or rejections counted against it).
"""

from __future__ import annotations

import random

import pytest

from dtm_ray.faults import make_behaviour
from dtm_ray.sim.hostile import (ATTACK_END_MS, ATTACK_START_MS, CLIENT_ATTACKS, FuzzingSender,
                                 hostile_world, honest_throughput, rejections)

LIAR = "db-2"


def _behaviour(world, party: str, name: str, seed: int):
    return make_behaviour(name, keys=world.keys[party], config=world.config, rng=random.Random(seed))


@pytest.mark.parametrize("workload,replica,attack,seed", [
    ("bank", "R0", "equivocate", 11),
    ("list-append", "R2", "forge-decision", 12),
])
def test_all_attackers_at_once_and_the_checkers_pass(workload, replica, attack, seed):
    world, honest, hostile = hostile_world(seed, workload=workload)
    context = f"seed={seed} workload={workload} byzantine {replica}={attack}"
    world.make_byzantine(replica, _behaviour(world, replica, attack, seed), attack)
    rng = random.Random(seed)
    fuzzer = FuzzingSender("fuzzer", sorted(world.sim.parties), lambda r, dest: r.randbytes(r.randrange(1, 300)),
                           rng, period_ms=2, until_ms=ATTACK_END_MS)
    attacks = []

    def begin(sim) -> None:
        world.make_byzantine(LIAR, _behaviour(world, LIAR, "equivocate-vote", seed), "equivocate-vote")
        for name in ("forged-auth", "impersonation", "request-flood"):
            attacks.append(CLIENT_ATTACKS[name](world, hostile, rng))
        fuzzer.start(sim)

    world.sim.schedule(ATTACK_START_MS, begin)
    world.sim.run_for(ATTACK_END_MS)
    during = honest_throughput(world, honest, ATTACK_START_MS, ATTACK_END_MS)
    assert during > 0, f"{context}: no honest commit during the attack"

    for c in world.to_submit:
        world.to_submit[c] = 0
    # every participant, the liar too: it lies in its votes, but it holds its prepared writes and
    # applies the decision it is sent like any other (its accounts are part of the bank's total)
    settled = world.sim.run_until(lambda: world.done() and all(
        world.sim.node(p).status()["prepared"] == 0 for p in world.participants), 15_000)
    assert settled, f"{context}: did not settle; {world.sim.journal[-5:]}"
    violations = world.violations()
    assert not violations, f"{context}: {violations}"

    assert sum(fuzzer.sent.values()) >= 700
    for party in world.replicas:
        if party != replica:
            assert world.sim.node(party).status()["rejected"].get("fuzzer", 0) == fuzzer.sent.get(party, 0)
    forged, impersonating = (a.tried for a in attacks[:2])  # refused as not authentic at R1
    assert rejections(world, "R1", "bad authenticator", ATTACK_START_MS) == forged, context
    assert rejections(world, "R1", "bad signature", ATTACK_START_MS) == impersonating, context
    assert rejections(world, "R1", "too many pending", ATTACK_START_MS) > 0
    evidence = {r: world.sim.node(r).status()["evidence"] for r in world.replicas if r != replica}
    print(context, "honest tx/s during the attack:", during, "evidence:", evidence)
    if attack == "equivocate":
        assert any(e.get(replica) for e in evidence.values()), (context, evidence)
    if attack == "forge-decision":  # its lies lose to f+1 correct decisions, and are counted
        lied = {p: world.sim.node(p).status()["contradicted_by"] for p in world.participants}
        assert any(c.get(replica) for c in lied.values()), (context, lied)
        assert not any(r in c for c in lied.values() for r in world.replicas if r != replica), (context, lied)
    # the lying participant is convicted by its own signed votes (two vote batches that disagree)
    assert any(e.get(LIAR) for e in evidence.values()), (context, evidence)
