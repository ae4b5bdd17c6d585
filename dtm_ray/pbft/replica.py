"""The PBFT replica (work in progress: constructor signature is stable)."""

from __future__ import annotations

from dtm_ray.crypto import KeyRing
from dtm_ray.node import Outbox, Ready, Storage
from dtm_ray.pbft.app import App
from dtm_ray.pbft.config import PbftConfig


class Replica:
    def __init__(self, replica_id: str, config: PbftConfig, keys: KeyRing, app: App, storage: Storage) -> None:
        self.node_id = replica_id
        self.config = config
        self.keys = keys
        self.app = app
        self.storage = storage
        self._out = Outbox()

    def receive(self, sender: str, payload: bytes) -> None:
        raise NotImplementedError

    def tick(self, now_ms: int) -> None:
        raise NotImplementedError

    def take_ready(self) -> Ready:
        return self._out.take()

    def status(self) -> dict:
        raise NotImplementedError
