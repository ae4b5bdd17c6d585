"""Soak run: does a replica's memory and its RocksDB directory stay bounded over a long run?

    python -m benchmarks.soak                         # 10 minutes, open loop at 8 txn/s
    python -m benchmarks.soak --minutes 1 --rate 20
    python -m benchmarks.soak --concurrency 16        # closed loop instead
    python -m benchmarks.soak --quick                 # ~15 s, a sample every 3 s (the test)

One cluster (n=4, f=1, the bank workload of ``benchmarks.bench_ray``) under steady load for the
whole run. Every ``--sample-s`` seconds it records, per replica and participant, the resident memory
(RSS, from /proc: Linux only, the parties run on this machine) and the size on disk of the party's
directory under ``data_dir`` (its RocksDB, logs included: what the disk actually holds), with the
number of transactions committed so far. At the end the history is checked (bank invariant,
snapshots, atomicity: a wrong run raises) and ONE JSON object goes to stdout: the config, the
samples and a summary against the target "replica RSS after 10 minutes at most 1.3x what it was
after 1 minute, and RocksDB size bounded".

The load runs in segments of ``--sample-s`` seconds, back to back: each returns its records, so
the committed count of a sample is exact (the transactions of the segments finished so far) and
the load generator holds no growing history; a sample is taken while the next segment runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time

from benchmarks.bench_ray import (LOADED_MACHINE, all_statuses, load_average, log, party_totals, start_generators,
                                  summarise, _start_ray)

TARGET_MEMORY_RATIO = 1.3
REFERENCE_S = 60.0  # the target compares with memory "after 1 minute"
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# What one sample measures


def directory_bytes(path: str) -> dict[str, int]:
    """Bytes of every file below ``path``, and of its RocksDB write-ahead logs (``*.log``) and
    table files (``*.sst``) among them: the WAL grows until a memtable flush (64 MB by default),
    so a growth that is all WAL is bounded by that flush, while growing tables would not be.
    RocksDB deletes files while it compacts: a file that vanishes before its stat counts as gone."""
    sizes = {"total": 0, "wal": 0, "sst": 0}
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                size = os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
            sizes["total"] += size
            if name.endswith(".log"):
                sizes["wal"] += size
            elif name.endswith(".sst"):
                sizes["sst"] += size
    return sizes


def rss_mb(pid: int | None) -> float | None:
    from actors.bench import proc_memory_kb

    if not pid:
        return None
    kb = proc_memory_kb(pid).get("rss")
    return None if kb is None else round(kb / 1024, 1)


def take_sample(cluster, t_s: float, committed: int) -> dict:
    """Memory and disk of every replica and participant, and the log length each replica holds
    (a log that keeps growing is the first suspect when memory does)."""
    status = cluster.status(timeout_s=30.0)
    parties = [*status["replicas"], *status["participants"].values()]
    disk = {p["id"]: directory_bytes(os.path.join(cluster.data_dir, p["id"])) for p in parties}
    return {
        "t_s": round(t_s, 1),
        "committed": committed,
        "rss_mb": {p["id"]: rss_mb(p.get("pid")) for p in parties},
        "rocksdb_mb": {party: round(d["total"] / MB, 3) for party, d in disk.items()},
        "rocksdb_wal_mb": {party: round(d["wal"] / MB, 3) for party, d in disk.items()},
        "rocksdb_sst_mb": {party: round(d["sst"] / MB, 3) for party, d in disk.items()},
        "log_entries": {p["id"]: p.get("log_entries") for p in status["replicas"]},
        "stable_checkpoint": {p["id"]: p.get("stable_checkpoint") for p in status["replicas"]},
        "view": {p["id"]: p.get("view") for p in status["replicas"]},
        "view_change_causes": {p["id"]: p.get("view_change_causes") for p in status["replicas"]},
    }


# ---------------------------------------------------------------------------------------------
# The summary: the first sample at or after the reference time against the last


def reference_sample(samples: list[dict], ref_s: float) -> dict:
    """The first sample taken under load at or after ``ref_s`` (the last one if none is)."""
    loaded = [s for s in samples if s["committed"] > 0] or samples
    return next((s for s in loaded if s["t_s"] >= ref_s), loaded[-1])


def _ratio(end: float | None, ref: float | None) -> float | None:
    return round(end / ref, 3) if end is not None and ref else None


def summary(samples: list[dict], replicas: list[str], participants: list[str], ref_s: float,
            elapsed_s: float) -> dict:
    ref, end = reference_sample(samples, ref_s), samples[-1]
    txns = end["committed"] - ref["committed"]

    def growth(party: str, key: str, unit: int) -> float | None:
        if txns <= 0 or end[key][party] is None or ref[key][party] is None:
            return None
        return round((end[key][party] - ref[key][party]) * MB / unit / txns, 1)

    def per_party(party: str) -> dict:
        return {"rss_mb": {"at_ref": ref["rss_mb"][party], "end": end["rss_mb"][party],
                           "ratio": _ratio(end["rss_mb"][party], ref["rss_mb"][party]),
                           "growth_kb_per_txn": growth(party, "rss_mb", 1024)},
                "rocksdb_mb": {"at_ref": ref["rocksdb_mb"][party], "end": end["rocksdb_mb"][party],
                               "max": max(s["rocksdb_mb"][party] for s in samples),
                               "wal_end": end["rocksdb_wal_mb"][party], "sst_end": end["rocksdb_sst_mb"][party],
                               "growth_bytes_per_txn": growth(party, "rocksdb_mb", 1)}}

    per_replica = {r: per_party(r) for r in replicas}
    ratios = [p["rss_mb"]["ratio"] for p in per_replica.values() if p["rss_mb"]["ratio"] is not None]
    growths = [p["rocksdb_mb"]["growth_bytes_per_txn"] for p in per_replica.values()
               if p["rocksdb_mb"]["growth_bytes_per_txn"] is not None]
    rss_growths = [p["rss_mb"]["growth_kb_per_txn"] for p in per_replica.values()
                   if p["rss_mb"]["growth_kb_per_txn"] is not None]
    max_ratio = max(ratios) if ratios else None
    return {
        "ref_t_s": ref["t_s"], "end_t_s": end["t_s"], "committed_after_ref": txns,
        "replicas": per_replica,
        "participants": {p: per_party(p) for p in participants},
        "rss_ratio_max": max_ratio,
        "rss_growth_kb_per_txn_max": max(rss_growths) if rss_growths else None,
        "rocksdb_growth_bytes_per_txn_max": max(growths) if growths else None,
        "committed": end["committed"],
        "committed_per_s": round(end["committed"] / elapsed_s, 2) if elapsed_s else None,
        "target_memory_ratio_1_3": max_ratio is not None and max_ratio <= TARGET_MEMORY_RATIO,
    }


# ---------------------------------------------------------------------------------------------
# The run


def run_soak(*, minutes: float = 10.0, rate: float | None = 8.0, concurrency: int | None = None,
             sample_s: float = 30.0, ref_s: float | None = None, seed: int = 1, accounts: int = 20,
             read_share: float = 0.05, auth: str = "ed25519", overrides: dict | None = None,
             data_dir: str | None = None) -> dict:
    """One soak run; returns the JSON-able result (config, samples, summary). Raises if the
    history is wrong. Open loop at ``rate`` txn/s unless ``concurrency`` is given (closed loop)."""
    import dtm_ray
    from actors.loadgen import bank_accounts_in, bank_accounts_of, check_read_share
    from actors.loadgen_actor import client_names
    from dtm_ray.config import ClusterConfig

    duration_s = minutes * 60.0
    if ref_s is None:  # a run shorter than 2 minutes compares with its first quarter instead
        ref_s = REFERENCE_S if duration_s >= 2 * REFERENCE_S else duration_s / 4
    if concurrency is not None:
        rate = None
    clients = concurrency or max(8, int(2 * rate))  # open loop: enough idle clients for the arrivals
    overrides = dict(LOADED_MACHINE if overrides is None else overrides)
    names = client_names("lg0", clients)
    cfg = ClusterConfig(f=1, clients=("setup", *names), log_level="WARNING", auth_scheme=auth, **overrides)
    check_read_share(read_share, len(bank_accounts_in(cfg, accounts)), cfg.max_ops)  # before anything starts
    owns_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="dtm-soak-")
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
    config = {"n": cfg.replica_count, "f": 1, "workload": "bank", "minutes": minutes, "rate": rate,
              "concurrency": concurrency, "logical_clients": clients, "sample_s": sample_s, "ref_s": ref_s,
              "seed": seed, "accounts_per_participant": accounts, "read_share": read_share, "auth": auth,
              "config": overrides, "data_dir": data_dir}
    log(f"soak {config}: starting cluster")
    try:
        with dtm_ray.start(cfg) as cluster:
            result = _drive(cluster, cfg, config, bank_accounts_of(cluster, accounts))
    finally:
        if owns_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    s = result["summary"]
    log(f"  -> {s['committed']} committed ({s['committed_per_s']} txn/s), RSS ratio max {s['rss_ratio_max']}, "
        f"RocksDB growth max {s['rocksdb_growth_bytes_per_txn_max']} B/txn")
    return result


def _drive(cluster, cfg, config: dict, accounts: list) -> dict:
    """Set up the bank, run the load segment by segment with a sample after each, check."""
    import ray

    from actors.loadgen import bank_setup_of, check_bank_run

    total = bank_setup_of(cluster, accounts, client="setup")
    gens = start_generators(cluster, cfg, {"lg0": [c for c in cfg.clients if c != "setup"]})
    before = party_totals(all_statuses(cluster, gens))
    load_before = load_average()
    params = {"accounts": [list(a) for a in accounts], "read_share": config["read_share"]}
    duration_s = config["minutes"] * 60.0
    t0, t0_ns = time.monotonic(), time.time_ns()
    samples = [take_sample(cluster, 0.0, 0)]
    records: list[dict] = []
    backlog = lost = 0

    def segment(k: int):
        """The next ``sample_s`` of load (a Ray ref), or None once the run's time is up."""
        left = duration_s - (time.monotonic() - t0)
        if left < 0.5:
            return None
        return gens[0].run.remote("bank", duration_s=min(config["sample_s"], left),
                                  concurrency=config["concurrency"], rate=config["rate"],
                                  seed=config["seed"] * 1000 + k, timeout_s=10.0, params=params)

    running, k = segment(0), 0
    while running is not None:
        run = ray.get(running, timeout=config["sample_s"] + 120)
        k += 1
        running = segment(k)  # the next segment starts before the sample: memory is read under load
        records += run["records"]
        backlog, lost = backlog + run["backlog"], lost + run["clients_lost"]
        committed = sum(r["status"] == "ok" for r in records)
        samples.append(take_sample(cluster, time.monotonic() - t0, committed))
        _progress(samples[-1], duration_s, cfg.replicas)
    elapsed = time.monotonic() - t0
    after = party_totals(all_statuses(cluster, gens))
    check_bank_run(cluster, accounts, total, records)  # raises on a wrong result
    load = summarise(records, elapsed, t0_ns, before, after)
    for bulky in ("timeline", "timing_mean_ms", "per_committed_by_party"):
        load.pop(bulky, None)
    load.update({"backlog": backlog, "clients_lost": lost,
                 "load_average": {"before": load_before, "after": load_average()}})
    return {"config": config, "samples": samples,
            "summary": summary(samples, list(cfg.replicas), list(cfg.participants), config["ref_s"], elapsed),
            "load": load, "checked": True}


def _progress(sample: dict, duration_s: float, replicas) -> None:
    rss = " ".join(f"{r}={sample['rss_mb'][r]}" for r in replicas)
    disk = " ".join(f"{r}={sample['rocksdb_mb'][r]:.1f}" for r in replicas)
    log(f"  {sample['t_s']:6.1f}/{duration_s:.0f} s  committed {sample['committed']}  "
        f"RSS MB {rss}  RocksDB MB {disk}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="the run's length (default 10; 0.25 with --quick)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=8.0, help="open loop: offered txn/s (the default)")
    load.add_argument("--concurrency", type=int, help="closed loop: this many clients instead of --rate")
    parser.add_argument("--sample-s", type=float, help="seconds between samples (default 30; 3 with --quick)")
    parser.add_argument("--ref-s", type=float, help="the reference sample's time (default 60, or a quarter "
                        "of a run shorter than 2 minutes)")
    parser.add_argument("--quick", action="store_true", help="~15 s with a sample every 3 s (the test)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=20, help="bank accounts per kv participant")
    parser.add_argument("--read-share", type=float, default=0.05)
    parser.add_argument("--auth", default="ed25519", choices=["ed25519", "hmac"])
    parser.add_argument("--data-dir", help="keep the parties' directories here (default: a temp dir, removed)")
    parser.add_argument("--config", default=json.dumps(LOADED_MACHINE), help="ClusterConfig overrides as JSON")
    args = parser.parse_args(argv)
    quick = {"minutes": 0.25, "sample_s": 3.0} if args.quick else {"minutes": 10.0, "sample_s": 30.0}
    for name, default in quick.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    owns_ray = _start_ray()
    try:
        result = run_soak(minutes=args.minutes, rate=args.rate, concurrency=args.concurrency,
                          sample_s=args.sample_s, ref_s=args.ref_s, seed=args.seed, accounts=args.accounts,
                          read_share=args.read_share, auth=args.auth, overrides=json.loads(args.config),
                          data_dir=args.data_dir)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
