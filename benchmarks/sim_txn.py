"""Simulator-only throughput and costs of 2-participant transfers (2PC on the PBFT log).

    python -m benchmarks.sim_txn [--txns N] [--clients C [C ...]] [--cache]
        [--max-waiting B] [--vote-timeout-ms T] [--timeouts-ms T]

(several ``--clients`` values sweep the load: CPU per transaction should stay flat.)

Prints JSON. n = 4 (and 7) replicas running the coordinator, two kv participants, closed-loop
clients each sending transfers ``add(db-0, acct, -1, min=0)`` + ``add(db-1, acct, +1)`` over a
healthy simulated network, all in this one process, so

- ``committed_per_cpu_s``: committed transactions per second of this process's CPU
  (``time.process_time``), i.e. of the *whole system* (replicas, participants, clients);
- ``slots_per_txn``: PBFT sequence numbers executed (by R0) per committed transaction: each
  transaction needs its request and its DECIDE ordered, and batching packs many in one slot;
- ``messages_per_txn``, ``bytes_per_txn``: everything on the simulated network;
- ``signatures_per_txn``, ``verifications_per_txn``: Ed25519 operations (with ``--cache`` the
  simulator answers repeated verifications of one signature from a cache, as CI does; the
  default pays each one, as separate processes would); ``macs_per_txn``: HMAC-SHA256s computed
  (made and checked). ``--auth ed25519`` signs client requests instead of MACing them.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from dtm_ray.crypto import CRYPTO_OPS
from dtm_ray.faults import make_behaviour
from dtm_ray.pbft.events import Executed, ViewChanged
from dtm_ray.sim.txn_world import build_txn_world
from dtm_ray.txn.ops import Op


class TransferWorkload:
    """Transfers between ``accounts`` funded accounts on db-0 and db-1, round robin. The setup is
    one transaction (at most ``max_ops`` = 64 puts), so 50 accounts: with more clients than that,
    concurrent transfers share accounts and queue on their locks (400 clients: ~8 per account),
    and a PREPARE waiting in such a queue past ``resend_ms`` is resent. So the figures include
    some lock contention, unlike the Ray bench's default of 10,000 accounts per participant."""

    name = "transfers"

    def __init__(self, accounts: int = 50) -> None:
        self.accounts = accounts
        self.i = 0

    def setup(self) -> list[Op]:
        return [Op.put("db-0", f"acct:{i}", 10 ** 9) for i in range(self.accounts)]

    def next_ops(self) -> list[Op]:
        self.i += 1
        account = f"acct:{self.i % self.accounts}"
        return [Op.add("db-0", account, -1, min=0), Op.add("db-1", account, 1)]

    def check(self, world) -> list:
        return []


CLIENT_TICK_MS = 500  # clients resend after client_retry_ms (5 s): ticking idle ones every 10 ms is simulator cost


def measure(n: int, clients: int, txns: int, cache: bool, batch: int, batch_wait_ms: int = 2, seed: int = 1,
            auth: str = "hmac", max_waiting: int | None = None, vote_timeout_ms: int = 5_000,
            timeouts_ms: int = 5_000, byzantine: str | None = None) -> dict:
    pbft = {"batch_size": batch, "batch_wait_ms": batch_wait_ms, "checkpoint_interval": 16, "watermark_window": 64,
            "view_change_timeout_ms": timeouts_ms, "client_retry_ms": timeouts_ms, "auth_scheme": auth}
    if max_waiting is not None:
        pbft["max_waiting_requests"] = max_waiting
    world = build_txn_world(seed, n, clients=clients, participants={"db-0": "kv", "db-1": "kv"},
                            client_tick_ms=CLIENT_TICK_MS, pbft=pbft, txn={"vote_timeout_ms": vote_timeout_ms},
                            client_pair_keys=False)
    world.verify_cache.enabled = cache
    if byzantine:  # on the primary, from the first request: its view change is part of the run
        world.make_byzantine("R0", make_behaviour(byzantine, keys=world.keys["R0"], config=world.config,
                                                  rng=random.Random(seed)), byzantine)
    per_client = max(1, txns // clients)
    macs_before = CRYPTO_OPS["mac"]
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    world.start(TransferWorkload(), per_client)
    peak_pending = sample_pending(world)
    done = world.sim.run_until(world.done, 600_000)
    answered_ms = world.sim.now_ms
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start_wall
    world.sim.run_until(world.quiescent, 60_000)  # the last decisions reach the participants
    results = world.results().values()
    committed = sum(r.committed for r in results)
    slots = len({o.output.seq for o in world.sim.outputs if isinstance(o.output, Executed) and o.party == "R0"})
    net, vc = world.sim.network.counters, world.verify_cache
    return {
        "n": n, "byzantine": byzantine, "auth_scheme": auth, "clients": clients, "client_tick_ms": CLIENT_TICK_MS, "batch_size": batch, "batch_wait_ms": batch_wait_ms, "verify_cache": cache, "finished": done,
        "committed": committed, "aborted": len(results) - committed,
        "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
        "committed_per_cpu_s": round(committed / cpu, 1) if cpu else None,
        "cpu_us_per_txn": round(cpu * 1e6 / committed) if committed else None,
        "virtual_ms": world.sim.now_ms,
        "slots_per_txn": round(slots / committed, 3) if committed else None,
        "messages_per_txn": round(net.messages / committed, 1) if committed else None,
        "bytes_per_txn": round(net.bytes / committed) if committed else None,
        "signatures_per_txn": round(vc.signatures / committed, 2) if committed else None,
        "verifications_per_txn": round((vc.verifications + vc.hits) / committed, 2) if committed else None,
        "macs_per_txn": round((CRYPTO_OPS["mac"] - macs_before) / committed, 2) if committed else None,  # HMACs made + checked
        "db1_total": sum(world.sim.node("db-1").state().values()),
        **admission_figures(world, peak_pending, committed, answered_ms),
    }


def sample_pending(world, every_ms: int = 20) -> dict:
    """The most requests waiting at any replica (``requests_waiting``), sampled every ``every_ms``."""
    peak = {"waiting": 0}

    def sample(sim) -> None:
        peak["waiting"] = max([peak["waiting"]] + [sim.node(r).requests_waiting() for r in world.replicas])
        if not world.done():
            sim.schedule(sim.now_ms + every_ms, sample)

    world.sim.schedule(world.sim.now_ms, sample)
    return peak


def admission_figures(world, peak_pending: dict, committed: int, answered_ms: int) -> dict:
    """Admission control (``dtm_ray.pbft.admission``): the bound, how high the queue got, BUSY
    answers, client back-offs, forwards, view changes; committed per simulated second."""
    admission = [world.sim.node(r).status()["admission"] for r in world.replicas]
    return {
        "max_waiting_requests": world.config.max_waiting_requests,
        "waiting_high_water_sampled": peak_pending["waiting"],
        "waiting_high_water": max(a["high_water"] for a in admission),
        "refused_busy": sum(a["refused_busy"] for a in admission),
        "busy_sent": sum(a["busy_sent"] for a in admission),
        "client_backoffs": sum(world.sim.node(c).core.busy_backoffs for c in world.clients),
        "forwards": sum(a["forwarded"] for a in admission),
        "forwards_suppressed": sum(a["forwards_suppressed"] for a in admission),
        "view_changes": sum(1 for o in world.sim.outputs if isinstance(o.output, ViewChanged)),
        "committed_per_virtual_s": round(committed * 1000 / answered_ms, 1) if answered_ms else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txns", type=int, default=400)
    parser.add_argument("--clients", type=int, nargs="+", default=[40])
    parser.add_argument("--cache", action="store_true", help="simulator verification cache (as CI)")
    parser.add_argument("--n", type=int, nargs="*", default=[4, 7])
    parser.add_argument("--batch-wait-ms", type=int, nargs="*", default=[2, 20],
                        help="how long the primary waits to fill a batch (virtual ms)")
    parser.add_argument("--auth", choices=("hmac", "ed25519"), default="hmac",
                        help="client request authentication (hmac: the default of PbftConfig)")
    parser.add_argument("--max-waiting", type=int, default=None,
                        help="PbftConfig.max_waiting_requests, the admission bound (default: the config's)")
    parser.add_argument("--vote-timeout-ms", type=int, default=5_000,
                        help="TxnConfig.vote_timeout_ms (its default is 2000)")
    parser.add_argument("--timeouts-ms", type=int, default=5_000,
                        help="view_change_timeout_ms and client_retry_ms")
    parser.add_argument("--byzantine", nargs="*", default=[None],
                        help="replica behaviours (dtm_ray.faults) to give the primary R0, one run each")
    args = parser.parse_args()
    runs = [measure(n, clients, args.txns, args.cache, 100, wait, auth=args.auth, max_waiting=args.max_waiting,
                    vote_timeout_ms=args.vote_timeout_ms, timeouts_ms=args.timeouts_ms, byzantine=byzantine)
            for clients in args.clients for n in args.n for wait in args.batch_wait_ms for byzantine in args.byzantine]
    print(json.dumps({"benchmark": "sim_txn", "workload": "2-participant transfers", "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
