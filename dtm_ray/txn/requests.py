"""Which client requests the coordinator takes: the rule, and the requests it already found valid.

A request is valid when it decodes as a ``TxnRequest`` of 1..``max_ops`` ops, each a well-formed
op of a configured participant, of a kind that participant offers, and allowed by the client's
policy. That depends on the request's bytes, its client and the configuration alone, so every
correct replica finds the same. A replica checks a request when it takes it in (``check``) and
would check it again when it executes it in log order; the second check can only repeat the
first, so ``for_execution`` takes the request found valid at intake, decoded, instead.
"""

from __future__ import annotations

from collections import OrderedDict

from dtm_ray.errors import DecodeError
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.messages import TxnRequest
from dtm_ray.txn.ops import OPS_OF_KIND
from dtm_ray.wire import decode

CHECKED_CACHE = 2048  # requests between intake and execution (the clients waiting at once, mostly)


class RequestRules:
    def __init__(self, config: TxnConfig, max_entries: int = CHECKED_CACHE) -> None:
        self.config = config
        self.max_entries = max_entries
        self._valid: OrderedDict[tuple[str, bytes], TxnRequest] = OrderedDict()  # oldest first out

    def check(self, client: str, operation: bytes) -> str | None:
        """Why ``client`` may not submit ``operation`` (None: it may); a valid one is kept."""
        try:
            request = decode(operation, TxnRequest)
        except DecodeError as exc:
            return f"invalid request: {exc}"
        problem = self.problem(client, request)
        if problem is None:
            self._valid[(client, operation)] = request
            while len(self._valid) > self.max_entries:
                self._valid.popitem(last=False)
        return problem

    def for_execution(self, client: str, operation: bytes) -> tuple[TxnRequest | None, str | None]:
        """(the request, None) if it is valid; (the request or None if it does not decode, why not)."""
        request = self._valid.pop((client, operation), None)
        if request is not None:
            return request, None  # found valid at intake
        try:
            request = decode(operation, TxnRequest)
        except DecodeError as exc:
            return None, f"invalid request: {exc}"
        return request, self.problem(client, request)

    def problem(self, client: str, request: TxnRequest) -> str | None:
        if not request.ops:
            return "invalid request: a transaction needs at least one op"
        if len(request.ops) > self.config.max_ops:
            return f"invalid request: {len(request.ops)} ops exceed max_ops {self.config.max_ops}"
        policy = self.config.policy(client)
        for op in request.ops:
            reason = op.problem()
            kind = self.config.participants.get(op.participant)
            if reason is None and kind is None:
                reason = f"unknown participant {op.participant!r}"
            if reason is None and op.kind not in OPS_OF_KIND[kind]:
                reason = f"{op.kind} is not an operation of {op.participant} (a {kind})"
            if reason is None and policy is not None:
                reason = policy.refusal(op.participant, op.kind)
            if reason is not None:
                return f"invalid request: {reason}"
        return None
