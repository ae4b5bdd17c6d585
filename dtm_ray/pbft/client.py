"""The client side of PBFT (work in progress: constructor signature is stable)."""

from __future__ import annotations

from dtm_ray.crypto import KeyRing
from dtm_ray.node import Outbox, Ready
from dtm_ray.pbft.config import PbftConfig


class ClientCore:
    def __init__(self, client_id: str, config: PbftConfig, keys: KeyRing) -> None:
        self.node_id = client_id
        self.config = config
        self.keys = keys
        self._out = Outbox()

    def submit(self, operation: bytes) -> int:
        raise NotImplementedError

    def receive(self, sender: str, payload: bytes) -> None:
        raise NotImplementedError

    def tick(self, now_ms: int) -> None:
        raise NotImplementedError

    def take_ready(self) -> Ready:
        return self._out.take()
