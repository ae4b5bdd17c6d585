"""What a load run reports: per-party cost counters summed over the cluster, and the run's summary
(outcome counts, txn/s, latency percentiles, costs per committed transaction, a timeline).

One definition for every driver: ``Cluster.run_load`` (``actors.loadrun``), the Ray benchmark
(``benchmarks.bench_ray``) and the soak (``benchmarks.soak``). Costs are the differences of the
parties' host counters (``actors.host.Host.stats``) between two snapshots, divided by the
committed transactions: machine-independent figures, not wall-clock ones.
"""

from __future__ import annotations

import collections
import os

COST_KEYS = ("calls_out", "messages_out", "bytes_out", "fsyncs", "crypto_sign", "crypto_verify",
             "crypto_mac", "crypto_mac_checked", "cpu_s", "loop_cpu_s")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def party_totals(statuses: list[dict]) -> dict:
    out = {k: sum(s.get("host", {}).get(k, 0) for s in statuses) for k in COST_KEYS}
    timing = collections.defaultdict(lambda: [0, 0.0])
    for st in statuses:
        for k, v in st.get("host", {}).get("timing", {}).items():
            timing[k][0] += v["count"]
            timing[k][1] += (v["mean_ms"] or 0) * v["count"]
    out["timing"] = dict(timing)
    out["view_changes"] = max((s.get("host", {}).get("out:ViewChanged", 0) for s in statuses), default=0)
    out["by_party"] = {s["id"]: {k: s.get("host", {}).get(k, 0) for k in COST_KEYS}
                       for s in statuses if "id" in s}
    return out


def party_deltas(before: dict, after: dict) -> tuple[dict[str, dict], list[str]]:
    """Each party's counters between two snapshots, and the parties that restarted in between.
    A restarted party's counters start again from zero, so its difference would be negative
    (the crash-primary bench point reported negative costs per transaction): its "after" counts
    are taken as what it did since its restart; what its old process did after the first
    snapshot is lost with it, so such costs are a lower bound (and said so by ``restarted``)."""
    deltas, restarted = {}, []
    for party, now in after["by_party"].items():
        then = before["by_party"].get(party, {})
        if any(now.get(k, 0) < then.get(k, 0) for k in COST_KEYS):
            restarted.append(party)
            then = {}
        deltas[party] = {k: now.get(k, 0) - then.get(k, 0) for k in COST_KEYS}
    return deltas, sorted(restarted)


def all_statuses(cluster, generators) -> list[dict]:
    """Every party's status: the cluster's (replicas, participants, client actors) and the load
    generators' (they are no parties of ``cluster.status``)."""
    import ray

    st = cluster.status()
    parties = [*st["replicas"], *st["participants"].values(), *st["clients"].values()]
    return parties + ray.get([g.status.remote() for g in generators], timeout=30)


def _digits(cost: str) -> int:
    """CPU seconds per transaction are a few ms: kept to 10 us, the counts to a thousandth."""
    return 5 if cost.endswith("cpu_s") else 3


def summarise(records: list[dict], elapsed: float, t0_ns: int, before: dict, after: dict) -> dict:
    committed = [r for r in records if r["status"] == "ok"]
    aborted = [r for r in records if r["status"] == "fail"]
    lat = sorted((r["end_ns"] - r["start_ns"]) / 1e6 for r in committed)
    n = max(1, len(committed))
    deltas, restarted = party_deltas(before, after)
    timeline = collections.Counter(int((r["end_ns"] - t0_ns) / 5e8) for r in committed)
    return {
        "elapsed_s": round(elapsed, 2), "submitted": len(records), "committed": len(committed),
        "aborted": len(aborted), "unknown": sum(r["status"] == "info" for r in records),
        "committed_per_s": round(len(committed) / elapsed, 2),
        "abort_rate": round(len(aborted) / max(1, len(records)), 3),
        "abort_reasons": dict(collections.Counter(str(r["reason"]) for r in aborted).most_common(5)),
        "latency_ms": {"p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p95": percentile(lat, 0.95),
                       "p99": percentile(lat, 0.99)},
        "per_committed": {k: round(sum(d[k] for d in deltas.values()) / n, _digits(k)) for k in COST_KEYS},
        "per_committed_by_party": {p: {k: round(d[k] / n, _digits(k) + 1) for k in ("cpu_s", "loop_cpu_s", "calls_out", "fsyncs")}
                                   for p, d in deltas.items()},
        "restarted": restarted,  # their costs since their restart only: a lower bound
        "view_changes": after["view_changes"] - before["view_changes"],
        "timing_mean_ms": {k: round((c - before["timing"].get(k, [0, 0.0])[1]) / (n_ - before["timing"].get(k, [0, 0.0])[0]), 2)
                           for k, (n_, c) in after["timing"].items() if n_ > before["timing"].get(k, [0, 0.0])[0]},
        "timeline": [[i / 2, timeline.get(i, 0) * 2] for i in range(int(elapsed * 2) + 1)],  # (s, txn/s)
    }
