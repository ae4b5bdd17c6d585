"""Durability: what was acknowledged as committed survives ``shutdown()`` + ``start()`` on the same
``data_dir``, and the recovered cluster keeps committing (clients continue their request ids)."""

from __future__ import annotations

import pytest

import dtm_ray
from dtm_ray import ClusterConfig, Op
from dtm_ray.errors import ConfigError
from tests.ray_helpers import bank_accounts, bank_final, bank_load, bank_setup, check_bank_run

@pytest.mark.ray
@pytest.mark.timeout(180)
def test_committed_transactions_survive_shutdown_and_start(ray_session, tmp_path):
    cfg = ClusterConfig(f=1, data_dir=str(tmp_path / "data"), log_level="WARNING")
    with dtm_ray.start(cfg) as cluster:
        accounts = bank_accounts(cluster, per_participant=2)
        total = bank_setup(cluster, accounts)
        records = bank_load(cluster, accounts, ["alice", "bob"], count=4, seed=21)
        check_bank_run(cluster, accounts, total, records)
        before = bank_final(cluster, accounts)
        queued = cluster.client("alice").submit([Op.enqueue("mq-0", "kept")])
        assert queued.committed
        executed_before = max(r["executed_seq"] for r in cluster.status()["replicas"])

    with dtm_ray.start(cfg) as cluster:  # same data_dir: every actor rebuilds from its RocksDB
        assert bank_final(cluster, accounts) == before
        assert cluster.participant_state("mq-0") == ["kept"]
        assert min(r["executed_seq"] for r in cluster.status()["replicas"]) >= executed_before - 16
        r = cluster.client("alice").submit([Op.dequeue("mq-0")])  # request ids continue: not a replay
        assert r.committed and r.reads == ["kept"], r
        more = bank_load(cluster, accounts, ["alice", "bob"], count=3, seed=22)
        check_bank_run(cluster, accounts, total, more)


def test_a_data_dir_of_another_cluster_is_refused(tmp_path):
    from dtm_ray.api import _load_or_create_keys

    cfg = ClusterConfig(f=1, data_dir=str(tmp_path), participants={"db-0": "kv"}, key_seed=3)
    first = _load_or_create_keys(cfg, str(tmp_path))
    assert _load_or_create_keys(cfg, str(tmp_path)) == first  # reused, not regenerated
    assert (tmp_path / "cluster-keys.msgpack").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="data_dir"):
        _load_or_create_keys(cfg.replace(participants={"db-0": "kv", "db-9": "kv"}), str(tmp_path))
