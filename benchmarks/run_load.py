"""One ``cluster.run_load`` report as JSON, and the bank setup time before and after the batched setup.

    python -m benchmarks.run_load --concurrency 2000 --duration 20 --accounts 10000
    python -m benchmarks.run_load --setup-only --accounts 10000      # setup times only

The setup comparison opens the same bank twice on one fresh cluster each: by one declared client,
one transaction of ``max_ops`` puts after the other (``actors.loadgen.bank_setup_of``, what the
tests and the bench did), and by the load pool's clients side by side (``actors.loadrun.setup_bank``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def setup_times(accounts: int, overrides: dict) -> dict:
    import dtm_ray
    from actors.loadgen import bank_accounts_of, bank_setup_of
    from actors.loadrun import generators, setup_bank
    from dtm_ray.config import ClusterConfig

    cfg = ClusterConfig(f=1, log_level="WARNING", **overrides)
    out = {}
    with dtm_ray.start(cfg) as cluster:
        bank = bank_accounts_of(cluster, accounts)
        t0 = time.monotonic()
        bank_setup_of(cluster, bank, client="alice")
        out["one_client_sequential_s"] = round(time.monotonic() - t0, 2)
    with dtm_ray.start(cfg) as cluster:
        bank = bank_accounts_of(cluster, accounts)
        gens = generators(cluster, None)
        t0 = time.monotonic()
        _, txns = setup_bank(cluster, gens, bank, cfg.submit_timeout_s)
        out["pool_parallel_s"] = round(time.monotonic() - t0, 2)
    out.update(accounts_total=len(bank), transactions=txns)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="bank", choices=["bank", "hot-key"])
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=None, help="open loop at this many txn/s instead")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts per kv participant")
    parser.add_argument("--generators", type=int, default=None)
    parser.add_argument("--config", default="{}", help="ClusterConfig overrides as JSON")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--no-setup-comparison", action="store_true")
    args = parser.parse_args(argv)
    overrides = json.loads(args.config)
    result: dict = {}
    if not args.no_setup_comparison:
        result["setup"] = setup_times(args.accounts, overrides)
    if not args.setup_only:
        import dtm_ray
        from dtm_ray.config import ClusterConfig

        cfg = ClusterConfig(f=1, log_level="WARNING", **overrides)
        with dtm_ray.start(cfg) as cluster:
            report = cluster.run_load(args.workload, concurrency=None if args.rate else args.concurrency,
                                      rate=args.rate, duration_s=args.duration, accounts=args.accounts,
                                      generators=args.generators)
        report.pop("timeline", None)
        report["config"] = overrides
        result["run_load"] = report
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
