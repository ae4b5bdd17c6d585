"""Child driver for tests/test_ray_sigkill.py (run as a script, never collected).

    python tests/sigkill_driver.py ADDRESS DATA_DIR commit   -> commits, prints JSON, then waits
    python tests/sigkill_driver.py ADDRESS DATA_DIR recover  -> recovers, prints JSON, exits
"""

from __future__ import annotations

import json
import sys
import time

import dtm_ray
from dtm_ray import ClusterConfig, Op


def main(address: str, data_dir: str, phase: str) -> None:
    cfg = ClusterConfig(f=1, address=address, data_dir=data_dir, log_level="WARNING")
    deadline = time.monotonic() + 120
    while True:  # the head started just now and may not accept drivers yet
        try:
            cluster = dtm_ray.start(cfg)
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    alice = cluster.client("alice")
    if phase == "commit":
        acked = []
        assert alice.submit([Op.put("db-0", "a", 100), Op.put("db-1", "b", 100)]).committed
        for i in range(6):
            r = alice.submit([Op.add("db-0", "a", -1, min=0), Op.add("db-1", "b", 1),
                              Op.enqueue("mq-0", i)])
            if r.committed:
                acked.append(i)
        print(json.dumps({"acked": acked}), flush=True)
        time.sleep(600)  # SIGKILLed here, with everything else
    else:
        deadline = time.monotonic() + 60
        while True:  # wait until every participant applied what was decided before the kill
            status = cluster.status()["participants"]
            if all(s.get("alive") and s.get("prepared") == 0 for s in status.values()):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        out = {name: cluster.participant_state(name) for name in cfg.participants}
        r = alice.submit([Op.get("db-0", "a")])
        out["after"] = r.committed
        print(json.dumps(out), flush=True)
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
