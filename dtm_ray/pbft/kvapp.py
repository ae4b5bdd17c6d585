"""A small deterministic key-value ``App``: the state machine the PBFT core is tested with.

Operations are encoded ``KvOp`` messages (``put``, ``get``, ``incr``); results are encoded
``KvResult``. It has no proposals of its own unless a test hands it some (``propose``), and then
``verdicts`` lets the test decide what ``validate_proposal`` answers (ACCEPT by default).
"""

from __future__ import annotations

from dtm_ray.crypto import Envelope
from dtm_ray.pbft.app import Outgoing, ReplyItem, Verdict
from dtm_ray.wire import DecodeError, Message, Value, decode, encode

OPS = ("put", "get", "incr")


class KvOp(Message, tag=30):
    op: str  # one of OPS
    key: str
    value: Value  # put: the value; incr: the delta (int); get: None


class KvResult(Message, tag=31):
    ok: bool
    value: Value  # the value after the operation (get, put, incr), or the reason when not ok


class KvSnapshot(Message, tag=32):
    data: Value  # dict key -> value
    proposals_executed: tuple[bytes, ...]


def put(key: str, value) -> bytes:
    return encode(KvOp("put", key, value))


def get(key: str) -> bytes:
    return encode(KvOp("get", key, None))


def incr(key: str, delta: int = 1) -> bytes:
    return encode(KvOp("incr", key, delta))


def result(data: bytes) -> KvResult:
    return decode(data, KvResult)


class KvApp:
    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.proposals_executed: list[bytes] = []
        # soft state a test controls
        self.pending_proposals: list[bytes] = []
        self.verdicts: dict[bytes, Verdict] = {}

    # -- deterministic -----------------------------------------------------------------------
    def check_request(self, client: str, operation: bytes) -> str | None:
        try:
            op = decode(operation, KvOp)
        except DecodeError as exc:
            return f"not a KvOp: {exc}"
        if op.op not in OPS:
            return f"unknown operation {op.op!r}"
        if op.op == "incr" and type(op.value) is not int:
            return "incr needs an int delta"
        return None

    def refusal_result(self, client: str, request_id: int, reason: str) -> bytes:
        return encode(KvResult(False, reason))

    def execute(self, seq: int, client: str, request_id: int, operation: bytes) -> list[ReplyItem]:
        return [(client, request_id, encode(self._apply(operation)))]

    def _apply(self, operation: bytes) -> KvResult:
        try:
            op = decode(operation, KvOp)
        except DecodeError as exc:  # check_request ran at the primary only if it is correct
            return KvResult(False, f"not a KvOp: {exc}")
        if op.op == "put":
            self.data[op.key] = op.value
        elif op.op == "incr":
            current = self.data.get(op.key, 0)
            if type(current) is not int or type(op.value) is not int:
                return KvResult(False, "incr of a non-integer")
            self.data[op.key] = current + op.value
        elif op.op != "get":
            return KvResult(False, f"unknown operation {op.op!r}")
        return KvResult(True, self.data.get(op.key))

    def execute_proposal(self, seq: int, proposal: bytes) -> list[ReplyItem]:
        self.proposals_executed.append(proposal)
        if proposal in self.pending_proposals:
            self.pending_proposals.remove(proposal)
        return []

    def snapshot(self) -> bytes:
        return encode(KvSnapshot(dict(self.data), tuple(self.proposals_executed)))

    def restore(self, snapshot: bytes) -> None:
        snap = decode(snapshot, KvSnapshot)
        self.data = dict(snap.data)
        self.proposals_executed = list(snap.proposals_executed)
        self.pending_proposals = [p for p in self.pending_proposals if p not in self.proposals_executed]

    # -- soft state --------------------------------------------------------------------------
    def receive(self, env: Envelope) -> bool:
        return False

    def tick(self, now_ms: int) -> None:
        pass

    def proposals(self) -> list[bytes]:
        return [p for p in self.pending_proposals if p not in self.proposals_executed]

    def validate_proposal(self, proposal: bytes) -> Verdict:
        return self.verdicts.get(proposal, Verdict.ACCEPT)

    def take_messages(self) -> list[Outgoing]:
        return []
