"""``cluster.run_load("bank", concurrency=...)`` on real Ray actors: logical clients of the load
pool in load-generator actors, a bank opened by them, a report whose checks pass and in which
every transaction has an outcome."""

from __future__ import annotations

import json

import pytest

import dtm_ray
from dtm_ray import ClusterConfig
from dtm_ray.errors import ConfigError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ACCOUNTS = 2_000  # per kv participant: 4,000 accounts opened by ~64 setup transactions


@pytest.fixture(scope="module")
def cluster(ray_session, tmp_path_factory):
    cfg = ClusterConfig(f=1, data_dir=str(tmp_path_factory.mktemp("runload")), key_seed=11,
                        load_pool_clients=400, load_pool_generators=2, log_level="WARNING",
                        vote_timeout_ms=10_000)  # a loaded 2-core machine: no aborts by vote timeout
    with dtm_ray.start(cfg) as c:
        yield c


def test_a_closed_loop_run_reports_outcomes_costs_and_passing_checks(cluster):
    report = cluster.run_load("bank", concurrency=200, duration_s=5, accounts=ACCOUNTS, seed=3)
    json.dumps(report)
    assert report["checks"] == {"bank": "ok", "atomicity": "ok", "passed": True}, report["checks"]
    assert report["setup"]["accounts"] == 2 * ACCOUNTS and report["setup"]["transactions"] == 2 * 32
    assert report["committed"] > 0 and report["unknown"] == 0  # every transaction got an outcome
    assert report["submitted"] == report["committed"] + report["aborted"]
    assert report["generators"] == 2 and report["concurrency"] == 200
    lat = report["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"]
    costs = report["per_committed"]
    assert costs["calls_out"] > 0 and costs["fsyncs"] > 0 and costs["cpu_s"] > 0 and costs["bytes_out"] > 0
    # both generators carried load: their logical clients were admitted by the replicas
    assert {"gen0", "gen1"} <= set(report["per_committed_by_party"])
    assert all(report["per_committed_by_party"][g]["calls_out"] > 0 for g in ("gen0", "gen1"))


def test_bad_run_requests_are_clear_config_errors(cluster):
    with pytest.raises(ConfigError, match="exceeds the load pool"):
        cluster.run_load("bank", concurrency=401, duration_s=1)
    with pytest.raises(ConfigError, match="one of concurrency"):
        cluster.run_load("bank", concurrency=10, rate=5.0, duration_s=1)
    with pytest.raises(ConfigError, match="generators must be"):
        cluster.run_load("bank", concurrency=10, duration_s=1, generators=3)
    with pytest.raises(ConfigError, match="client names"):
        cluster.run_load("bank")
    with pytest.raises(ConfigError, match="run_load\\(accounts=N\\)"):  # was a TypeError inside the generator
        cluster.run_load("bank", concurrency=1, duration_s=1, params={"accounts": 1000})
