"""Multi-node: a ``ray.cluster_utils.Cluster`` of three nodes on this machine. Replicas are spread
across the nodes; removing a node (and the actors on it) keeps the DTM committing: Ray restarts
the lost actors on the surviving nodes, where they recover (from disk here: one machine)."""

from __future__ import annotations

import collections

import pytest

import dtm_ray
from dtm_ray import ClusterConfig
from tests.ray_helpers import bank_accounts, bank_load, bank_setup, check_bank_run, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]  # 3 Ray nodes start slowly on a busy machine


def test_replicas_spread_and_a_node_removal_keeps_committing(multinode_ray, tmp_path):
    ray_cluster, workers = multinode_ray
    cfg = ClusterConfig(f=1, data_dir=str(tmp_path / "data"), log_level="WARNING", placement="spread",
                        view_change_timeout_ms=400)
    with dtm_ray.start(cfg) as cluster:
        nodes = {r["id"]: r["node"] for r in cluster.status()["replicas"]}
        per_node = collections.Counter(nodes.values())
        assert len(per_node) == 3, f"replicas not spread over the 3 nodes: {nodes}"
        accounts = bank_accounts(cluster, per_participant=2)
        total = bank_setup(cluster, accounts)

        # participants are pinned beside the driver (their data lives there)
        home = {p["node"] for p in cluster.status()["participants"].values()}
        assert len(home) == 1
        # remove a worker node that hosts at most f replicas and no participant (the head runs
        # the GCS; the participants' node holds their data)
        candidates = [w for w in workers if w.node_id not in home]
        victim = min(candidates, key=lambda w: per_node.get(w.node_id, 0))
        assert per_node.get(victim.node_id, 0) <= cfg.f
        ray_cluster.remove_node(victim)
        records = bank_load(cluster, accounts, ["alice", "bob"], count=5, seed=31, timeout_s=30)
        assert sum(r["status"] == "ok" for r in records) >= 5
        check_bank_run(cluster, accounts, total, records)
        status = wait_until(lambda: (lambda s: s if all(r["alive"] for r in s["replicas"]) else None)(
            cluster.status()), timeout_s=60, what="every replica alive again")
        assert victim.node_id not in {r["node"] for r in status["replicas"]}
        if per_node.get(victim.node_id):
            assert status["chaos"]["moved"], status["chaos"]  # the supervisor re-created them
