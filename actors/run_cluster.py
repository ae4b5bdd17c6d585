"""Run a DTM cluster on a running Ray cluster until interrupted (the command ``cluster.yaml``
documents): ``python -m actors.run_cluster --config dtm.yaml [--status-every 10]``.

The configuration's ``address`` defaults to ``auto`` here (join the Ray cluster of this machine);
``data_dir`` should be a path that exists on every node (each party writes below it on its node).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

import dtm_ray
from dtm_ray.config import ClusterConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a .yaml or .toml ClusterConfig file")
    parser.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    args = parser.parse_args(argv)
    cfg = ClusterConfig.from_file(args.config) if args.config else ClusterConfig()
    if cfg.address is None:
        cfg = cfg.replace(address="auto")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with dtm_ray.start(cfg) as cluster:
        print(json.dumps({"started": True, "namespace": cluster.namespace, "data_dir": cluster.data_dir}))
        while not stop.wait(args.status_every):
            status = cluster.status()
            print(json.dumps({"replicas": [{k: r.get(k) for k in ("id", "alive", "view", "executed_seq", "node")}
                                           for r in status["replicas"]]}), flush=True)


if __name__ == "__main__":
    main()
