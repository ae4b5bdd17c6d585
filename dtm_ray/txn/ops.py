"""Operations a transaction is made of, and the result a client gets back.

An ``Op`` names its participant and what to do there. Participant kinds and their operations:

- ``kv`` (a database): ``get``, ``put``, ``add(delta, min=None, max=None)``, ``append``, ``delete``;
- ``queue`` (a message queue): ``enqueue(item)``, ``dequeue()``.

What each op reads (``TxnResult.reads`` holds one value per op, in op order, ``None`` for every
op of an aborted transaction):

- ``get`` -> the value (``None`` if absent); ``add`` -> the new integer value;
- ``dequeue`` -> the head item (``None`` if the queue is empty);
- ``put``, ``append``, ``delete``, ``enqueue`` -> ``None``.

``Op`` is a wire message (kind 40): the same object travels inside the client's request.
Building an op with bad arguments raises ``InvalidOp`` at once; a decoded op from the wire is
checked with ``problem()``, which returns the reason instead of raising.
"""

from __future__ import annotations

from typing import Any

from dtm_ray.errors import LocalError, RemoteProtocolError
from dtm_ray.wire import Message, Value, check_value

KV_OPS = ("get", "put", "add", "append", "delete")
QUEUE_OPS = ("enqueue", "dequeue")
OPS_OF_KIND = {"kv": KV_OPS, "queue": QUEUE_OPS}
MAX_NAME_CHARS = 256


class InvalidOp(LocalError, ValueError):
    """An operation built with bad arguments."""


def _is_int(x: Any) -> bool:
    return type(x) is int


class Op(Message, tag=40):
    participant: str
    kind: str  # one of KV_OPS or QUEUE_OPS
    key: str  # "" for queue operations
    value: Value  # put/append: the value; add: the delta; enqueue: the item; else None
    min: int | None  # add only: the guard
    max: int | None

    # -- constructors (the public API) ----------------------------------------------------------
    @classmethod
    def get(cls, participant: str, key: str) -> "Op":
        return cls._checked(participant, "get", key, None)

    @classmethod
    def put(cls, participant: str, key: str, value: Any) -> "Op":
        return cls._checked(participant, "put", key, value)

    @classmethod
    def add(cls, participant: str, key: str, delta: int, min: int | None = None,
            max: int | None = None) -> "Op":
        return cls._checked(participant, "add", key, delta, min, max)

    @classmethod
    def append(cls, participant: str, key: str, value: Any) -> "Op":
        return cls._checked(participant, "append", key, value)

    @classmethod
    def delete(cls, participant: str, key: str) -> "Op":
        return cls._checked(participant, "delete", key, None)

    @classmethod
    def enqueue(cls, participant: str, item: Any) -> "Op":
        return cls._checked(participant, "enqueue", "", item)

    @classmethod
    def dequeue(cls, participant: str) -> "Op":
        return cls._checked(participant, "dequeue", "", None)

    @classmethod
    def _checked(cls, participant, kind, key, value, min=None, max=None) -> "Op":
        if kind in ("put", "append", "enqueue"):
            try:
                value = check_value(value)
            except (RemoteProtocolError, TypeError, ValueError, OverflowError) as exc:
                raise InvalidOp(f"{kind} on {participant!r}: value is not a wire Value: {exc}") from None
        op = cls(participant, kind, key, value, min, max)
        reason = op.problem()
        if reason is not None:
            raise InvalidOp(reason)
        return op

    # -- validation, shared by the constructors and the coordinator -----------------------------
    def problem(self) -> str | None:
        """Why this op is malformed (whatever the participant's kind), or None."""
        if not isinstance(self.participant, str) or not self.participant:
            return "an op needs a participant name"
        if len(self.participant) > MAX_NAME_CHARS or len(self.key) > MAX_NAME_CHARS:
            return f"participant and key names are at most {MAX_NAME_CHARS} characters"
        if self.kind in KV_OPS:
            return self._kv_problem()
        if self.kind in QUEUE_OPS:
            if self.key != "":
                return f"{self.kind} takes no key"
            if self.kind == "dequeue" and self.value is not None:
                return "dequeue takes no value"
            return self._no_guard()
        return f"unknown op kind {self.kind!r}; expected one of {KV_OPS + QUEUE_OPS}"

    def _kv_problem(self) -> str | None:
        where = f"{self.kind} on {self.participant} {self.key!r}"
        if not self.key:
            return f"{self.kind} on {self.participant} needs a non-empty key"
        if self.kind == "add":
            if not _is_int(self.value):
                return f"{where}: delta must be an int, got {type(self.value).__name__}"
            for name, bound in (("min", self.min), ("max", self.max)):
                if bound is not None and not _is_int(bound):
                    return f"{where}: {name} must be an int or None"
            if self.min is not None and self.max is not None and self.min > self.max:
                return f"{where}: min {self.min} > max {self.max}"
            return None
        if self.kind in ("get", "delete") and self.value is not None:
            return f"{where} takes no value"
        return self._no_guard()

    def _no_guard(self) -> str | None:
        if self.min is not None or self.max is not None:
            return f"{self.kind} takes no min/max guard"
        return None

    def lock_key(self) -> str:
        """What this op locks at its participant: the key, or the whole queue."""
        return self.key


class TxnResult(Message, tag=42):
    """What a client learns about its transaction (accepted on f+1 matching replies)."""

    committed: bool
    outcome: str  # "commit" or "abort"
    txn_id: str  # f"{client_id}:{request_id}"
    reads: Value  # a list: one value per op (all None when aborted)
    reason: str | None  # why it aborted: a failed guard, a vote timeout, an invalid request


def txn_id_of(client: str, request_id: int) -> str:
    """The id of a transaction: its client and the PBFT request id it was submitted with."""
    return f"{client}:{request_id}"
