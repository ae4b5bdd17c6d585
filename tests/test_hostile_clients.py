"""Hostile clients in the simulator: replays, forged authenticators, impersonation, oversized
transactions, unknown participants and operations, floods; and per-client permissions.

Each attack runs next to four honest closed-loop bank clients (``dtm_ray.sim.hostile``); every
hostile message must be caught (rejected, rate-limited, or, for a replay, not executed again),
the honest clients' committed transactions per virtual second must stay within
``THROUGHPUT_BOUND`` of the same run without the attacker, and the run must pass the agreement,
atomicity and bank checks once the load stops. The figures table of the hardening note comes
from ``python -m dtm_ray.sim.hostile``.

A refused request (policy, unknown participant or op, oversized) is answered: every correct
replica sends the App's refusal result (rate-limited per client), and the client accepts it on
f+1 matching replies, like any result, so one faulty replica cannot make it give up.

Negative controls: ``test_negative_control_without_the_per_client_limit_the_flood_is_not_limited``
(MAX_PENDING_PER_CLIENT lifted), ``test_negative_control_without_a_policy_the_same_put_commits``,
``test_negative_control_without_refusal_replies_the_refused_client_hears_nothing`` and
``test_negative_control_without_the_refusal_limit_every_refused_copy_is_answered``.
"""

from __future__ import annotations

import pytest

from dtm_ray.crypto import seal_mac
from dtm_ray.pbft import intake
from dtm_ray.pbft.messages import Reply
from dtm_ray.sim.hostile import (ATTACK_START_MS, CLIENT_ATTACKS, client_request, executions, hostile_world,
                                 rejections, run_client_attack)
from dtm_ray.sim.txn_world import TxnWorld
from dtm_ray.txn.config import ClientPolicy
from dtm_ray.txn.events import Applied
from dtm_ray.txn.ops import Op, TxnResult, txn_id_of

SEED = 1
THROUGHPUT_BOUND = 0.75  # honest throughput under attack >= 75% of the baseline (measured: >= 100%)

_BASELINE: list[float] = []


def baseline() -> float:
    if not _BASELINE:
        _BASELINE.append(run_client_attack(None, SEED)[2])
    return _BASELINE[0]


def settle(world: TxnWorld) -> None:
    """Stop the honest load and let every transaction finish and every decision land."""
    for c in world.to_submit:
        world.to_submit[c] = 0
    assert world.sim.run_until(lambda: world.done() and world.quiescent(), 10_000), world.sim.journal[-5:]


@pytest.mark.parametrize("name", list(CLIENT_ATTACKS))
def test_a_hostile_client_is_caught_and_honest_clients_keep_their_throughput(name):
    world, attack, tps = run_client_attack(name, SEED)
    detected = attack.detected(world)
    context = f"seed={SEED} attack={name} tried={attack.tried} detected={detected} notes={attack.notes}"
    if name == "request-flood":  # valid requests: some are served, the excess is rate-limited
        assert detected > attack.tried // 3, context
        assert attack.notes["executed"] + detected >= attack.tried // 2, context
    else:
        assert detected == attack.tried, context
    assert tps >= THROUGHPUT_BOUND * baseline(), f"{context}: honest {tps:.1f} tx/s vs {baseline():.1f}"
    settle(world)
    assert not world.violations(), (context, world.violations())


def test_replays_are_answered_from_the_cache_and_never_executed_twice():
    world, attack, _ = run_client_attack("replay", SEED)
    attack.detected(world)
    assert attack.notes["distinct_requests"] == 2 and attack.notes["executions"] == 2, attack.notes
    assert attack.notes["mallory"] == 2, attack.notes  # two transactions, each applied once


def test_an_impersonated_client_keeps_committing_under_its_own_name():
    world, attack, _ = run_client_attack("impersonation", SEED)
    victim = world.clients[0]
    later = [e for e in world.history.values()
             if e.client == victim and e.start_ms > ATTACK_START_MS + 200 and e.result is not None]
    assert later and all(e.result.committed or e.result.reason for e in later)
    assert sum(1 for e in later if e.result.committed) >= 3
    assert world.sim.node("db-0").state().get("mallory") is None  # not one forged op applied


def test_negative_control_without_the_per_client_limit_the_flood_is_not_limited(monkeypatch):
    monkeypatch.setattr(intake, "MAX_PENDING_PER_CLIENT", 10**9)
    world, attack, _ = run_client_attack("request-flood", SEED, count=150)
    assert attack.detected(world) == 0  # the assertion of the flood test above would fail


# ---------------------------------------------------------------------------------------------
# Permissions


def _policy_world(policies: dict | None):
    world, honest, hostile = hostile_world(SEED, txn={"policies": policies} if policies else None)
    world.sim.run_for(ATTACK_START_MS)
    return world, hostile


def _submit_and_run(world: TxnWorld, client: str, ops: list[Op], ms: int = 1_000) -> int:
    rid = world.sim.invoke(client, lambda node: node.submit(ops))
    world.sim.run_for(ms)
    return rid


def _results(world: TxnWorld, client: str) -> list[TxnResult]:
    return [o.output for o in world.sim.outputs if o.party == client and isinstance(o.output, TxnResult)]


def _touched(world: TxnWorld, txn_id: str) -> set[str]:
    """Participants that applied ``txn_id`` or hold it prepared."""
    applied = {o.output.participant for o in world.sim.outputs
               if isinstance(o.output, Applied) and o.output.txn_id == txn_id}
    prepared = {p for p in world.participants
                if any(r.txn_id == txn_id for r in world.sim.node(p)._records.values())}
    return applied | prepared


def test_a_denied_transaction_is_refused_by_every_replica_with_its_reason_and_touches_no_participant():
    policy = {"c4": ClientPolicy(participants=frozenset({"db-0"}), ops=frozenset({"get"}))}
    world, hostile = _policy_world(policy)
    allowed = _submit_and_run(world, hostile, [Op.get("db-0", "acct:0")])
    assert [r.committed for r in _results(world, hostile)] == [True]
    denied = _submit_and_run(world, hostile, [Op.put("db-1", "acct:0", 10**6)])
    txn_id = f"{hostile}:{denied}"
    refusal = _results(world, hostile)[-1]
    assert (refusal.txn_id, refusal.committed) == (txn_id, False)
    assert "not permitted to touch db-1" in refusal.reason
    # the client asked f+1 replicas first; their f+1 matching refusals are all it needed
    refusers = [r for r in world.replicas if rejections(world, r, "not permitted to touch db-1")]
    assert len(refusers) >= world.config.f + 1, refusers
    for r in world.replicas:
        assert txn_id not in world.sim.node(r).app._pending
    assert not _touched(world, txn_id)
    assert allowed != denied
    settle_others(world, hostile)
    assert not world.violations(), world.violations()


def settle_others(world: TxnWorld, refused_client: str) -> None:
    """Settle the honest load (the refused client is not part of ``world.done()``)."""
    for c in world.to_submit:
        world.to_submit[c] = 0
    settled = world.sim.run_until(lambda: world.done() and world.quiescent(), 10_000)
    assert settled, f"seed={SEED}: the honest load did not settle: {world.sim.journal[-5:]}"


def test_a_policy_denies_an_op_kind_on_a_permitted_participant():
    world, hostile = _policy_world({"c4": ClientPolicy(participants=frozenset({"db-0"}), ops=frozenset({"get"}))})
    denied = _submit_and_run(world, hostile, [Op.add("db-0", "acct:0", 5)])
    assert rejections(world, "R0", "not permitted to add") >= 1
    assert not _touched(world, f"{hostile}:{denied}")


def test_negative_control_without_a_policy_the_same_put_commits():
    world, hostile = _policy_world(None)
    rid = _submit_and_run(world, hostile, [Op.put("db-1", "mallory", 1)])
    assert [r.committed for r in _results(world, hostile)] == [True]
    assert _touched(world, f"{hostile}:{rid}") == {"db-1"}


# ---------------------------------------------------------------------------------------------
# A refused request is answered (docs/threat-model.md, hardening finding 1)


def test_a_refused_request_gets_an_aborted_result_with_its_reason_and_the_next_one_proceeds():
    """A request every correct replica refuses must reach the client as an aborted TxnResult with
    the reason, not as silence and endless retries that hold its later requests back."""
    world, hostile = _policy_world({"c4": ClientPolicy(participants=frozenset({"db-0"}))})
    refused = _submit_and_run(world, hostile, [Op.put("db-1", "k", 1)])
    results = _results(world, hostile)
    assert len(results) == 1, f"seed={SEED}: {results}"
    assert results[0].txn_id == txn_id_of(hostile, refused) and not results[0].committed
    assert "not permitted to touch db-1" in results[0].reason
    _submit_and_run(world, hostile, [Op.get("db-0", "acct:0")])  # not queued behind the refused one
    assert [r.committed for r in _results(world, hostile)] == [False, True], f"seed={SEED}"


def test_negative_control_without_refusal_replies_the_refused_client_hears_nothing(monkeypatch):
    class NeverAllow:
        def __init__(self, *args, **kwargs) -> None: ...

        def allow(self, key, now_ms, cost=1) -> bool:
            return False

    monkeypatch.setattr(intake, "TokenBucket", NeverAllow)
    world, hostile = _policy_world({"c4": ClientPolicy(participants=frozenset({"db-0"}))})
    _submit_and_run(world, hostile, [Op.put("db-1", "k", 1)])
    assert _results(world, hostile) == []  # the assertion of the test above would fail
    assert world.sim.node(hostile).outstanding == 1  # still retrying


def test_one_faulty_replicas_refusal_does_not_make_a_client_give_up():
    """A refusal is a reply: the client needs f+1 matching ones. R3 alone (Byzantine, with its own
    genuine MAC key) tells an honest client its transaction is refused: the client ignores it
    and gets the real outcome."""
    world, honest, _ = hostile_world(SEED)
    world.sim.run_for(ATTACK_START_MS)
    victim = honest[0]
    forged = "invalid request: refused by R3 alone"

    def lie(node) -> int:
        request_id = node.core._current[0]
        refusal = world.sim.node("R3").app.refusal_result(victim, request_id, forged)
        node.receive("R3", seal_mac(world.keys["R3"], victim, Reply(0, victim, request_id, refusal)))
        return request_id

    request_id = world.sim.invoke(victim, lie)
    world.sim.run_for(1_000)
    mine = [r for r in _results(world, victim) if r.txn_id == txn_id_of(victim, request_id)]
    assert len(mine) == 1 and mine[0].reason != forged, f"seed={SEED}: {mine}"


def _refused_copies(world, hostile: str, count: int) -> int:
    """R1 receives ``count`` refused requests of ``hostile`` at one instant: replies it sends back."""
    replica = world.sim.node("R1")
    replica.take_ready()
    for i in range(count):
        replica.receive(hostile, client_request(world.keys[hostile], world.config, 100 + i,
                                                [Op.put("db-1", "k", i)]))
    ready = replica.take_ready()
    assert rejections_in(ready, "not permitted to touch db-1") == count
    return sum(1 for dest, _ in ready.send_now + ready.send_after_persist if dest == hostile)


def rejections_in(ready, marker: str) -> int:
    return sum(1 for o in ready.outputs if marker in getattr(o, "reason", ""))


def test_refusal_replies_are_rate_limited_per_client():
    """A client flooding refused requests gets at most the bucket's burst of answers (then its
    rate): refusals cannot be turned into an amplifier; all of them are still counted."""
    world, hostile = _policy_world({"c4": ClientPolicy(participants=frozenset({"db-0"}))})
    assert _refused_copies(world, hostile, 200) == intake.REFUSAL_BURST


def test_negative_control_without_the_refusal_limit_every_refused_copy_is_answered(monkeypatch):
    monkeypatch.setattr(intake, "REFUSAL_BURST", 10**6)
    world, hostile = _policy_world({"c4": ClientPolicy(participants=frozenset({"db-0"}))})
    assert _refused_copies(world, hostile, 200) == 200


@pytest.mark.parametrize("impostor", ["R3", "db-0"])
def test_only_declared_clients_submit_a_replica_or_participant_is_refused(impostor):
    """A replica and a participant hold keys the replicas verify; signing a valid request as
    themselves (sender = client field) must still be refused, counted and answered like any
    refusal, while a declared client's transaction commits."""
    world, hostile = _policy_world(None)
    ops = [Op.add("db-1", "acct:1", 10**6)]
    payload = client_request(world.keys[impostor], world.config, 1, ops)
    for r in world.replicas:
        if r != impostor:
            world.sim.inject(impostor, r, payload)
    world.sim.run_for(1_000)
    context = f"seed={SEED} impostor={impostor}"
    refusers = [r for r in world.replicas if rejections(world, r, f"{impostor!r} is not a declared client")]
    assert len(refusers) >= world.config.quorum - (impostor in world.replicas), (context, refusers)
    for r in world.replicas:
        assert not executions(world, r, impostor), context
    rid = _submit_and_run(world, hostile, [Op.get("db-1", "acct:1")])  # a declared client is admitted
    assert [r.committed for r in _results(world, hostile) if r.txn_id == f"{hostile}:{rid}"] == [True], context
    settle(world)
    assert not world.violations(), world.violations()
