"""Small pure pieces of the transaction layer: lock table, f+1 claims, data engines, config."""

from __future__ import annotations

import pytest

from dtm_ray.errors import ConfigError
from dtm_ray.storage import MemoryStorage
from dtm_ray.txn.config import ClientPolicy, TxnConfig
from dtm_ray.txn.engine import KvData, QueueData
from dtm_ray.txn.locks import LockTable
from dtm_ray.txn.ops import Op
from dtm_ray.txn.quorum import Claims


def test_locks_are_granted_in_sequence_order_and_disjoint_keys_do_not_wait():
    locks = LockTable()
    locks.enqueue(0, ("a",))
    locks.enqueue(1, ("a", "b"))
    locks.enqueue(2, ("c",))
    locks.enqueue(3, ("b",))
    assert [locks.granted(p) for p in range(4)] == [True, False, True, False]
    assert locks.release(0) == [1]
    assert locks.granted(1) and not locks.granted(3)
    assert locks.release(1) == [3]
    assert locks.granted(3) and locks.locked_keys() == 2


def test_releasing_a_waiting_transaction_promotes_nobody_ahead_of_the_holder():
    locks = LockTable()
    for p, keys in enumerate((("a",), ("a",), ("a",))):
        locks.enqueue(p, keys)
    assert locks.release(1) == []  # aborted while waiting
    assert locks.release(0) == [2] and locks.granted(2)


def test_claims_need_threshold_distinct_matching_replicas():
    claims = Claims(2)
    assert claims.add(5, "R0", b"x", "X") is None
    assert claims.add(5, "R0", b"x", "X") is None  # the same replica twice counts once
    assert claims.add(5, "R1", b"y", "Y") is None
    assert claims.add(5, "R1", b"x", "X") == "X"  # its latest claim replaces the earlier one
    claims.drop(5)
    assert claims.winner(5) is None and len(claims) == 0


def test_kv_engine_reads_its_own_writes_and_fails_guards_with_reasons():
    data = KvData("db-0", MemoryStorage())
    data.data = {"n": 5, "l": [1], "s": "x"}
    out = data.execute((Op.add("db-0", "n", 2), Op.get("db-0", "n"), Op.append("db-0", "l", 2),
                        Op.delete("db-0", "s"), Op.get("db-0", "s")))
    assert out.yes and out.reads == [7, 7, None, None, None]
    assert data.data == {"n": 5, "l": [1], "s": "x"}  # nothing changes before COMMIT
    assert data.execute((Op.add("db-0", "n", 1, max=5),)).reason == "guard failed: db-0 n would go above max 5"
    assert data.execute((Op.add("db-0", "s", 1),)).reason == "type error: db-0 s is not an integer"
    assert data.execute((Op.append("db-0", "n", 1),)).reason == "type error: db-0 n is not a list"


def test_engines_survive_a_restart_from_their_writes():
    storage = MemoryStorage()
    kv = KvData("db-0", storage)
    out = kv.execute((Op.put("db-0", "k", {"a": [1]}), Op.put("db-0", "gone", 1), Op.delete("db-0", "gone")))
    storage.write(kv.apply(out.writes, out.dequeues, out.enqueues))
    assert KvData("db-0", storage).state() == {"k": {"a": [1]}}
    qs = MemoryStorage()
    queue = QueueData("mq", qs)
    for ops in ((Op.enqueue("mq", 1), Op.enqueue("mq", 2)), (Op.dequeue("mq"), Op.enqueue("mq", 3))):
        out = queue.execute(ops)
        qs.write(queue.apply(out.writes, out.dequeues, out.enqueues))
    assert QueueData("mq", qs).state() == [2, 3] and QueueData("mq", qs).next_index == 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(f=1, replicas=("R0", "R1", "R2")), "cannot tolerate"),
    (dict(participants={"db": "sql"}), "must be one of"),
    (dict(participants={"R0": "kv"}), "name of a replica"),
    (dict(participants={}), "at least one"),
    (dict(vote_timeout_ms=0), "vote_timeout_ms"),
    (dict(policies={"c": ClientPolicy(participants=frozenset({"nope"}))}), "unknown participants"),
])
def test_config_errors_name_the_parameter(kwargs, message):
    base = dict(replicas=("R0", "R1", "R2", "R3"), f=1, participants={"db": "kv"})
    with pytest.raises(ConfigError, match=message):
        TxnConfig(**{**base, **kwargs})


def test_client_policy_refuses_what_it_does_not_allow():
    policy = ClientPolicy(participants=frozenset({"db-0"}), ops=frozenset({"get"}))
    assert policy.refusal("db-1", "get") == "not permitted to touch db-1"
    assert policy.refusal("db-0", "put") == "not permitted to put"
    assert policy.refusal("db-0", "get") is None
