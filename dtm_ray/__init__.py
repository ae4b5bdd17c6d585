"""dtm-ray: a distributed transaction manager with a Byzantine-fault-tolerant coordinator.

The public names are loaded lazily, so that ``import dtm_ray`` stays cheap and never imports Ray:
Ray is imported only when ``dtm_ray.start`` (or ``connect``) is called.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterConfig": "dtm_ray.config",
    "start": "dtm_ray.api",
    "connect": "dtm_ray.session",  # attach to a cluster `dtm-ray start` runs
    "Cluster": "dtm_ray.api",
    "Client": "dtm_ray.api",
    "Op": "dtm_ray.txn.ops",
    "TxnResult": "dtm_ray.txn.ops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dtm_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
