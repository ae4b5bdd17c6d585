"""The load generator's pure parts: workloads, logical-client routing names, the multiplexing core
(each logical client is a real TxnClient with its own keys and request ids)."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings, strategies as st

from actors.loadgen import MuxCore, bank_accounts_in, check_read_share, hot_bank_step, workload_step
from actors.loadgen_actor import LoadGenActor, client_names, client_ring
from actors.names import actor_name, actor_party
from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError
from dtm_ray.crypto import KeyRing, generate_keys, seal_mac
from dtm_ray.pbft.events import Rejected
from dtm_ray.pbft.messages import Reply
from dtm_ray.txn.client import TxnClient
from dtm_ray.txn.ops import Op, TxnResult
from dtm_ray.wire import encode

ACCOUNTS = [("db-0", f"acct:{i}") for i in range(10)] + [("db-1", f"acct:{i}") for i in range(10)]


def test_logical_clients_live_in_their_generator_actor():
    names = client_names("lg0", 3)
    assert names == ["lg0..c0", "lg0..c1", "lg0..c2"]
    assert {actor_party(n) for n in names} == {"lg0"} and actor_name("lg0..c2") == "dtm:lg0"
    assert actor_party("R0") == "R0" and actor_party("db-0") == "db-0"  # everyone else unchanged
    ClusterConfig(f=1, clients=tuple(names))  # legal client names: they get keys like any client


def test_hot_key_workload_concentrates_on_the_hot_accounts():
    rng = random.Random(3)
    hot = set(ACCOUNTS[:2])
    touched = [tuple(op.participant for op in ops) for kind, ops in
               (hot_bank_step(rng, ACCOUNTS, hot=2, hot_share=0.8, read_share=0.0) for _ in range(400))]
    steps = [hot_bank_step(random.Random(i), ACCOUNTS, read_share=0.0)[1] for i in range(400)]
    share = sum({(o.participant, o.key) for o in ops} <= hot for ops in steps) / len(steps)
    assert 0.7 < share < 0.9, share
    assert all(len(t) == 2 for t in touched)
    with pytest.raises(ValueError, match="unknown workload"):
        workload_step("nope", rng, "c", 0, {})


def test_mux_core_routes_replies_to_the_right_logical_client():
    cfg = ClusterConfig(f=1, clients=tuple(client_names("lg0", 2)))
    rings = generate_keys(list(cfg.parties), seed=5)
    pbft = cfg.pbft_config()
    clients = {c: TxnClient(c, pbft, KeyRing.from_dict(client_ring(rings[c].to_dict(), list(cfg.replicas))))
               for c in cfg.clients}
    mux = MuxCore("lg0", clients, tick_every_ms=20)
    a, b = cfg.clients
    txn = mux.submit(a, [Op.put("db-0", "k", 1)])
    ready = mux.take_ready()
    assert txn == f"{a}:1" and {d for d, _ in ready.send_now} <= set(cfg.replicas) and ready.send_now
    assert not mux.take_ready()  # nothing new: idle clients are not polled
    result = encode(TxnResult(True, "commit", txn, [None], None))
    for r in cfg.replicas[:2]:  # f+1 matching replies, MAC'd to client a
        mux.receive_for(a, r, seal_mac(rings[r], a, Reply(0, a, 1, result)))
        mux.receive_for(b, r, seal_mac(rings[r], b, Reply(0, b, 1, result)))  # b has no such request
    outputs = mux.take_ready().outputs
    assert [o.txn_id for o in outputs if isinstance(o, TxnResult)] == [txn]
    mux.receive_for("lg0..nobody", "R0", b"x")
    mux.receive("R0", b"x")
    assert mux.status()["unroutable"] == 2 and mux.status()["outstanding"] == 0
    # the pruned ring keeps only what a client uses
    ring = client_ring(rings[a].to_dict(), list(cfg.replicas))
    assert set(ring["public_keys"]) == set(cfg.replicas) | {a} and b not in ring["mac_keys"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(0, 10_000), st.integers(1, 20))
def test_a_spread_transfer_touches_exactly_span_participants_and_moves_no_money(span, seed, amount):
    import random

    from actors.loadgen import spread_transfer

    accounts = [(p, f"acct:{i}") for p in ("db-0", "db-1", "db-2") for i in range(3)]
    ops = spread_transfer(random.Random(seed), accounts, span, amount)
    assert len({op.participant for op in ops}) == span
    assert sum(op.value for op in ops) == 0 and ops[0].value == -amount


def test_a_span_beyond_the_participants_is_refused():
    import random

    from actors.loadgen import spread_transfer

    with pytest.raises(ValueError, match="span 3"):
        spread_transfer(random.Random(1), [("db-0", "a"), ("db-1", "b")], 3, 5)


def test_the_bank_opens_in_one_participant_transactions_of_at_most_max_ops_puts():
    from collections import Counter

    from actors.loadgen import BALANCE, bank_setup_ops

    accounts = [(p, f"acct:{i}") for p in ("db-0", "db-1") for i in range(130)]
    op_lists = bank_setup_ops(accounts, max_ops=64)
    assert len(op_lists) == 2 * 3  # 64 + 64 + 2 per participant
    assert all(len(ops) <= 64 and len({op.participant for op in ops}) == 1 for ops in op_lists)
    opened = Counter((op.participant, op.key) for ops in op_lists for op in ops)
    assert opened == Counter(accounts)  # every account exactly once
    assert {(op.kind, op.value) for ops in op_lists for op in ops} == {("put", BALANCE)}


def test_mux_core_ticks_only_clients_with_a_request_outstanding_and_a_late_submit_does_not_retry_at_once():
    cfg = ClusterConfig(f=1, clients=tuple(client_names("lg0", 3)), client_retry_ms=400)
    rings = generate_keys(list(cfg.parties), seed=6)
    pbft = cfg.pbft_config()
    clients = {c: TxnClient(c, pbft, KeyRing.from_dict(client_ring(rings[c].to_dict(), list(cfg.replicas))))
               for c in cfg.clients}
    ticked = []
    for name, client in clients.items():
        original = client.tick
        client.tick = lambda now, name=name, original=original: (ticked.append(name), original(now))
    mux = MuxCore("lg0", clients, tick_every_ms=100)
    a, b, c = cfg.clients
    mux.tick(0)
    assert ticked == []  # nobody has anything outstanding: nothing to time
    mux.tick(10_000)  # a long idle stretch, then a submit: its retry clock starts now
    mux.submit(a, [Op.put("db-0", "k", 1)])
    mux.take_ready()
    ticked.clear()
    mux.tick(10_100)
    assert ticked == [a] and not mux.take_ready().send_now  # ticked, and not resent after 100 ms
    mux.tick(10_500)
    assert len(mux.take_ready().send_now) == len(cfg.replicas)  # after client_retry_ms: to every replica


def test_a_bank_read_is_allowed_only_while_the_whole_bank_fits_in_one_transaction():
    config = ClusterConfig(f=1)  # two kv services
    check_read_share(0.05, len(bank_accounts_in(config, 32)), config.max_ops)  # 64 accounts: fits
    check_read_share(0.0, len(bank_accounts_in(config, 10_000)), config.max_ops)  # no reads: any size
    with pytest.raises(ConfigError, match="20000 accounts"):
        check_read_share(0.05, len(bank_accounts_in(config, 10_000)), config.max_ops)


@pytest.mark.parametrize("last", ["rejected", "unwaited result"])
def test_every_waited_result_of_a_turn_is_handed_over_whatever_else_the_turn_produced(last):
    """A turn's outputs mix results with what nobody waits for: a ``Rejected`` for each forged or
    replayed reply a faulty replica sends, a result whose submission timed out. Ending a turn with
    one of those made the hand-over fail, and the turn's results with it (every client of the
    generator waiting out its timeout under a replaying primary)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        actor = LoadGenActor.__new__(LoadGenActor)  # only its hand-over: no host, no Ray
        waited = {t: loop.create_future() for t in ("lg0..c0:1", "lg0..c1:1")}
        actor._waiting = {t: (loop, fut) for t, fut in waited.items()}
        results = [TxnResult(True, "commit", t, [None], None) for t in waited]
        noise = Rejected("lg0..c0", "R0", "bad authenticator") if last == "rejected" else \
            TxnResult(False, "abort", "lg0..c9:4", [None], "vote timeout")
        actor.on_outputs([results[0], noise, results[1], noise])
        done = await asyncio.wait_for(asyncio.gather(*waited.values()), timeout=5)
        assert done == results

    asyncio.run(scenario())


@pytest.mark.parametrize("workload, params, match", [
    ("bank", {"accounts": 1000}, r"run_load\(accounts=N\)"),
    ("bank", {"hot": 3}, r"\['hot'\] are not parameters of 'bank'"),
    ("bank", {"read_share": 1.5}, "read_share must be a number in"),
    ("bank", {"read_share": "0.1"}, "read_share must be a number in"),
    ("bank", {"span": 3}, r"span must be an integer in 1\.\.2"),
    ("bank", {"span": 0}, r"span must be an integer in 1\.\.2"),
    ("hot-key", {"hot": 1}, "hot must be an integer >= 2"),
    ("hot-key", {"hot_share": -0.1}, "hot_share must be a number in"),
    ("hot-key", {"span": 1}, "are not parameters of 'hot-key'"),
    ("bank", ["read_share"], "params must be a dict"),
])
def test_pool_run_params_are_checked_before_the_run_with_a_config_error(workload, params, match):
    from actors.loadrun import check_params
    from dtm_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        check_params(workload, params, kv_participants=2)


def test_pool_run_params_that_make_sense_pass():
    from actors.loadrun import check_params

    check_params("bank", {}, kv_participants=2)
    check_params("bank", {"read_share": 0, "span": 2}, kv_participants=2)
    check_params("bank", {"span": None}, kv_participants=2)
    check_params("hot-key", {"hot": 4, "hot_share": 1.0, "read_share": 0.05}, kv_participants=2)
