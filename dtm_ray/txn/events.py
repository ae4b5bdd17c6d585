"""What the transaction layer reports to its host through ``Ready.outputs`` (read by checkers,
metrics and the audit log; the protocol never depends on anyone reading them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Applied:
    """A participant applied a decision (the atomicity checker's input)."""

    participant: str
    txn_id: str
    pseq: int
    commit: bool
    voted_yes: bool | None  # its own vote; None if it never voted (aborted before its turn)


@dataclass(frozen=True, slots=True)
class Voted:
    participant: str
    txn_id: str
    pseq: int
    yes: bool
    reason: str | None


# -- the coordinator's audit events (one replica's view of a transaction's life) ------------------


@dataclass(frozen=True, slots=True)
class Ordered:
    """The transaction request executed at log sequence number ``seq`` (its pseqs are assigned)."""

    txn_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class PreparesSent:
    """First PREPAREs sent: ``participants[i]`` gets pseq ``pseqs[i]`` (resends are not reported)."""

    txn_id: str
    participants: tuple[str, ...]
    pseqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Decided:
    """The DECIDE executed at ``seq``: the outcome is final, the reply and decisions go out."""

    txn_id: str
    outcome: str  # "commit" or "abort"
    seq: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class Final:
    """Every participant acknowledged the decision: nothing left to resend for this transaction."""

    txn_id: str
