"""Which core each kind of party runs, built from a plain ``spec`` (what Ray hands ``__init__``).

A spec is a dict of plain data, so that Ray can restart an actor by rerunning its constructor
with the same arguments: ``role``, ``party``, ``namespace``, ``config`` (``ClusterConfig.to_dict``),
``keys`` (this party's own ``KeyRing.to_dict``: nobody else's secrets), ``path`` (its directory)
and ``epoch`` (bumped by ``chaos.wipe``: a newer epoch than the directory's means "lost disk").
"""

from __future__ import annotations

import os
from typing import Any

from dtm_ray.config import ClusterConfig
from dtm_ray.crypto import KeyRing
from dtm_ray.storage_rocks import RocksStorage

ROLES = ("replica", "participant", "client", "kv-replica", "kv-client", "toy")


def open_storage(spec: dict) -> RocksStorage:
    """The party's RocksDB, emptied first if chaos wiped it since it was last opened."""
    path = spec["path"]
    os.makedirs(path, exist_ok=True)
    marker = os.path.join(path, "EPOCH")
    on_disk = int(open(marker).read()) if os.path.exists(marker) else 0
    if spec.get("epoch", 0) > on_disk:
        RocksStorage.destroy(os.path.join(path, "db"))
        with open(marker, "w") as fh:
            fh.write(str(spec["epoch"]))
    return RocksStorage(os.path.join(path, "db"))


NEXT_REQUEST_KEY = b"client/next_request_id"


def next_request_id(storage: RocksStorage) -> int:
    """Request ids must keep increasing across restarts (replicas treat a lower one as a replay),
    so the client actor persists the next one before a request leaves."""
    raw = storage.get(NEXT_REQUEST_KEY)
    return int(raw) if raw else 1


def build_core(spec: dict, storage: RocksStorage) -> Any:
    role, party = spec["role"], spec["party"]
    cfg = ClusterConfig.from_dict(spec["config"])
    keys = KeyRing.from_dict(spec["keys"])
    if role == "replica":
        from dtm_ray.pbft.replica import Replica
        from dtm_ray.txn.coordinator import CoordinatorApp

        return Replica(party, cfg.pbft_config(), keys, CoordinatorApp(party, cfg.txn_config(), keys), storage)
    if role == "kv-replica":  # the PBFT core alone, ordering a toy key-value store
        from dtm_ray.pbft.kvapp import KvApp
        from dtm_ray.pbft.replica import Replica

        return Replica(party, cfg.pbft_config(), keys, KvApp(), storage)
    if role == "participant":
        from dtm_ray.txn.participant import Participant

        return Participant(party, cfg.participants[party], cfg.txn_config(), keys, storage)
    if role == "client":
        from dtm_ray.txn.client import TxnClient

        return TxnClient(party, cfg.pbft_config(), keys, next_request_id(storage))
    if role == "kv-client":
        from dtm_ray.pbft.client import ClientCore

        return ClientCore(party, cfg.pbft_config(), keys, next_request_id(storage))
    if role == "toy":
        from actors.toy import ToyCore

        return ToyCore(party, storage)
    raise ValueError(f"unknown role {role!r}; roles: {ROLES}")
