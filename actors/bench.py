"""First figures of the real system: a bank workload against a local cluster, printed as JSON.

    python -m actors.bench --f 1 --clients 4 --duration 20

Reports committed txn/s, p50/p99 latency, abort rate, the costs per committed transaction that do
not depend on the machine (actor calls, messages, bytes, fsyncs, summed over all parties), and the
memory of the running cluster (RSS and PSS of every actor process, from /proc: Linux only).
Not a test: it asserts only the bank invariant, so that a fast but wrong run is not reported.
The full sweep (many logical clients per load-generator actor, faults, f=0 baseline, plots) is
``python -m benchmarks.bench_ray`` (``dtm-ray bench bench_ray``).
"""

from __future__ import annotations

import argparse
import json
import time

import dtm_ray
from dtm_ray.config import ClusterConfig


def proc_memory_kb(pid: int) -> dict:
    """RSS and PSS (shared pages divided among the processes sharing them) of one process."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    out[key.lower()] = int(rest.split()[0])
    except OSError:
        pass
    return out


def cluster_memory(status: dict) -> dict:
    parties = [*status["replicas"], *status["participants"].values(), *status["clients"].values()]
    per = {p["id"]: proc_memory_kb(p["pid"]) for p in parties if p.get("pid")}
    return {"processes": len(per),
            "rss_mb": round(sum(m.get("rss", 0) for m in per.values()) / 1024, 1),
            "pss_mb": round(sum(m.get("pss", 0) for m in per.values()) / 1024, 1),
            "per_party_rss_mb": {k: round(m.get("rss", 0) / 1024, 1) for k, m in per.items()}}


def totals(status: dict) -> dict:
    keys = ("calls_out", "messages_out", "bytes_out", "fsyncs")
    parties = [*status["replicas"], *status["participants"].values(), *status["clients"].values()]
    return {k: sum(p.get("host", {}).get(k, 0) for p in parties) for k in keys}


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="bank workload against a local dtm-ray cluster")
    parser.add_argument("--f", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--accounts", type=int, default=8, help="accounts per kv participant")
    parser.add_argument("--auth", default="ed25519", choices=["ed25519", "hmac"])
    args = parser.parse_args(argv)

    names = tuple(f"load-{i}" for i in range(args.clients))
    cfg = ClusterConfig(f=args.f, clients=names, log_level="WARNING", auth_scheme=args.auth)
    from actors.loadgen import bank_accounts_of as bank_accounts, bank_setup_of as bank_setup, check_bank_run

    with dtm_ray.start(cfg) as cluster:
        accounts = bank_accounts(cluster, args.accounts)
        total = bank_setup(cluster, accounts, client=names[0])
        for name in names:
            cluster.client(name)
        idle = cluster.status()
        memory_idle = cluster_memory(idle)
        before = totals(idle)
        t0 = time.monotonic()
        records = cluster.run_load("bank", list(names), duration_s=args.duration, seed=1,
                                   params={"accounts": [list(a) for a in accounts], "read_share": 0.05})
        elapsed = time.monotonic() - t0
        status = cluster.status()
        after = totals(status)
        check_bank_run(cluster, accounts, total, records)
        committed = [r for r in records if r["status"] == "ok"]
        latencies = sorted((r["end_ns"] - r["start_ns"]) / 1e6 for r in records if r["end_ns"])
        n = max(1, len(committed))
        result = {
            "n": cfg.replica_count, "f": args.f, "clients": args.clients, "auth": args.auth,
            "duration_s": round(elapsed, 2), "submitted": len(records), "committed": len(committed),
            "committed_per_s": round(len(committed) / elapsed, 2),
            "abort_rate": round(sum(r["status"] == "fail" for r in records) / max(1, len(records)), 3),
            "unknown": sum(r["status"] == "info" for r in records),
            "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
            "per_committed": {k: round((after[k] - before[k]) / n, 1) for k in after},
            "memory_idle": memory_idle, "memory_after": cluster_memory(status),
        }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
