"""The soak benchmark (``benchmarks.soak``: memory and RocksDB size over a long run).

The summary's arithmetic is checked on made-up samples (no Ray); the quick mode runs once on real
actors and its JSON is checked for shape and sanity: samples in time order, sizes that are real,
a ratio that is a number, a history that was checked. Speed is not asserted: this machine is shared.
"""

from __future__ import annotations

import json

import pytest

import dtm_ray

from benchmarks import soak
from dtm_ray.errors import ConfigError

REPLICAS = ["R0", "R1", "R2", "R3"]
PARTICIPANTS = ["db-0", "db-1", "mq-0"]
PARTIES = REPLICAS + PARTICIPANTS


def made_up(t_s: float, committed: int, rss: dict, disk_mb: float) -> dict:
    return {"t_s": t_s, "committed": committed, "rss_mb": {p: rss.get(p, 100.0) for p in PARTIES},
            "rocksdb_mb": {p: disk_mb for p in PARTIES}, "rocksdb_wal_mb": {p: disk_mb for p in PARTIES},
            "rocksdb_sst_mb": {p: 0.0 for p in PARTIES}}


def test_summary_compares_the_reference_sample_with_the_last():
    samples = [made_up(0.0, 0, {}, 0.0), made_up(30.0, 100, {}, 1.0), made_up(61.0, 300, {"R2": 100.0}, 2.0),
               made_up(600.0, 2300, {"R2": 140.0}, 4.0)]
    s = soak.summary(samples, REPLICAS, PARTICIPANTS, ref_s=60.0, elapsed_s=600.0)
    assert (s["ref_t_s"], s["end_t_s"], s["committed_after_ref"]) == (61.0, 600.0, 2000)
    assert s["replicas"]["R2"]["rss_mb"] == {"at_ref": 100.0, "end": 140.0, "ratio": 1.4,
                                             "growth_kb_per_txn": round(40 * 1024 / 2000, 1)}
    assert s["rss_ratio_max"] == 1.4 and s["target_memory_ratio_1_3"] is False
    assert s["rss_growth_kb_per_txn_max"] == round(40 * 1024 / 2000, 1)
    assert s["rocksdb_growth_bytes_per_txn_max"] == round(2 * soak.MB / 2000, 1)
    assert s["replicas"]["R0"]["rocksdb_mb"]["max"] == 4.0
    assert s["committed"] == 2300 and s["committed_per_s"] == round(2300 / 600, 2)


def test_summary_meets_the_target_at_1_3_and_skips_the_idle_first_sample():
    samples = [made_up(0.0, 0, {"R0": 50.0}, 0.1), made_up(10.0, 40, {}, 0.2), made_up(20.0, 80, {"R0": 130.0}, 0.2)]
    s = soak.summary(samples, REPLICAS, PARTICIPANTS, ref_s=0.0, elapsed_s=20.0)
    assert s["ref_t_s"] == 10.0  # the idle sample before any load is never the reference
    assert s["rss_ratio_max"] == 1.3 and s["target_memory_ratio_1_3"] is True
    assert s["rocksdb_growth_bytes_per_txn_max"] == 0.0


def test_directory_bytes_counts_every_file_and_tells_wal_from_tables(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "000007.log").write_bytes(b"w" * 300)
    (tmp_path / "db" / "000009.sst").write_bytes(b"s" * 200)
    (tmp_path / "db" / "LOG").write_bytes(b"i" * 50)
    (tmp_path / "EPOCH").write_bytes(b"1")
    assert soak.directory_bytes(str(tmp_path)) == {"total": 551, "wal": 300, "sst": 200}
    assert soak.directory_bytes(str(tmp_path / "absent")) == {"total": 0, "wal": 0, "sst": 0}


@pytest.mark.ray
@pytest.mark.timeout(150)
def test_quick_soak_samples_memory_and_disk_and_checks_the_history(ray_session, capsys):
    result = soak.main(["--quick", "--minutes", "0.2"])  # 12 s of load, a sample every 3 s
    assert json.loads(capsys.readouterr().out) == result  # one JSON object on stdout
    assert (result["config"]["minutes"], result["config"]["sample_s"]) == (0.2, 3.0)
    assert result["checked"] is True
    assert result["config"]["n"] == 4 and result["config"]["f"] == 1
    samples = result["samples"]
    assert len(samples) >= 3, samples
    times = [s["t_s"] for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times), times
    committed = [s["committed"] for s in samples]
    assert committed == sorted(committed) and committed[0] == 0 and committed[-1] > 0, committed
    for sample in samples:
        assert set(sample["rss_mb"]) == set(PARTIES)
        assert all(sample["rss_mb"][p] > 10 for p in PARTIES), sample["rss_mb"]  # a Python process: > 10 MB
        assert all(sample["rocksdb_mb"][p] > 0 for p in PARTIES), sample["rocksdb_mb"]
        assert all(sample["rocksdb_wal_mb"][p] + sample["rocksdb_sst_mb"][p] <= sample["rocksdb_mb"][p]
                   for p in PARTIES)
    s = result["summary"]
    assert s["committed"] == committed[-1] == result["load"]["committed"]
    assert 0 < s["ref_t_s"] < s["end_t_s"] == times[-1]
    assert set(s["replicas"]) == set(REPLICAS)
    assert isinstance(s["rss_ratio_max"], float) and 0.5 < s["rss_ratio_max"] < 3, s["rss_ratio_max"]
    assert s["target_memory_ratio_1_3"] is (s["rss_ratio_max"] <= soak.TARGET_MEMORY_RATIO)
    # replicas log every committed transaction: their directories grew during the run
    assert all(r["rocksdb_mb"]["end"] > r["rocksdb_mb"]["at_ref"] for r in s["replicas"].values()), s["replicas"]
    assert s["rocksdb_growth_bytes_per_txn_max"] > 0
    assert s["committed_per_s"] > 0


def test_a_soak_whose_bank_reads_could_not_fit_in_a_transaction_is_refused_before_anything_starts(monkeypatch):
    # 10,000 accounts on each of two kv services: a whole-bank read would be 20,000 ops against
    # max_ops = 64, so every read is refused and the run measures refusals (the 10-minute soak
    # of 2026-12-02 did 5.7 txn/s so). Nothing may start: no data directory, no cluster.
    started = []
    monkeypatch.setattr(soak.tempfile, "mkdtemp", lambda **kw: started.append("dir") or "/nonexistent")

    def start(*args, **kwargs):
        started.append("cluster")
        raise RuntimeError("a cluster was started")

    monkeypatch.setattr(dtm_ray, "start", start)
    with pytest.raises(ConfigError, match="max_ops"):
        soak.run_soak(minutes=0.1, concurrency=4, accounts=10_000, read_share=0.05, auth="hmac")
    assert started == []
