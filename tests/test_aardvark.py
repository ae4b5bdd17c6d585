"""The Aardvark MAC attack (NSDI'09) and its defence (``dtm_ray.pbft.authdefence``), in the
simulator, over several seeds.

- A faulty client sends requests whose authenticator verifies at the primary only: it costs the
  attacker its own requests and at most one view change; every correct replica then refuses its
  MAC-authenticated requests, holds the proof as evidence against it, and the honest clients keep
  >= 75 % of their throughput over the attack window.
- A faulty primary forges requests in a correct client's name (a MAC good at itself only): the
  client is refused its MACs, switches to signing and keeps committing.
- A single faulty replica complaining about every request it sees changes nothing.

Negative controls (each test below fails without the defence): see the ``negative control``
tests at the end, which switch the defence off (``authdefence.DEFENCE = False``).
"""

from __future__ import annotations

import random

import pytest

from dtm_ray.crypto import SIG_LEN, Envelope
from dtm_ray.pbft import authdefence
from dtm_ray.pbft.events import Evidence
from dtm_ray.pbft.messages import AuthComplaint, seal
from dtm_ray.sim.hostile import (ATTACK_END_MS, ATTACK_START_MS, executions, honest_throughput,
                                 hostile_world, inconsistent_request, run_client_attack, view_changes)
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode

SEEDS = (1, 2, 3)
HMAC = {"pbft": {"auth_scheme": "hmac"}}
THROUGHPUT_BOUND = 0.75


def evidence_against(world, accused: str, kind: str) -> list[Evidence]:
    return [o.output for o in world.sim.outputs
            if isinstance(o.output, Evidence) and o.output.accused == accused and o.output.kind == kind]


def refused_everywhere(world, client: str) -> bool:
    return all(client in getattr(world.sim.node(r), "mac_refused", ()) for r in world.replicas)


def most_view_changes(world) -> int:
    return max(view_changes(world, r, ATTACK_START_MS) for r in world.replicas)


def aardvark_run(seed: int):
    _, _, base = run_client_attack(None, seed, world_kwargs=HMAC)
    world, attack, tps = run_client_attack("inconsistent-auth", seed, world_kwargs=HMAC)
    return world, attack, tps, base


@pytest.mark.parametrize("seed", SEEDS)
def test_the_aardvark_attack_costs_the_attacker_its_requests_and_at_most_one_view_change(seed):
    world, attack, tps, base = aardvark_run(seed)
    hostile = world.clients[-1]
    attack.detected(world)
    context = f"seed={seed} honest {tps:.1f} tx/s vs baseline {base:.1f}, notes={attack.notes}"
    assert tps >= THROUGHPUT_BOUND * base, context
    assert most_view_changes(world) <= 1, context
    assert attack.notes["executed"] == 0, context
    assert refused_everywhere(world, hostile), context
    assert evidence_against(world, hostile, "inconsistent-authenticator"), context
    assert world.sim.node("R1").status()["evidence"].get(hostile), context


def test_the_refusal_survives_a_restart():
    """Its proof is persisted as evidence: a restarted replica still refuses the client's MACs."""
    world, attack, _ = run_client_attack("inconsistent-auth", 1, world_kwargs=HMAC)
    hostile = world.clients[-1]
    world.sim.crash("R2")
    world.sim.restart("R2")
    assert hostile in world.sim.node("R2").mac_refused


@pytest.mark.parametrize("seed", SEEDS)
def test_an_authenticator_good_at_the_primary_and_f_backups_causes_no_stall(seed):
    """PBFT's rule: f+1 replicas vouch for the request (the primary's PRE-PREPARE and f PREPAREs),
    so a backup that cannot check its own MAC still prepares: no view change. (The two backups
    that could not check it still complain, and rightly refuse the client's MACs.)"""
    world, attack, tps = run_client_attack("inconsistent-auth", seed, world_kwargs=HMAC, good_at=("R0", "R1"))
    hostile = world.clients[-1]
    attack.detected(world)
    assert most_view_changes(world) == 0, attack.notes
    assert attack.notes["executed"] > 0, attack.notes  # its requests are genuine: they run


def forge_in_the_name_of(world, victim: str, count: int, rng: random.Random) -> None:
    """The primary R0 (faulty) forges requests of ``victim`` whose MAC verifies at R0 only: R0
    holds its own pairwise key with the victim, nothing more. It feeds them to itself, as if
    received, so its PRE-PREPAREs carry them."""
    keys, cfg = world.keys["R0"], world.config
    for i in range(count):
        payload = inconsistent_request(keys, cfg, 10**6 + i, [Op.add("db-2", "forged", 1)], ("R0",), rng,
                                       client=victim)
        world.sim.inject(victim, "R0", payload, delay_ms=i * 10)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_faulty_primary_cannot_frame_a_correct_client(seed):
    world, honest, _ = hostile_world(seed, **HMAC)
    victim = honest[1]
    world.sim.schedule(ATTACK_START_MS, lambda sim: forge_in_the_name_of(world, victim, 5, random.Random(seed)))
    world.sim.run_for(ATTACK_END_MS)
    context = f"seed={seed}"
    assert refused_everywhere(world, victim), context  # the proof is "victim or R0": MACs refused
    assert not any(rid >= 10**6 for r in world.replicas for rid in executions(world, r, victim)), context
    late = [e for e in world.history.values() if e.client == victim and e.start_ms >= ATTACK_START_MS + 300
            and e.result is not None and e.result.committed]
    assert len(late) >= 5, f"{context}: the victim committed {len(late)} after the forgery"
    assert world.sim.node(victim).core.signing, context
    sealed = world.sim.node(victim).core._current
    if sealed is not None:
        assert len(decode(sealed[1], Envelope).auth) == SIG_LEN, context


@pytest.mark.parametrize("seed", SEEDS)
def test_one_faulty_replica_complaining_changes_nothing(seed):
    world, honest, _ = hostile_world(seed, **HMAC)
    world.sim.schedule(ATTACK_START_MS, lambda sim: complain_about_everything(world, "R3", honest))
    world.sim.run_for(ATTACK_END_MS)
    assert most_view_changes(world) == 0
    for c in honest:
        assert not any(c in getattr(world.sim.node(r), "mac_refused", ()) for r in ("R0", "R1", "R2"))
        assert not evidence_against(world, c, "inconsistent-authenticator")
        assert not world.sim.node(c).core.signing


def complain_about_everything(world, liar: str, clients, period_ms: int = 20) -> None:
    """The faulty replica ``liar`` signs an AuthComplaint about every request of ``clients`` in
    every PRE-PREPARE it holds, to every replica, over and over (its own key, nothing more)."""
    keys = world.keys[liar]
    said: set[bytes] = set()

    def fire(sim) -> None:
        if sim.now_ms >= ATTACK_END_MS:
            return
        for slot in list(sim.node(liar).log.slots.values()):
            if slot.pp is None:
                continue
            for raw in slot.pp.requests:
                if raw not in said and decode(raw, Envelope).sender in clients:
                    said.add(raw)
                    complaint = seal(keys, AuthComplaint(slot.pp.view, slot.seq, raw))
                    for r in world.replicas:
                        if r != liar:
                            sim.inject(liar, r, complaint)
        sim.schedule(sim.now_ms + period_ms, fire)

    world.sim.schedule(world.sim.now_ms, fire)
    world.sim.note(f"{liar} complains about every request of {sorted(clients)}")


# ---------------------------------------------------------------------------------------------
# Negative controls: each test above goes red without the part of the defence it checks


def test_negative_control_without_the_defence_the_attack_costs_honest_clients(monkeypatch):
    monkeypatch.setattr(authdefence, "DEFENCE", False)  # today's code: the batch is dropped, the slot stalls
    world, attack, tps, base = aardvark_run(1)
    assert tps < THROUGHPUT_BOUND * base, f"honest {tps:.1f} vs {base:.1f}"  # measured: 24.7 vs 34.7
    assert not refused_everywhere(world, world.clients[-1])


def test_negative_control_without_vouchers_a_good_authenticator_at_f_backups_changes_the_view(monkeypatch):
    monkeypatch.setattr(authdefence.AuthDefence, "_vouchers", lambda self, slot, pp: 0)
    world, attack, tps = run_client_attack("inconsistent-auth", 1, world_kwargs=HMAC, good_at=("R0", "R1"))
    assert most_view_changes(world) >= 1


def test_negative_control_refusing_every_request_of_a_framed_client_blocks_it(monkeypatch):
    """A cruder consequence (refuse the client, not its MACs) would let a faulty primary block a
    correct client: the framing test above catches it."""
    monkeypatch.setattr(authdefence.AuthDefence, "_mac_refused", lambda self, client, env: client in self.mac_refused)
    world, honest, _ = hostile_world(1, **HMAC)
    victim = honest[1]
    world.sim.schedule(ATTACK_START_MS, lambda sim: forge_in_the_name_of(world, victim, 5, random.Random(1)))
    world.sim.run_for(ATTACK_END_MS)
    late = [e for e in world.history.values() if e.client == victim and e.start_ms >= ATTACK_START_MS + 300
            and e.result is not None and e.result.committed]
    assert len(late) < 5, len(late)


def test_negative_control_one_complaint_enough_lets_one_faulty_replica_refuse_clients(monkeypatch):
    monkeypatch.setattr(authdefence.AuthDefence, "_complaints_needed", lambda self: 1)
    world, honest, _ = hostile_world(1, **HMAC)
    world.sim.schedule(ATTACK_START_MS, lambda sim: complain_about_everything(world, "R3", honest))
    world.sim.run_for(ATTACK_END_MS)
    assert any(c in world.sim.node("R0").mac_refused for c in honest)


def fabricated_complaints(world, liar: str, count: int) -> list[bytes]:
    """Signed complaints of ``liar`` about requests it made up (MAC-shaped authenticators)."""
    keys, cfg = world.keys[liar], world.config
    rng = random.Random(5)
    return [seal(keys, AuthComplaint(0, 1, inconsistent_request(keys, cfg, i, [Op.put("db-0", "k", i)], (), rng,
                                                                 client="c0")))
            for i in range(count)]


def test_a_faulty_replica_fills_only_its_own_share_of_the_complaint_table():
    world, _, _ = hostile_world(1, **HMAC)
    world.sim.run_for(ATTACK_START_MS)
    replica = world.sim.node("R0")
    for payload in fabricated_complaints(world, "R3", 3 * authdefence.MAX_OPEN_COMPLAINTS):
        replica.receive("R3", payload)
    assert replica._open["R3"] == authdefence.MAX_OPEN_COMPLAINTS
    assert len(replica._complaints) == authdefence.MAX_OPEN_COMPLAINTS and not replica.mac_refused


def test_negative_control_without_the_per_replica_bound_the_complaint_table_grows(monkeypatch):
    monkeypatch.setattr(authdefence, "MAX_OPEN_COMPLAINTS", 10**9)
    world, _, _ = hostile_world(1, **HMAC)
    world.sim.run_for(ATTACK_START_MS)
    replica = world.sim.node("R0")
    for payload in fabricated_complaints(world, "R3", 3 * 128):
        replica.receive("R3", payload)
    assert len(replica._complaints) == 3 * 128
