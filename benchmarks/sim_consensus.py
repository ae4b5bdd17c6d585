"""Simulator-only PBFT consensus throughput and costs per committed request.

    python -m benchmarks.sim_consensus [--requests N] [--cache]

Prints JSON. For n = 4 and 7 and batch sizes 1 and 100, the whole cluster (replicas with KvApp
and closed-loop clients) runs in this one process over a healthy simulated network, so

- ``committed_per_cpu_s`` is committed client requests per second of this process's CPU
  (``time.process_time``): the CPU the *whole cluster* spends, not one replica's;
- ``messages_per_request`` and ``bytes_per_request`` count every message on the simulated network
  (client requests, protocol messages, replies) divided by the requests committed;
- ``signatures_per_request`` / ``verifications_per_request`` count Ed25519 operations. With
  ``--cache`` the simulator's verification cache answers repeated verifications of one signature
  (as CI does); the default pays every verification, as n separate processes would;
  ``macs_per_request``: HMAC-SHA256s computed (made and checked). ``--auth ed25519`` signs
  client requests instead of MACing them.
"""

from __future__ import annotations

import argparse
import json
import time

from dtm_ray.crypto import CRYPTO_OPS
from dtm_ray.pbft.events import Executed
from dtm_ray.sim.pbft_world import build_world, small_config


def measure(n: int, batch: int, requests: int, cache: bool, seed: int = 1, auth: str = "hmac") -> dict:
    """Closed-loop clients, twice as many as fit in one batch, so that batches can fill."""
    clients = max(4, min(2 * batch, requests // 2))
    per_client = max(1, requests // clients)
    config = small_config(n, batch_size=batch, checkpoint_interval=16, watermark_window=64,
                          view_change_timeout_ms=5_000, client_retry_ms=5_000, auth_scheme=auth)
    world = build_world(seed, n, clients=clients, config=config, verify_cache=True)
    cache_stats = world.verify_cache
    cache_stats.enabled = cache  # disabled: it only counts, every verification is a real one
    macs_before = CRYPTO_OPS["mac"]
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    world.start_workload(per_client)
    done = world.sim.run_until(world.workload_done, 120_000)
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start_wall
    committed = len(world.answered() & world.submitted)
    net = world.sim.network.counters
    slots = {o.output.seq for o in world.sim.outputs if isinstance(o.output, Executed) and o.party == "R1"}
    return {
        "n": n, "auth_scheme": auth, "batch_size": batch, "clients": clients, "committed": committed, "all_answered": done,
        "virtual_ms": world.sim.now_ms, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
        "committed_per_cpu_s": round(committed / cpu, 1) if cpu else None,
        "committed_per_virtual_s": round(committed / (world.sim.now_ms / 1000), 1) if world.sim.now_ms else None,
        "slots": len(slots), "requests_per_slot": round(committed / max(1, len(slots)), 2),
        "messages_per_request": round(net.messages / committed, 2),
        "bytes_per_request": round(net.bytes / committed, 1),
        "signatures_per_request": round(cache_stats.signatures / committed, 2),
        "verifications_per_request": round(cache_stats.verifications / committed, 2),
        "cached_verifications_per_request": round(cache_stats.hits / committed, 2),
        "macs_per_request": round((CRYPTO_OPS["mac"] - macs_before) / committed, 2) if committed else None,  # HMACs made + checked
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300,
                        help="requests per configuration with batch size 1 (ten times as many with 100)")
    parser.add_argument("--cache", action="store_true", help="use the simulator's verification cache")
    parser.add_argument("--auth", choices=("hmac", "ed25519"), default="hmac",
                        help="client request authentication (hmac: the default of PbftConfig)")
    args = parser.parse_args()
    runs = [measure(n, batch, args.requests * (10 if batch > 1 else 1), args.cache, auth=args.auth)
            for n in (4, 7) for batch in (1, 100)]
    print(json.dumps({"benchmark": "sim_consensus", "verify_cache": args.cache, "requests": args.requests,
                      "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
