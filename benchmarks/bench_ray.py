"""Ray cluster sweep: throughput, latency and per-transaction costs, with faults; JSON + PNG plots.

    python -m benchmarks.bench_ray                     # the default sweep (several minutes)
    python -m benchmarks.bench_ray --quick --out DIR   # a few seconds of load (CI)

Every point starts its own cluster, runs load generators (``actors.loadgen_actor``: many logical
clients per actor, closed loop by ``--concurrency`` or open loop by ``--rate``), optionally injects
a fault, and records committed txn/s, p50/p95/p99 latency, the abort rate and its reasons, and per
committed transaction the actor calls, messages, bytes, fsyncs, signatures/MACs made and checked
and CPU seconds, summed over every party. The bank invariant and atomicity are checked on every
point's history: a point whose result is wrong raises instead of being reported. The f = 0 point
(one coordinator replica, same code) is the crash-fault baseline; ``bft_cost`` is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from actors.report import (COST_KEYS, all_statuses, load_average, party_totals,  # noqa: F401 (soak)
                           percentile, summarise)

# The vote timeout for a machine shared with other work: at the default 2 s, transactions queued
# behind locks on hot accounts abort by timeout. (A 2 s view-change timer used to be needed too:
# the censorship rule fired on plain queues. Since the censorship clock restarts on full batches
# the timers adapt to the measured consensus latency and do not count a replica's own pauses, the
# default 1000 ms holds under load.)
# Every point records the config it ran with.
LOADED_MACHINE = {"vote_timeout_ms": 10_000}
SETTLE_MAX_S = 900.0
FAULTS = ("none", "crash-backup", "crash-primary", "byzantine")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_generators(cluster, cfg, groups: dict[str, list[str]]) -> list:
    import ray

    from actors.loadgen_actor import LoadGenActor, client_ring
    from actors.names import actor_name

    remote = ray.remote(LoadGenActor)
    handles = []
    for actor, clients in groups.items():
        spec = {"party": actor, "namespace": cluster.namespace, "config": cfg.to_dict(),
                "keys": {c: client_ring(cluster._keyrings[c], list(cfg.replicas)) for c in clients}}
        handles.append(remote.options(name=actor_name(actor), namespace=cluster.namespace, num_cpus=0,
                                      max_concurrency=10_000).remote(spec))
    ray.get([h.ping.remote() for h in handles], timeout=120)
    return handles


def run_point(*, f: int, concurrency: int, rate: float | None, workload: str, duration_s: float,
              fault: str, generators: int, seed: int, auth: str, byzantine: str = "equivocate",
              overrides: dict | None = None, accounts: int = 20, read_share: float = 0.0,
              span: int | None = None) -> dict:
    import ray

    import dtm_ray
    from actors.loadgen import bank_accounts_in, bank_accounts_of, bank_setup_of, check_bank_run, check_read_share
    from actors.loadgen_actor import client_names
    from dtm_ray.config import ClusterConfig

    per_gen = max(1, -(-concurrency // generators))
    groups = {f"lg{g}": client_names(f"lg{g}", per_gen) for g in range(generators)}
    logical = [c for cs in groups.values() for c in cs]
    overrides = dict(overrides or {})
    if span is not None:  # participants per transaction: exactly ``span`` kv services
        overrides["participants"] = {f"db-{i}": "kv" for i in range(span)}
    cfg = ClusterConfig(f=f, clients=("setup", *logical), log_level="WARNING", auth_scheme=auth, **overrides)
    check_read_share(read_share, len(bank_accounts_in(cfg, accounts)), cfg.max_ops)
    point = {"n": cfg.replica_count, "f": f, "concurrency": concurrency, "rate": rate, "workload": workload,
             "fault": fault, "generators": generators, "auth": auth, "duration_s": duration_s, "seed": seed,
             "config": overrides, "accounts_per_participant": accounts, "read_share": read_share,
             "span": span, "byzantine": byzantine if fault == "byzantine" else None}
    log(f"point {point}: starting cluster")
    with dtm_ray.start(cfg) as cluster:
        accounts = bank_accounts_of(cluster, accounts)
        total = bank_setup_of(cluster, accounts, client="setup")
        gens = start_generators(cluster, cfg, groups)
        before = party_totals(all_statuses(cluster, gens))
        load_before = load_average()
        params = {"accounts": [list(a) for a in accounts], "read_share": read_share, "span": span}
        per_gen_conc = max(1, concurrency // generators)
        t0 = time.monotonic()
        t0_ns = time.time_ns()
        if fault == "crash-backup":
            cluster.chaos.crash(cfg.replica_count - 1)
        if fault == "byzantine":
            cluster.chaos.byzantine(0, byzantine, seed=seed)  # the primary: its view change is part of the run
        refs = [g.run.remote(workload, duration_s=duration_s, concurrency=per_gen_conc,
                             rate=None if rate is None else rate / generators, seed=seed * 1000 + i,
                             timeout_s=max(10.0, duration_s), params=params) for i, g in enumerate(gens)]
        fault_at = None
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            elapsed = time.monotonic() - t0
            if fault == "crash-primary" and fault_at is None and elapsed >= duration_s / 2:
                fault_at = round(elapsed, 2)
                log(f"crashing the primary at {fault_at} s")
                cluster.chaos.crash(0)
            if len(ready) == len(refs):
                break
            log(f"  {elapsed:5.1f}/{duration_s} s")
        runs = ray.get(refs)
        elapsed = time.monotonic() - t0
        after = party_totals(all_statuses(cluster, gens))
        records = [r for run in runs for r in run["records"]]
        backlog = sum(r["backlog"] for r in runs)
        # what is still in flight (queued arrivals, outcomes unknown at the cut-off) drains at (at
        # least) a few txn/s on this machine: give it the time it needs
        in_flight = backlog + sum(r["status"] == "info" for r in records)
        settle_s = min(SETTLE_MAX_S, 30.0 + in_flight / 5)
        check_bank_run(cluster, accounts, total, records, settle_s)  # raises on a wrong result
        point.update(summarise(records, elapsed, t0_ns, before, after))
        point.update({"backlog": backlog, "clients_lost": sum(r["clients_lost"] for r in runs),
                      "fault_at_s": fault_at if fault == "crash-primary" else (0.0 if fault != "none" else None),
                      "load_average": {"before": load_before, "after": load_average()}, "checked": True})
    if fault_at is not None:
        point["recovery_s"] = recovery_time(point["timeline"], fault_at)
    log(f"  -> {point['committed_per_s']} txn/s, p50 {point['latency_ms']['p50']} ms")
    return point


def recovery_time(timeline: list[list[float]], fault_at: float, share: float = 0.8) -> float | None:
    """Seconds after ``fault_at`` until a 1 s window reaches ``share`` of the mean rate before it."""
    before = [rate for t, rate in timeline if 0.5 <= t < fault_at]
    if not before:
        return None
    target = share * sum(before) / len(before)
    after = [(t, rate) for t, rate in timeline if t >= fault_at]
    for (t, a), (_, b) in zip(after, after[1:]):
        if (a + b) / 2 >= target:
            return round(t - fault_at, 1)
    return None


def sweep(args) -> list[dict]:
    base = dict(workload=args.workload, duration_s=args.duration, generators=args.generators, auth=args.auth,
                seed=args.seed, rate=None, overrides=json.loads(args.config),
                accounts=args.accounts, read_share=args.read_share)
    if args.quick:
        return [dict(base, f=1, concurrency=8, fault="none"), dict(base, f=0, concurrency=8, fault="none")]
    points = [dict(base, f=1, concurrency=c, fault="none") for c in args.concurrency]
    top = max(args.concurrency)
    points += [dict(base, f=0, concurrency=top, fault="none")]
    points += [dict(base, f=f, concurrency=top, fault="none") for f in args.more_f]
    points += [dict(base, f=1, concurrency=top, fault=x) for x in args.faults if x not in ("none", "byzantine")]
    if "byzantine" in args.faults:  # one point per behaviour, on the primary
        points += [dict(base, f=1, concurrency=top, fault="byzantine", byzantine=b) for b in byzantine_names(args)]
    points += [dict(base, f=1, concurrency=top, fault="none", span=k) for k in args.span]
    # open loop (a target rate, e.g. half of the peak: latency below saturation), in-flight capped at ``top``
    points += [dict(base, f=1, concurrency=top, fault="none", rate=r) for r in args.rate]
    return points


def byzantine_names(args) -> list[str]:
    from dtm_ray.faults import CATALOGUE, PARTICIPANT_CATALOGUE

    replica_behaviours = sorted(set(CATALOGUE) - set(PARTICIPANT_CATALOGUE))
    if args.byzantine == ["all"]:
        return replica_behaviours
    unknown = set(args.byzantine) - set(replica_behaviours)
    if unknown:
        raise SystemExit(f"unknown Byzantine behaviours {sorted(unknown)}; choose from {replica_behaviours} or 'all'")
    return list(args.byzantine)


def derived(points: list[dict]) -> dict:
    def best(**match):
        match.setdefault("rate", None)  # closed-loop points
        match.setdefault("span", None)  # on the default participants
        cands = [p for p in points if all(p.get(k) == v for k, v in match.items())]
        return max(cands, key=lambda p: p["concurrency"]) if cands else None

    out = {}
    bft, cft = best(f=1, fault="none"), best(f=0, fault="none")
    for p in points:
        if p["f"] == 1 and p["fault"] != "none" and p.get("rate") is None and p.get("span") is None and bft \
                and bft["concurrency"] == p["concurrency"] and bft["committed_per_s"]:
            name = p["fault"] + (f":{p['byzantine']}" if p.get("byzantine") else "")
            out.setdefault("fault_ratio", {})[name] = round(p["committed_per_s"] / bft["committed_per_s"], 2)
    spans = [p for p in points if p.get("span") is not None]
    if spans:
        out["span_txn_per_s"] = {str(p["span"]): p["committed_per_s"] for p in spans}
    bigger = [p for p in points if p["f"] >= 2 and p["fault"] == "none"]
    if bft and bigger and bft["committed_per_s"]:
        out["n_ratio"] = {str(p["n"]): round(p["committed_per_s"] / bft["committed_per_s"], 2) for p in bigger}
    if bft and cft and bft["committed_per_s"]:
        out["bft_cost"] = {"throughput_ratio_f0_over_f1": round(cft["committed_per_s"] / bft["committed_per_s"], 2),
                           "calls_ratio_f1_over_f0": _ratio(bft, cft, "calls_out"),
                           "fsyncs_ratio_f1_over_f0": _ratio(bft, cft, "fsyncs"),
                           "cpu_ratio_f1_over_f0": _ratio(bft, cft, "cpu_s")}
    return out


def floor_section(points: list[dict], seconds: float) -> dict:
    """The system's actor calls per second beside what Ray alone delivers on this machine, in the
    host's shape, one and 100 items per call (``benchmarks.ray_floor``), measured in the same Ray."""
    from benchmarks import ray_floor

    log(f"Ray's floor: {seconds} s per point")
    measured = ray_floor.floor(shapes=("host",), items=(1, 100), seconds=seconds)
    system = [{"n": p["n"], "f": p["f"], "concurrency": p["concurrency"], "fault": p["fault"], "rate": p.get("rate"),
               "calls_per_s": round(p["per_committed"]["calls_out"] * p["committed_per_s"], 1)}
              for p in points if p.get("per_committed") and p.get("committed_per_s")]
    one = next((q for q in measured["points"] if q["items_per_call"] == 1), None)
    for row in system:
        row["of_floor"] = round(row["calls_per_s"] / one["calls_per_s"], 2) if one and one["calls_per_s"] else None
    return {"ray": measured, "system": system}


def _ratio(a: dict, b: dict, key: str) -> float | None:
    x, y = a["per_committed"][key], b["per_committed"][key]
    return round(x / y, 2) if y else None


def plot(points: list[dict], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    clean = [p for p in points if p["fault"] == "none" and p.get("rate") is None and p.get("span") is None]
    fig, ax = plt.subplots()
    for f in sorted({p["f"] for p in clean}):
        ps = sorted((p for p in clean if p["f"] == f), key=lambda p: p["concurrency"])
        ax.plot([p["committed_per_s"] for p in ps], [p["latency_ms"]["p50"] or 0 for p in ps], "o-", label=f"n={ps[0]['n']} p50")
        ax.plot([p["committed_per_s"] for p in ps], [p["latency_ms"]["p99"] or 0 for p in ps], "x--", label=f"n={ps[0]['n']} p99")
    ax.set_xlabel("committed txn/s"); ax.set_ylabel("latency (ms)"); ax.legend(); ax.set_title("throughput vs latency")
    files.append(_save(fig, out_dir, "throughput_latency.png"))
    fig, ax = plt.subplots()
    by_n = {}
    for p in clean:
        if p["concurrency"] == max(q["concurrency"] for q in clean):
            by_n[p["n"]] = p["committed_per_s"]
    ax.bar([str(n) for n in sorted(by_n)], [by_n[n] for n in sorted(by_n)])
    ax.set_xlabel("replicas n"); ax.set_ylabel("committed txn/s"); ax.set_title("throughput vs n")
    files.append(_save(fig, out_dir, "throughput_n.png"))
    fig, ax = plt.subplots()
    for p in points:
        if p["f"] == 1 and p.get("rate") is None and p.get("span") is None and p["concurrency"] == max(q["concurrency"] for q in points):
            xs, ys = zip(*p["timeline"]) if p["timeline"] else ((), ())
            line, = ax.plot(xs, ys, label=p["fault"] + (f":{p['byzantine']}" if p.get("byzantine") else ""))
            if p.get("fault_at_s"):
                ax.axvline(p["fault_at_s"], color=line.get_color(), linestyle=":")
    ax.set_xlabel("time (s)"); ax.set_ylabel("committed txn/s (0.5 s bins)"); ax.legend(); ax.set_title("throughput over time")
    files.append(_save(fig, out_dir, "throughput_time.png"))
    return files


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short points (n=4 and n=1), for CI")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--more-f", type=int, nargs="*", default=[2], help="extra f values (n=3f+1) at top concurrency")
    parser.add_argument("--faults", nargs="*", default=list(FAULTS[1:]), choices=FAULTS)
    parser.add_argument("--workload", default="bank", choices=["bank", "hot-key"])
    parser.add_argument("--generators", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=20, help="bank accounts per kv participant (contention)")
    parser.add_argument("--read-share", type=float, default=0.0,
                        help="share of full-bank reads (each locks every account; checked as snapshots)")
    parser.add_argument("--auth", default="ed25519", choices=["ed25519", "hmac"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--config", default=json.dumps(LOADED_MACHINE), help='ClusterConfig overrides as JSON, e.g. \'{"view_change_timeout_ms": 2000}\'')
    parser.add_argument("--byzantine", nargs="+", default=["equivocate"],
                        help="replica behaviours for the 'byzantine' fault (one point each), or 'all'")
    parser.add_argument("--span", type=int, nargs="*", default=[],
                        help="points whose transfers touch exactly K participants (K kv services)")
    parser.add_argument("--rate", type=float, nargs="*", default=[],
                        help="open-loop points at these offered txn/s (n=4, in flight capped at the top concurrency)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--floor-seconds", type=float, default=None,
                        help="seconds per point of Ray's own floor (benchmarks.ray_floor; 0: none)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick and args.duration == 10.0:
        args.duration = 3.0
    if args.quick and args.read_share == 0.0:
        args.read_share = 0.05  # CI: exercise the snapshot check too
    os.makedirs(args.out, exist_ok=True)
    points = []
    owns_ray = _start_ray()  # one local Ray for the whole sweep (each point its own cluster in it)
    try:
        for spec in sweep(args):
            points.append(run_point(**spec))
            _write(args.out, points)
        floor_s = args.floor_seconds if args.floor_seconds is not None else (1.0 if args.quick else 3.0)
        floor = floor_section(points, floor_s) if floor_s > 0 else None
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    result = {"points": points, **derived(points)}
    if floor is not None:
        result["floor"] = floor
    if not args.no_plots:
        result["plots"] = plot(points, args.out)
    _write(args.out, points, result)
    print(json.dumps(result, indent=1))
    return result


def _start_ray() -> bool:
    from dtm_ray.api import _ensure_ray
    from dtm_ray.config import ClusterConfig

    return _ensure_ray(ClusterConfig())


def _write(out_dir: str, points: list[dict], result: dict | None = None) -> None:
    with open(os.path.join(out_dir, "bench.json"), "w") as fh:
        json.dump(result or {"points": points, "partial": True}, fh, indent=1)


if __name__ == "__main__":
    main()
