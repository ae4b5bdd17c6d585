"""``Cluster.run_load(workload, concurrency=... | rate=...)``: thousands of logical clients in one or
two load-generator actors, a bank opened in seconds, the run, its checks and one report.

The steps, each a short function:

1. ``generators``: the cluster's load-generator actors (``actors.loadgen_actor``), started on first
   use and reused by later runs. Their clients are the configuration's load pool
   (``ClusterConfig.load_pool_clients`` over ``load_pool_generators``), with derived keys
   (``dtm_ray.poolkeys``): the cluster had them declared from its start, nobody's key ring grew.
2. ``setup_bank``: ``accounts`` opening balances per kv participant, ``max_ops`` puts per
   transaction, one participant each, submitted by all pool clients side by side (so they share
   PRE-PREPAREs instead of queueing behind one client: 20,000 accounts are ~300 transactions).
3. the run: each generator runs its share of ``concurrency`` (closed loop) or ``rate`` (open loop).
4. the checks (bank total conserved, no split or misreported transaction) and the report
   (``actors.report.summarise``): verdicts in the report, not exceptions, so a failed check still
   hands back the figures that go with it.

A pool client whose outcome a run did not learn keeps its request until the replicas answer it;
later runs leave it out (``LoadGenActor._free_clients``) rather than break its request order.
"""

from __future__ import annotations

import time
from typing import Any

from dtm_ray.errors import ConfigError, LocalError

WORKLOADS = ("bank", "hot-key")
# What ``params=`` may tune per workload (the accounts come from ``accounts=``, the bank's own).
PARAMS = {"bank": ("read_share", "span"), "hot-key": ("hot", "hot_share", "read_share")}
SETTLE_MIN_S, SETTLE_MAX_S = 30.0, 900.0


class SetupFailed(LocalError):
    """The bank's opening balances did not all commit: a run on it would measure nothing sound."""


def generators(cluster, count: int | None) -> list:
    """The first ``count`` (all, when None) load-generator actors of the cluster's pool."""
    pool = cluster.config.load_pool
    if not pool:
        raise ConfigError("this cluster has no load pool: start it with ClusterConfig(load_pool_clients=N) "
                          "(N logical clients), or pass client names to run_load")
    names = list(pool)
    count = len(names) if count is None else count
    if not 1 <= count <= len(names):
        raise ConfigError(f"generators must be 1..{len(names)} (ClusterConfig.load_pool_generators), got {count}")
    return [cluster._load_generator(name) for name in names[:count]]


def split(total: float, parts: int) -> list[float]:
    """``total`` shared as evenly as possible (integers stay integers)."""
    if isinstance(total, int):
        base, extra = divmod(total, parts)
        return [base + (i < extra) for i in range(parts)]
    return [total / parts] * parts


def setup_bank(cluster, gens: list, accounts: list, timeout_s: float) -> tuple[int, int]:
    """Open every account with ``BALANCE``; returns the bank's total and how many transactions
    that took. Raises ``SetupFailed`` unless every one of them committed."""
    import ray

    from actors.loadgen import BALANCE, bank_setup_ops

    op_lists = bank_setup_ops(accounts, cluster.config.max_ops)
    refs = [g.submit_all.remote(op_lists[i::len(gens)], timeout_s) for i, g in enumerate(gens)]
    records = [r for recs in ray.get(refs, timeout=timeout_s * len(op_lists) + 60) for r in recs]
    committed = sum(r["status"] == "ok" for r in records)
    if committed != len(op_lists):
        failed = next((r for r in records if r["status"] != "ok"), None)
        detail = f"; first failure: {failed['status']} ({failed['reason']})" if failed else ""
        raise SetupFailed(f"bank setup: {committed} of {len(op_lists)} transactions committed{detail}")
    return BALANCE * len(accounts), len(op_lists)


def run_pool_load(cluster, workload: str, *, concurrency: int | None, rate: float | None,
                  duration_s: float, generators_count: int | None, seed: int, accounts: int,
                  params: dict | None, timeout_s: float | None) -> dict:
    """The whole run; the report (see ``Cluster.run_load``)."""
    from actors.loadgen import bank_accounts_of, check_read_share

    _check_request(cluster, workload, concurrency, rate, duration_s, accounts)
    kv_participants = sum(kind == "kv" for kind in cluster.config.participants.values())
    check_params(workload, params or {}, kv_participants)
    gens = generators(cluster, generators_count)
    pool = [cluster.config.load_pool[n] for n in list(cluster.config.load_pool)[:len(gens)]]
    if concurrency is not None and concurrency > sum(pool):
        raise ConfigError(f"concurrency {concurrency} exceeds the load pool's {sum(pool)} clients on "
                          f"{len(gens)} generator(s): start with ClusterConfig(load_pool_clients>={concurrency})")
    timeout = timeout_s or max(10.0, duration_s)
    t_setup = time.monotonic()
    bank = bank_accounts_of(cluster, accounts)
    run_params = {"accounts": [list(a) for a in bank], "read_share": 0.0, **(params or {})}
    check_read_share(run_params["read_share"], len(bank), cluster.config.max_ops)  # before any setup
    total, setup_txns = setup_bank(cluster, gens, bank, cluster.config.submit_timeout_s)
    setup_s = time.monotonic() - t_setup
    report, records = _measure(cluster, gens, workload, concurrency, rate, duration_s, seed, timeout, run_params)
    report.update(workload=workload, concurrency=concurrency, rate=rate, duration_s=duration_s,
                  generators=len(gens), seed=seed, accounts_per_participant=accounts,
                  setup={"accounts": len(bank), "transactions": setup_txns, "seconds": round(setup_s, 2)})
    report["checks"] = _checks(cluster, bank, total, records, report)
    return report


def _check_request(cluster, workload: str, concurrency, rate, duration_s, accounts) -> None:
    if workload not in WORKLOADS:
        raise ConfigError(f"workload {workload!r} with concurrency/rate: one of {list(WORKLOADS)}")
    if (concurrency is None) == (rate is None):
        raise ConfigError("give one of concurrency= (closed loop) or rate= (open loop, txn/s)")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
        raise ConfigError(f"rate must be a number > 0 (txn/s), got {rate!r}")
    if not isinstance(duration_s, (int, float)) or duration_s <= 0:
        raise ConfigError(f"duration_s must be a number > 0, got {duration_s!r}")
    if not isinstance(accounts, int) or accounts < 2:
        raise ConfigError(f"accounts must be an integer >= 2 (per kv participant), got {accounts!r}")
    if not any(kind == "kv" for kind in cluster.config.participants.values()):
        raise ConfigError("the bank workload needs at least one kv participant")


def check_params(workload: str, params: dict, kv_participants: int) -> None:
    """``params`` of a pool run, refused with a ``ConfigError`` before anything starts: a wrong key
    or value would otherwise surface as a ``TypeError`` inside a load-generator actor mid-run."""
    if not isinstance(params, dict):
        raise ConfigError(f"params must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAMS[workload]))
    if "accounts" in unknown:
        raise ConfigError("params: give the number of accounts as run_load(accounts=N), not in params")
    if unknown:
        raise ConfigError(f"params {unknown} are not parameters of {workload!r}: {list(PARAMS[workload])}")
    for name in ("read_share", "hot_share"):
        share = params.get(name, 0.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ConfigError(f"params: {name} must be a number in [0, 1], got {share!r}")
    span = params.get("span")
    if span is not None and (isinstance(span, bool) or not isinstance(span, int) or not 1 <= span <= kv_participants):
        raise ConfigError(f"params: span must be an integer in 1..{kv_participants} (the kv participants), got {span!r}")
    hot = params.get("hot", 2)
    if isinstance(hot, bool) or not isinstance(hot, int) or hot < 2:
        raise ConfigError(f"params: hot must be an integer >= 2 (the hot accounts), got {hot!r}")


def _measure(cluster, gens, workload, concurrency, rate, duration_s, seed, timeout, params
             ) -> tuple[dict, list[dict]]:
    import ray

    from actors.report import all_statuses, party_totals, summarise

    before = party_totals(all_statuses(cluster, gens))
    conc = split(concurrency, len(gens)) if concurrency is not None else [None] * len(gens)
    rates = split(float(rate), len(gens)) if rate is not None else [None] * len(gens)
    t0, t0_ns = time.monotonic(), time.time_ns()
    refs = [g.run.remote(workload, duration_s=duration_s, concurrency=c, rate=r, seed=seed * 1000 + i,
                         timeout_s=timeout, params=params)
            for i, (g, c, r) in enumerate(zip(gens, conc, rates)) if c != 0]
    runs = ray.get(refs, timeout=duration_s + timeout + 120)
    elapsed = time.monotonic() - t0
    after = party_totals(all_statuses(cluster, gens))
    records = [r for run in runs for r in run["records"]]
    report = summarise(records, elapsed, t0_ns, before, after)
    report.update(backlog=sum(r["backlog"] for r in runs), clients_lost=sum(r["clients_lost"] for r in runs))
    return report, records


def _checks(cluster, bank, total, records, report) -> dict[str, Any]:
    """Each checker's verdict: "ok", or the anomalies it found (as text)."""
    from actors.loadgen import atomicity_anomalies, bank_anomalies

    # what is still in flight (outcomes unknown at the cut-off) drains at a few txn/s at least
    in_flight = report["backlog"] + report["unknown"]
    settle_s = min(SETTLE_MAX_S, SETTLE_MIN_S + in_flight / 5)
    verdicts: dict[str, Any] = {}
    for name, check in (("bank", lambda: bank_anomalies(cluster, bank, total, records, settle_s)),
                        ("atomicity", lambda: atomicity_anomalies(cluster, records))):
        try:
            anomalies = check()
        except AssertionError as exc:  # the participants never settled: no verdict on the data
            verdicts[name] = [f"not checked: {exc}"]
            continue
        verdicts[name] = "ok" if not anomalies else [str(a) for a in anomalies]
    verdicts["passed"] = all(v == "ok" for v in verdicts.values())
    return verdicts
