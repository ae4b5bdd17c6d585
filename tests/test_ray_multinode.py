"""Multi-node: a ``ray.cluster_utils.Cluster`` of three nodes on this machine. Replicas are spread
across the nodes (pinned: Ray cannot restart them elsewhere); removing a node keeps the DTM
committing, and the chaos actor's placement supervisor re-creates the replica that was on it on a
live node, where it catches up (from its directory here: one machine), the move shown in
``status()["chaos"]["moved"]`` by the time the replica answers."""

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
        for name in ("alice", "bob"):  # both clients exist before the loss: the load does not wait
            cluster.client(name)       # on the chaos actor (the race that hid the move once)

        # participants are pinned beside the driver (their data lives there)
        home = {p["node"] for p in cluster.status()["participants"].values()}
        assert len(home) == 1
        # remove a worker node that hosts at most f replicas, at least one, and no participant (the
        # head runs the GCS; the participants' node holds their data)
        candidates = [w for w in workers if w.node_id not in home]
        victim = min(candidates, key=lambda w: per_node.get(w.node_id, 0))
        lost = sorted(r for r, node in nodes.items() if node == victim.node_id)
        assert 1 <= len(lost) <= cfg.f, nodes
        ray_cluster.remove_node(victim)
        records = bank_load(cluster, accounts, ["alice", "bob"], count=5, seed=31, timeout_s=30)
        assert sum(r["status"] == "ok" for r in records) >= 5
        check_bank_run(cluster, accounts, total, records)

        def back(status):
            replicas = {r["id"]: r for r in status["replicas"]}
            return all(replicas[p]["alive"] for p in lost) and status

        status = wait_until(lambda: back(cluster.status()), timeout_s=90, what=f"{lost} answering again")
        # the promise: by the time a lost replica answers, its move is in status()
        replicas = {r["id"]: r for r in status["replicas"]}
        moves = {m["party"]: m for m in status["chaos"]["moved"]}
        for party in lost:
            assert party in moves, status["chaos"]
            assert (moves[party]["from"], moves[party]["to"]) == (victim.node_id, replicas[party]["node"])
            assert replicas[party]["node"] != victim.node_id
        assert victim.node_id not in {r["node"] for r in status["replicas"] if r["alive"]}

        def caught_up():
            replicas = {r["id"]: r for r in cluster.status()["replicas"]}
            others = max(r.get("executed_seq", -1) for p, r in replicas.items() if p not in lost)
            return others > 0 and all(replicas[p].get("executed_seq", -1) >= others for p in lost)

        wait_until(caught_up, timeout_s=60, what=f"{lost} caught up with the others' executed seq")
        wait_until(lambda: all(m["answered_at"] is not None for m in cluster.status()["chaos"]["moved"]
                               if m["party"] in lost), timeout_s=60, what="the supervisor saw the moves answered")
