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
