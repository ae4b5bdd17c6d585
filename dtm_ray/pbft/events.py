"""What a replica or client core reports to its host through ``Ready.outputs``.

The simulator's checkers, the actors' metrics and the audit log all read these; the protocol
never depends on anyone reading them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Executed:
    """A batch executed at ``seq`` (agreement: every correct replica reports one digest per seq)."""

    replica: str
    view: int
    seq: int
    digest: bytes
    requests: tuple[tuple[str, int], ...]  # (client, request_id) executed for the first time
    proposals: int  # number of application proposals executed


@dataclass(frozen=True, slots=True)
class ViewChanged:
    replica: str
    view: int  # the view this replica has entered (NEW-VIEW accepted or sent)


@dataclass(frozen=True, slots=True)
class CheckpointStable:
    replica: str
    seq: int
    state_digest: bytes
    log_entries: int  # entries kept in memory after garbage collection (boundedness check)


@dataclass(frozen=True, slots=True)
class StateTransferred:
    replica: str
    seq: int  # the stable checkpoint this replica installed


@dataclass(frozen=True, slots=True)
class Evidence:
    """Provable misbehaviour, kept with its proof (the authenticated messages)."""

    replica: str  # who recorded it
    accused: str
    kind: str  # e.g. "equivocation", "bad-auth", "invalid-proposal", "forged-certificate"
    proof: tuple[bytes, ...]
    txn_id: str | None = None  # the transaction the proof is about, if any (it joins the audit trail)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input refused without proof of misbehaviour (malformed bytes, bad MAC, stale, replayed)."""

    replica: str
    sender: str  # as claimed by the transport
    reason: str


@dataclass(frozen=True, slots=True)
class ClientResult:
    """A client core accepted a result on f+1 matching replies."""

    client: str
    request_id: int
    result: bytes
    view: int
