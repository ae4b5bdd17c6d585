"""The per-party cost counters, exported as Ray metrics (``ray.util.metrics``).

``Host.counters`` (calls, messages and bytes in and out, fsyncs, signatures and MACs, core outputs)
are what ``cluster.status()`` reports; a Prometheus scraping the Ray cluster gets the same numbers
as ``dtm_<counter>_total{party=..., role=...}``, so a dashboard can divide any of them by
``dtm_out_executed_total`` for a per-transaction cost. The export runs once a second from the
host's loop: a metric update is a call into Ray's core worker, too dear for every message.
"""

from __future__ import annotations

import re
from typing import Any

EXPORTED = ("calls_in", "calls_out", "messages_in", "messages_out", "bytes_in", "bytes_out", "fsyncs",
            "crypto_sign", "crypto_verify", "crypto_mac", "crypto_mac_checked", "dropped_overflow",
            "rate_limited_in", "core_errors", "loop_errors")
OUTPUTS = ("out:Executed", "out:ViewChanged", "out:Evidence", "out:Rejected", "out:ClientResult")
PERIOD_MS = 1000


def metric_name(counter: str) -> str:
    return "dtm_" + re.sub(r"[^a-z0-9_]", "_", counter.lower())


class MetricsExporter:
    """Adds each counter's growth since the last export to a Ray ``Counter`` tagged with the party."""

    def __init__(self, party: str, role: str) -> None:
        from ray.util.metrics import Counter

        self.tags = {"party": party, "role": role}
        self._metrics = {name: Counter(metric_name(name), description=f"dtm-ray host counter {name}",
                                       tag_keys=("party", "role"))
                         for name in EXPORTED + OUTPUTS}
        self.exported: dict[str, float] = {name: 0 for name in self._metrics}
        self.last_ms = -PERIOD_MS

    def due(self, now_ms: int) -> bool:
        return now_ms - self.last_ms >= PERIOD_MS

    def maybe_export(self, counters: dict[str, Any], now_ms: int) -> bool:
        if not self.due(now_ms):
            return False
        self.last_ms = now_ms
        for name, metric in self._metrics.items():
            value = counters.get(name, 0)
            if value > self.exported[name]:
                metric.inc(value - self.exported[name], tags=self.tags)
                self.exported[name] = value
        return True
