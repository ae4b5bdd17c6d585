"""The transaction client: a PBFT client whose operations are transactions.

``submit(ops)`` encodes the ops as a ``TxnRequest``, the operation of one PBFT request, and
returns its request id; the transaction's id is ``f"{client_id}:{request_id}"`` (``txn_id_of``).
The replicas reply when the transaction's DECIDE executes (the commit point), or at once with an
aborted result and the reason when they refuse it before ordering (policy, unknown participant or
op, too large: ``CoordinatorApp.refusal_result``); the PBFT client accepts either only on f+1
matching replies, and this client turns that result into a ``TxnResult`` in
``take_ready().outputs``. Requests of one client are handled one at a time, in order (the PBFT
client's rule); run several clients for concurrency. A cluster at its admission bound answers
BUSY and the PBFT client backs off (``dtm_ray.pbft.client``), so the transaction waits longer
instead of being refused: BUSY never becomes a result.
"""

from __future__ import annotations

import random

from dtm_ray.crypto import KeyRing
from dtm_ray.errors import DecodeError
from dtm_ray.node import Ready
from dtm_ray.pbft.client import ClientCore
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import ClientResult
from dtm_ray.txn.messages import TxnRequest
from dtm_ray.txn.ops import InvalidOp, Op, TxnResult, txn_id_of
from dtm_ray.wire import decode, encode


class TxnClient:
    def __init__(self, client_id: str, pbft: PbftConfig, keys: KeyRing, first_request_id: int = 1,
                 rng: random.Random | None = None) -> None:
        self.node_id = client_id
        self.config = pbft
        self.core = ClientCore(client_id, pbft, keys, first_request_id, rng)  # rng: the busy backoff's jitter

    def submit(self, ops: list[Op]) -> int:
        """Send a transaction; returns its request id (its txn id is ``txn_id_of(client, id)``)."""
        ops = tuple(ops)
        if not ops:
            raise InvalidOp("a transaction needs at least one op")
        for op in ops:
            if not isinstance(op, Op):
                raise InvalidOp(f"not an Op: {op!r}")
        operation = encode(TxnRequest(ops))
        if len(operation) > self.config.max_request_bytes:
            raise InvalidOp(f"transaction of {len(operation)} bytes exceeds max_request_bytes "
                            f"{self.config.max_request_bytes}")
        return self.core.submit(operation)

    def txn_id(self, request_id: int) -> str:
        return txn_id_of(self.node_id, request_id)

    @property
    def outstanding(self) -> int:
        return self.core.outstanding

    def receive(self, sender: str, payload: bytes) -> None:
        self.core.receive(sender, payload)

    def tick(self, now_ms: int) -> None:
        self.core.tick(now_ms)

    def take_ready(self) -> Ready:
        ready = self.core.take_ready()
        ready.outputs = [self._result(o) if isinstance(o, ClientResult) else o for o in ready.outputs]
        return ready

    def _result(self, result: ClientResult) -> TxnResult:
        try:
            return decode(result.result, TxnResult)
        except DecodeError as exc:  # f+1 replicas agreed on it, so this is a bug, not an attack
            return TxnResult(False, "abort", self.txn_id(result.request_id), [], f"undecodable reply: {exc}")
