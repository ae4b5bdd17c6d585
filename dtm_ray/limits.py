"""Bounded helpers against floods: a per-key token bucket and a rate-limited reporter.

Pure (no clock reads: callers pass ``now_ms``), so the cores, the simulator and the actor hosts
can all use them, and tests drive them with virtual time.

- ``TokenBucket``: per key (a sender, a client), at most ``burst`` at once and ``rate_per_s``
  sustained; the table of keys is bounded (``max_keys``; beyond it, unknown keys share one
  bucket, the table's last place, so a flood of invented sender names cannot grow memory).
- ``Throttle``: decides whether one occurrence of ``(kind, key)`` should be *reported* (logged)
  now: the first one at once, then at most one per ``period_ms`` with the number suppressed in
  between, so a flood of rejected messages writes a bounded number of log lines and a disk
  cannot be filled by an attacker. The suppressed counts are never lost: ``summary()``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dtm_ray.errors import ConfigError

OTHERS = "<others>"  # the shared key beyond ``max_keys``


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_ms: int


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 1_000) -> None:
        if rate_per_s <= 0 or burst <= 0 or max_keys <= 0:
            raise ConfigError(f"TokenBucket needs positive rate, burst and max_keys, got "
                              f"{rate_per_s}, {burst}, {max_keys}")
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self.refused: dict[str, int] = {}

    def allow(self, key: str, now_ms: int, cost: int = 1) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        if key not in self._buckets and len(self._buckets) >= self.max_keys - 1:
            key = OTHERS  # the last place of the table is the shared one
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now_ms)
        elapsed = max(0, now_ms - bucket.last_ms)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_ms)
        bucket.last_ms = max(bucket.last_ms, now_ms)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.refused[key] = self.refused.get(key, 0) + 1  # key is one of the table's
        return False

    def __len__(self) -> int:
        return len(self._buckets)


class Throttle:
    def __init__(self, period_ms: int = 10_000, *, max_keys: int = 1_000) -> None:
        if period_ms <= 0 or max_keys <= 0:
            raise ConfigError(f"Throttle needs positive period_ms and max_keys, got {period_ms}, {max_keys}")
        self.period_ms = period_ms
        self.max_keys = max_keys
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._suppressed: dict[tuple[str, str], int] = {}
        self.total: dict[tuple[str, str], int] = {}

    def report(self, kind: str, key: str, now_ms: int) -> int | None:
        """None: stay quiet. Otherwise report now, and the int is how many occurrences of
        ``(kind, key)`` were suppressed since the last report."""
        slot = (kind, key)
        if slot not in self._last and len(self._last) >= self.max_keys - 1:
            slot = (kind, OTHERS)  # the last place of the table is the shared one
        self.total[slot] = self.total.get(slot, 0) + 1
        last = self._last.get(slot)
        if last is not None and now_ms - last < self.period_ms:
            self._suppressed[slot] = self._suppressed.get(slot, 0) + 1
            return None
        self._last[slot] = now_ms
        return self._suppressed.pop(slot, 0)

    def summary(self) -> dict[str, int]:
        """Occurrences per ``kind:key`` (reported or not): for ``status()``."""
        return {f"{kind}:{key}": n for (kind, key), n in self.total.items()}
