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

from collections.abc import Sequence
from typing import TypeVar

from dtm_ray.txn.ops import Op
from dtm_ray.wire import MAX_FIELD_BYTES, Message, Value, encode

# The most bytes of items one PrepareBatch, DecisionBatch or AckBatch carries: a quarter of the
# decoder's limit, so that however many transactions a flush holds, every batch decodes.
OUTGOING_BATCH_BYTES = MAX_FIELD_BYTES // 4

_Item = TypeVar("_Item")


def fitting_batches(batch_class, items: Sequence[_Item], budget: int = OUTGOING_BATCH_BYTES) -> list:
    """``batch_class(items)`` if it encodes within ``budget`` bytes, else the items cut in halves
    until every batch does (a single item larger than that travels alone; admission bounds items
    far below it). One encode of the batch in the usual case, not one per item."""
    batch = batch_class(tuple(items))
    if len(items) <= 1 or len(encode(batch)) <= budget:
        return [batch]
    half = len(items) // 2
    return fitting_batches(batch_class, items[:half], budget) + fitting_batches(batch_class, items[half:], budget)


class TxnRequest(Message, tag=41):
    ops: tuple[Op, ...]


# ---------------------------------------------------------------------------------------------
# Replicas <-> participants


class PrepareItem(Message, tag=43):
    """Prepare ``txn_id`` at this participant's sequence number ``pseq`` with its ops there."""

    txn_id: str
    pseq: int
    ops: tuple[Op, ...]


class PrepareBatch(Message, tag=44):
    items: tuple[PrepareItem, ...]


class Vote(Message, tag=45):
    txn_id: str
    pseq: int
    yes: bool
    reads: Value  # a list, one value per op of this participant (empty when NO)
    reason: str | None  # why NO


class VoteBatch(Message, tag=46):
    participant: str
    votes: tuple[Vote, ...]


class DecisionItem(Message, tag=47):
    txn_id: str
    pseq: int
    commit: bool


class DecisionBatch(Message, tag=48):
    items: tuple[DecisionItem, ...]


class AckBatch(Message, tag=49):
    items: tuple[DecisionItem, ...]  # the decisions applied


class Query(Message, tag=50):
    """A participant in doubt asks the replicas for these outcomes."""

    items: tuple[DecisionItem, ...]  # txn_id and pseq; ``commit`` is ignored


# ---------------------------------------------------------------------------------------------
# The proposal PBFT orders


class Decide(Message, tag=51):
    txn_id: str
    commit: bool
    evidence: tuple[bytes, ...]  # sealed signed VoteBatch envelopes (empty: vote timeout)


class Decision(Message, tag=60):
    """One decision of a ``DecideBatch``: its evidence is indices into the batch's vote batches."""

    txn_id: str
    commit: bool
    evidence: tuple[int, ...]


class DecideBatch(Message, tag=61):
    vote_batches: tuple[bytes, ...]  # sealed signed VoteBatch envelopes, each once
    decisions: tuple[Decision, ...]


class Forget(Message, tag=62):
    """Final transactions (every participant acknowledged its decision) to drop from the state."""

    txn_ids: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Persisted records


class Slot(Message, tag=52):
    participant: str
    pseq: int


class PendingTxn(Message, tag=53):
    txn_id: str
    client: str
    request_id: int
    ops: tuple[Op, ...]
    slots: tuple[Slot, ...]  # one per participant touched, in order of first appearance


class DecidedTxn(Message, tag=54):
    txn_id: str
    commit: bool
    slots: tuple[Slot, ...]


class CoordinatorState(Message, tag=55):
    next_pseq: tuple[Slot, ...]  # per participant: the next pseq to assign
    pending: tuple[PendingTxn, ...]  # in execution order
    decided: tuple[DecidedTxn, ...]  # in decision order: not yet forgotten, within ``decided_bytes``
    executed: tuple[Slot, ...]  # per client: the last request id executed (``pseq`` holds it)


class KeyWrite(Message, tag=56):
    key: str
    deleted: bool
    value: Value


class PreparedRecord(Message, tag=57):
    """A participant's record of one accepted prepare, from acceptance to decision."""

    txn_id: str
    pseq: int
    ops: tuple[Op, ...]
    vote: Vote | None  # None while waiting for its locks
    writes: tuple[KeyWrite, ...]  # kv intents (when YES)
    dequeues: int  # queue intents (when YES)
    enqueues: Value  # a list of items


class EarlyDecision(Message, tag=58):
    """f+1 replicas decided a slot this participant has not reached yet."""

    txn_id: str
    pseq: int
    commit: bool


class Cell(Message, tag=59):
    """A stored value (kv data, queue items, counters)."""

    value: Value
