"""The contract between the PBFT replica and the deterministic application it orders.

The replica orders two kinds of entries into a batch (one PRE-PREPARE per sequence number):

- **client requests**: authenticated by their client, admitted by ``check_request``;
- **proposals**: entries the application itself wants ordered (the transaction layer's DECIDE),
  produced by ``proposals()`` on every replica from what it has seen (participant votes), put into
  batches by the primary, and checked by every backup with ``validate_proposal`` before it
  prepares. A backup that keeps seeing a proposal it considers due not being ordered treats that
  like a stalled client request: its timer fires and it starts a view change. That is how a primary
  that never proposes DECIDE is replaced.

Within one batch, proposals execute before requests, each in batch order.

Everything here must be deterministic in the ordered log, except what is explicitly soft state
(``receive``/``tick``/``proposals``/``validate_proposal`` may depend on votes this replica saw and
on its clock; ``execute*`` must not).

The App's soft state changes only through ``receive`` (returning True), ``tick``, ``execute*``
and ``restore``: the replica asks ``proposals()`` again, and re-checks the pre-prepares it holds
(``validate_proposal``), only after one of those, not on every message.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from dtm_ray.crypto import Envelope

ReplyItem = tuple[str, int, bytes]  # (client, request_id, result)
Outgoing = tuple[str, bytes]  # (destination, payload)


class Verdict(enum.Enum):
    ACCEPT = "accept"  # prepare it
    WAIT = "wait"  # not yet (e.g. a vote timeout not expired here, or not executed that far): retry
    REJECT = "reject"  # provably invalid (forged evidence): misbehaviour of the primary


class App(Protocol):
    # -- deterministic, part of the replicated state ---------------------------------------------
    def check_request(self, client: str, operation: bytes) -> str | None:
        """A reason to refuse this request before ordering (malformed, too large, not permitted),
        or None. Pure function of its arguments and the configuration."""

    def refusal_result(self, client: str, request_id: int, reason: str) -> bytes:
        """The reply to a request ``check_request`` refused, carrying ``reason``: a result the
        client reads like any other (a pure function, so f+1 correct replicas send the same bytes
        and the client accepts it as it accepts an executed result)."""

    def execute(self, seq: int, client: str, request_id: int, operation: bytes) -> list[ReplyItem]:
        """Execute an ordered client request. Returns the replies it produces now: usually this
        request's own, none if its reply is deferred (a transaction replies at its DECIDE)."""

    def execute_proposal(self, seq: int, proposal: bytes) -> list[ReplyItem]:
        """Execute an ordered proposal; returns the (deferred) replies it completes."""

    def snapshot(self) -> bytes:
        """The application state, canonically encoded (its digest goes into CHECKPOINTs)."""

    def restore(self, snapshot: bytes) -> None:
        """Replace the state with a verified snapshot (state transfer, recovery)."""

    # -- soft state: this replica's view of the outside world -------------------------------------
    def receive(self, env: Envelope) -> bool:
        """An application message (participant vote or ack). Returns False if it is not one."""

    def tick(self, now_ms: int) -> None: ...

    def proposals(self) -> list[bytes]:
        """Proposals this replica believes are due to be ordered, oldest first."""

    def validate_proposal(self, proposal: bytes) -> Verdict: ...

    def take_messages(self) -> list[Outgoing]:
        """Messages the application wants sent (decisions and prepares to participants); they
        leave after the replica's writes of this step are durable."""

    # Optional: ``take_events() -> list`` (observations for the host, e.g. the transaction layer's
    # audit events; an ``Evidence`` among them is recorded and counted by the replica). An app
    # without it (KvApp) reports none: see ``take_events`` below, which the replica calls.
    # Optional: ``open_requests() -> int``, how many executed client requests still wait for
    # their reply (a transaction waits for its DECIDE): they count against the replica's
    # admission bound (``intake``) like requests not ordered yet. Without it: 0.


def take_events(app: object) -> list[Any]:
    """What ``app`` wants reported through ``Ready.outputs`` since the last call (none if it does
    not implement the optional ``take_events``)."""
    method = getattr(app, "take_events", None)
    return method() if method is not None else []


def open_requests(app: object) -> int:
    """How many executed requests of ``app`` still wait for their reply (0 if it does not say)."""
    method = getattr(app, "open_requests", None)
    return method() if method is not None else 0
