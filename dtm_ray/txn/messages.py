"""The transaction layer's messages (wire kinds 40..69) and how each one is authenticated.

Who sends what, and why that authentication:

- a client's ``TxnRequest`` is the opaque ``operation`` of a PBFT request (PBFT signs it);
- replica -> participant ``PrepareBatch`` and ``DecisionBatch`` are **MAC'd** pairwise: a
  participant acts only on f+1 matching copies from distinct replicas, so nobody else needs
  to verify them, and a MAC cannot be redirected to another participant;
- participant -> replicas ``VoteBatch`` is **signed**, once per flush: a vote is the evidence a
  DECIDE carries, which every replica re-verifies;
- participant -> replica ``AckBatch`` and ``Query`` are **MAC'd**;
- ``DecideBatch`` is an App proposal ordered by PBFT (the PRE-PREPARE's signature covers it):
  the signed vote batches it needs, each once, and decisions that point into them by index
  (evidence by reference: one vote batch proves many decisions). ``Decide`` is the one-decision
  form (each decision carrying its own copies), still accepted. ``Forget`` is the proposal that
  garbage-collects final transactions (see ``coordinator``).

Records a participant or a coordinator persists are messages of this module too, so storage goes
through the same strict decoder as the network.
"""

from __future__ import annotations

from dtm_ray.txn.ops import Op
from dtm_ray.wire import Value, message

# ---------------------------------------------------------------------------------------------
# Client -> replicas (inside a PBFT Request)


@message(41)
class TxnRequest:
    ops: tuple[Op, ...]


# ---------------------------------------------------------------------------------------------
# Replicas <-> participants


@message(43)
class PrepareItem:
    """Prepare ``txn_id`` at this participant's sequence number ``pseq`` with its ops there."""

    txn_id: str
    pseq: int
    ops: tuple[Op, ...]


@message(44)
class PrepareBatch:
    items: tuple[PrepareItem, ...]


@message(45)
class Vote:
    txn_id: str
    pseq: int
    yes: bool
    reads: Value  # a list, one value per op of this participant (empty when NO)
    reason: str | None  # why NO


@message(46)
class VoteBatch:
    participant: str
    votes: tuple[Vote, ...]


@message(47)
class DecisionItem:
    txn_id: str
    pseq: int
    commit: bool


@message(48)
class DecisionBatch:
    items: tuple[DecisionItem, ...]


@message(49)
class AckBatch:
    items: tuple[DecisionItem, ...]  # the decisions applied


@message(50)
class Query:
    """A participant in doubt asks the replicas for these outcomes."""

    items: tuple[DecisionItem, ...]  # txn_id and pseq; ``commit`` is ignored


# ---------------------------------------------------------------------------------------------
# The proposal PBFT orders


@message(51)
class Decide:
    txn_id: str
    commit: bool
    evidence: tuple[bytes, ...]  # sealed signed VoteBatch envelopes (empty: vote timeout)


@message(60)
class Decision:
    """One decision of a ``DecideBatch``: its evidence is indices into the batch's vote batches."""

    txn_id: str
    commit: bool
    evidence: tuple[int, ...]


@message(61)
class DecideBatch:
    vote_batches: tuple[bytes, ...]  # sealed signed VoteBatch envelopes, each once
    decisions: tuple[Decision, ...]


@message(62)
class Forget:
    """Final transactions (every participant acknowledged its decision) to drop from the state."""

    txn_ids: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Persisted records


@message(52)
class Slot:
    participant: str
    pseq: int


@message(53)
class PendingTxn:
    txn_id: str
    client: str
    request_id: int
    ops: tuple[Op, ...]
    slots: tuple[Slot, ...]  # one per participant touched, in order of first appearance


@message(54)
class DecidedTxn:
    txn_id: str
    commit: bool
    slots: tuple[Slot, ...]


@message(55)
class CoordinatorState:
    next_pseq: tuple[Slot, ...]  # per participant: the next pseq to assign
    pending: tuple[PendingTxn, ...]  # in execution order
    decided: tuple[DecidedTxn, ...]  # in decision order: not yet forgotten, within ``decided_bytes``
    executed: tuple[Slot, ...]  # per client: the last request id executed (``pseq`` holds it)


@message(56)
class KeyWrite:
    key: str
    deleted: bool
    value: Value


@message(57)
class PreparedRecord:
    """A participant's record of one accepted prepare, from acceptance to decision."""

    txn_id: str
    pseq: int
    ops: tuple[Op, ...]
    vote: Vote | None  # None while waiting for its locks
    writes: tuple[KeyWrite, ...]  # kv intents (when YES)
    dequeues: int  # queue intents (when YES)
    enqueues: Value  # a list of items


@message(58)
class EarlyDecision:
    """f+1 replicas decided a slot this participant has not reached yet."""

    txn_id: str
    pseq: int
    commit: bool


@message(59)
class Cell:
    """A stored value (kv data, queue items, counters)."""

    value: Value
