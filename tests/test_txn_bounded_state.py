"""The coordinator's replicated state does not grow with the number of transactions ever decided.

Final transactions (every participant acknowledged) are forgotten by agreement (``Forget``
proposals, see ``dtm_ray.txn.coordinator``); a correct replica accepts only what it knows final.
In the simulator, the checkpointed state (``CoordinatorApp.snapshot``) stays below a bound that
does not depend on the count; and 2,000 closed-loop clients are all answered.

Negative controls (each seen red): with ``_build_forgets`` a no-op (no GC) the snapshot grows
past the bound; accepting a Forget without knowing the transaction final fails the safety test.
"""

from __future__ import annotations

import pytest

from dtm_ray.crypto import open_envelope
from dtm_ray.pbft.app import Verdict
from dtm_ray.sim.txn_fakelog import FakeLog, small_txn_config
from dtm_ray.sim.txn_world import build_txn_world
from dtm_ray.txn.messages import AckBatch, Decide, Forget, TxnRequest
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode, encode

TWO_KV = {"db-0": "kv", "db-1": "kv"}
SEED = 1


class Transfers:
    """Transfers between distinct funded accounts (no lock waits, no aborts)."""

    name = "transfers"

    def __init__(self, accounts: int = 200) -> None:
        self.accounts, self.i = accounts, 0

    def setup(self) -> list[Op]:
        return [Op.put("db-0", f"acct:{i}", 10 ** 9) for i in range(min(self.accounts, 60))]

    def next_ops(self) -> list[Op]:
        self.i += 1
        account = f"acct:{self.i % min(self.accounts, 60)}"
        return [Op.add("db-0", account, -1, min=0), Op.add("db-1", account, 1)]

    def check(self, world) -> list:
        return []


def _world(n: int, clients: int):
    return build_txn_world(SEED, n, clients=clients, participants=dict(TWO_KV),
                           pbft={"batch_size": 100, "batch_wait_ms": 2, "checkpoint_interval": 16,
                                 "watermark_window": 64, "view_change_timeout_ms": 2_000,
                                 "client_retry_ms": 2_000},
                           txn={"vote_timeout_ms": 2_000})


def _run_sampling_state(n: int, clients: int, txns: int) -> tuple[list[int], dict]:
    world = _world(n, clients)
    sizes: list[int] = []

    def sample(sim) -> None:
        sizes.append(max(len(sim.node(r).app.snapshot()) for r in world.replicas))
        sim.schedule(sim.now_ms + 100, sample)

    world.sim.schedule(0, sample)
    world.start(Transfers(), txns // clients)
    assert world.sim.run_until(world.done, 600_000), f"seed={SEED}: {world.unanswered} unanswered"
    assert world.sim.run_until(world.quiescent, 60_000), f"seed={SEED}: decisions not all applied"
    assert not world.violations(), f"seed={SEED}: {world.violations()}"
    status = world.sim.node("R0").app.status()
    assert status["committed"] >= txns, status
    return sizes, status


def test_the_checkpointed_state_stays_bounded_however_many_transactions_were_decided():
    sizes, status = _run_sampling_state(4, 60, 3_000)
    assert max(sizes) < 24_000, (max(sizes), status)  # ~50 bytes per decided txn without GC: > 150 kB
    assert status["forgotten"] >= 0.9 * status["committed"] and status["evicted_unfinal"] == 0, status


@pytest.mark.nightly
def test_twenty_thousand_transactions_leave_a_state_of_the_same_size():
    sizes, status = _run_sampling_state(4, 100, 20_000)
    assert max(sizes) < 24_000, (max(sizes), status)
    assert status["evicted_unfinal"] == 0, status


def test_two_thousand_closed_loop_clients_are_all_answered():
    world = _world(4, 2_000)
    world.start(Transfers(), 1)
    assert world.sim.run_until(world.done, 600_000), f"seed={SEED}: {world.unanswered} unanswered"
    assert world.sim.run_until(world.quiescent, 60_000), f"seed={SEED}: decisions not all applied"
    results = world.results()
    assert len(results) == 2_001 and all(r.committed for r in results.values())
    assert not world.violations(), f"seed={SEED}: {world.violations()}"


# -- the Forget rule, on the synchronous fake log ---------------------------------------------------


def _decided_not_final() -> tuple[FakeLog, str]:
    """A committed transaction whose decision db-1 never acknowledged at R1..R3."""
    log = FakeLog(small_txn_config(participants=TWO_KV))
    log.intercept = lambda sender, dest, payload: (
        [] if sender == "db-1" and dest != "R0" and _is_ack(payload) else [payload])
    txn = log.submit("alice", [Op.add("db-0", "k", 1), Op.add("db-1", "k", 1)])
    log.settle()
    assert log.result(txn).committed
    return log, txn


def _is_ack(payload: bytes) -> bool:
    return isinstance(decode(open_envelope(payload).body), AckBatch)


def test_a_forget_is_accepted_only_by_replicas_that_know_the_transaction_final():
    log, txn = _decided_not_final()
    forget = encode(Forget((txn,)))
    verdicts = {r: app.validate_proposal(forget) for r, app in log.apps.items()}
    assert verdicts == {"R0": Verdict.ACCEPT, "R1": Verdict.WAIT, "R2": Verdict.WAIT, "R3": Verdict.WAIT}
    log.intercept = None
    log.tick(log.config.resend_ms)  # the decision is resent, db-1 acknowledges to everybody now
    log.deliver()
    assert log.order_proposal(forget) == {r: Verdict.ACCEPT for r in log.apps}
    assert all(app.status()["decided_kept"] == 0 for app in log.apps.values())


def test_a_forgotten_transaction_stays_decided():
    """After the Forget: a stale DECIDE for it is a harmless no-op, its request re-executed
    (a replayed log) starts nothing, and a later transaction of the client is not confused."""
    log = FakeLog(small_txn_config(participants=TWO_KV))
    txn = log.submit("alice", [Op.add("db-0", "k", 1), Op.add("db-1", "k", 1)])
    log.settle()
    log.tick(log.config.resend_ms)
    proposals = log.apps["R0"].proposals()
    assert [type(decode(p)) for p in proposals] == [Forget] and log.order_due() == 1
    assert all(app.status()["decided_kept"] == 0 and app.status()["forgotten"] == 1 for app in log.apps.values())
    stale = encode(Decide(txn, False, ()))
    assert log.order_proposal(stale) == {r: Verdict.ACCEPT for r in log.apps}
    for app in log.apps.values():
        assert app.execute(99, "alice", 1, encode(TxnRequest((Op.add("db-0", "k", 5),)))) == []
        assert app.status()["pending"] == 0
    assert log.result(txn).committed and log.state("db-0") == {"k": 1}
    later = log.submit("alice", [Op.add("db-0", "k", 1)])
    log.settle()
    assert log.result(later).committed and log.state("db-0") == {"k": 2}


def test_a_forget_for_a_transaction_not_executed_here_waits():
    log = FakeLog(small_txn_config(participants=TWO_KV))
    assert log.apps["R1"].validate_proposal(encode(Forget(("alice:7",)))) is Verdict.WAIT
    txn = log.submit("alice", [Op.add("db-0", "k", 1)])
    assert log.apps["R1"].validate_proposal(encode(Forget((txn,)))) is Verdict.WAIT  # pending


def test_a_silent_participant_cannot_grow_the_decided_table_past_its_cap():
    """db-1 is silent: transactions touching it abort on the vote timeout and are never final.
    The table stops at ``decided_bytes`` (the oldest go, counted), and db-0's own transactions
    still commit and are forgotten."""
    log = FakeLog(small_txn_config(participants=TWO_KV, decided_bytes=4096))
    log.intercept = lambda sender, dest, payload: [] if "db-1" in (sender, dest) else [payload]
    for i in range(300):
        log.submit("alice", [Op.add("db-0", f"a{i}", 1), Op.add("db-1", f"a{i}", 1)])
    log.settle()
    log.tick(log.config.vote_timeout_ms)
    log.settle()
    app = log.apps["R0"]
    assert app.status()["aborted"] == 300 and app.status()["decided_bytes"] <= 4096
    assert app.status()["evicted_unfinal"] > 0 and len(app._delivery.unacked) <= len(app._decided)
    honest = log.submit("alice", [Op.add("db-0", "b", 1)])
    log.settle()
    assert log.result(honest).committed and log.state("db-0")["b"] == 1
