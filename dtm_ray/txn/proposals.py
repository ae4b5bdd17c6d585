"""The proposals a coordinator offers PBFT, built once and cut by bytes.

Two kinds, both bounded by ``budget`` bytes (``TxnConfig.proposal_bytes``, far below the
decoder's field limit, so that PBFT can pack several into one PRE-PREPARE and a VIEW-CHANGE can
quote them):

- ``DecideBatch``: decisions that became due, with the signed vote batches they need, each
  batch once however many decisions it proves (evidence by reference);
- ``Forget``: final transactions to drop from the replicated state.

A proposal's bytes never change once built: PBFT tracks a proposal by its bytes (in flight at the
primary, waiting at a backup), so re-encoding a growing set would make it look new on every step.
``Pending`` keeps the proposals built and not yet executed, and which transactions each still
covers: a proposal leaves when the last of its transactions was decided (or forgotten), by it
or by another replica's proposal. The one exception to the budget is a single decision whose
own evidence exceeds it (a vote batch with huge reads): it travels alone, since it cannot be cut.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from dtm_ray.errors import DecodeError
from dtm_ray.txn.messages import Decide, Decision, DecideBatch, Forget
from dtm_ray.wire import decode, encode

HEADER_BYTES = 64  # the envelope of one proposal: kind tags, array headers (conservative)
PER_ITEM_BYTES = 16  # per vote batch, per decision, per forgotten id: headers, flags, lengths
DECODED_CACHE = 256  # proposals decoded (validated at once, re-validated while held, executed)

Due = tuple[str, bool, tuple[bytes, ...]]  # (txn id, commit, signed vote batches proving it)


def decision_bytes(txn_id: str, evidence: int) -> int:
    return len(txn_id.encode()) + PER_ITEM_BYTES + 5 * evidence


@dataclass
class DecideBuilder:
    """Packs due decisions into ``DecideBatch``es of at most ``budget`` bytes (estimated from
    above, so the encoded proposal is never larger)."""

    budget: int
    built: list[tuple[bytes, tuple[str, ...]]] = field(default_factory=list)  # (proposal, its txn ids)
    _batches: dict[bytes, int] = field(default_factory=dict)  # envelope -> index, in this proposal
    _decisions: list[Decision] = field(default_factory=list)
    _size: int = HEADER_BYTES

    def add(self, txn_id: str, commit: bool, envelopes: tuple[bytes, ...]) -> None:
        new = [e for e in dict.fromkeys(envelopes) if e not in self._batches]
        cost = decision_bytes(txn_id, len(envelopes)) + sum(len(e) + PER_ITEM_BYTES for e in new)
        if self._decisions and self._size + cost > self.budget:
            self._cut()
            new = list(dict.fromkeys(envelopes))
            cost = decision_bytes(txn_id, len(envelopes)) + sum(len(e) + PER_ITEM_BYTES for e in new)
        for envelope in new:
            self._batches[envelope] = len(self._batches)
        self._decisions.append(Decision(txn_id, commit, tuple(self._batches[e] for e in envelopes)))
        self._size += cost

    def finish(self) -> list[tuple[bytes, tuple[str, ...]]]:
        if self._decisions:
            self._cut()
        built, self.built = self.built, []
        return built

    def _cut(self) -> None:
        proposal = encode(DecideBatch(tuple(self._batches), tuple(self._decisions)))
        self.built.append((proposal, tuple(d.txn_id for d in self._decisions)))
        self._batches, self._decisions, self._size = {}, [], HEADER_BYTES


def forget_proposals(txn_ids: list[str], budget: int) -> list[tuple[bytes, tuple[str, ...]]]:
    """``Forget`` proposals for ``txn_ids``, in order, each within ``budget`` bytes."""
    out, chunk, size = [], [], HEADER_BYTES
    for txn_id in txn_ids:
        cost = len(txn_id.encode()) + PER_ITEM_BYTES
        if chunk and size + cost > budget:
            out.append((encode(Forget(tuple(chunk))), tuple(chunk)))
            chunk, size = [], HEADER_BYTES
        chunk.append(txn_id)
        size += cost
    if chunk:
        out.append((encode(Forget(tuple(chunk))), tuple(chunk)))
    return out


class Pending:
    """Proposals built and not yet executed, oldest first, and what each one still covers."""

    def __init__(self) -> None:
        self._open: dict[bytes, set[str]] = {}  # proposal -> txn ids it covers, not yet done
        self._of: dict[str, bytes] = {}  # txn id -> the proposal covering it

    def add(self, proposal: bytes, txn_ids: tuple[str, ...]) -> None:
        self._open[proposal] = set(txn_ids)
        for txn_id in txn_ids:
            self._of[txn_id] = proposal

    def done(self, txn_id: str) -> None:
        """``txn_id`` no longer needs its proposal; the proposal leaves with its last one."""
        proposal = self._of.pop(txn_id, None)
        if proposal is None:
            return
        waiting = self._open[proposal]
        waiting.discard(txn_id)
        if not waiting:
            del self._open[proposal]

    def covers(self, txn_id: str) -> bool:
        return txn_id in self._of

    def proposals(self) -> list[bytes]:
        return list(self._open)

    def clear(self) -> None:
        self._open.clear()
        self._of.clear()

    def __len__(self) -> int:
        return len(self._open)


class DecodedProposals:
    """Proposals decoded once: a held PRE-PREPARE is validated again on every step, then
    executed (bounded, oldest first out; None for bytes that are no proposal).
    Their decisions are listed once too: a backup validates a DECIDE and later executes it."""

    def __init__(self, max_entries: int = DECODED_CACHE) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, list] = OrderedDict()  # proposal -> [parsed, decisions or None]

    def parse(self, proposal: bytes) -> Decide | DecideBatch | Forget | None:
        return self._entry(proposal)[0]

    def decisions(self, proposal: bytes) -> list[Due]:
        """``decisions_in`` of the parsed proposal, computed on the first call."""
        entry = self._entry(proposal)
        if entry[1] is None:
            entry[1] = decisions_in(entry[0])
        return entry[1]

    def _entry(self, proposal: bytes) -> list:
        entry = self._cache.get(proposal)
        if entry is not None:
            return entry
        try:
            parsed = decode(proposal, (DecideBatch, Decide, Forget))
        except DecodeError:
            parsed = None
        entry = self._cache[proposal] = [parsed, None]
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return entry


def decisions_in(parsed) -> list[Due]:
    """The decisions a proposal carries, each with its evidence (one with a bad index: left out)."""
    if isinstance(parsed, Decide):
        return [(parsed.txn_id, parsed.commit, parsed.evidence)]
    if not isinstance(parsed, DecideBatch):
        return []
    batches = parsed.vote_batches
    count = len(batches)
    out = []
    for d in parsed.decisions:
        evidence = d.evidence
        if len(evidence) == 1:  # the common shapes, without a generator each
            i = evidence[0]
            if 0 <= i < count:
                out.append((d.txn_id, d.commit, (batches[i],)))
        elif len(evidence) == 2:
            i, j = evidence
            if 0 <= i < count and 0 <= j < count:
                out.append((d.txn_id, d.commit, (batches[i], batches[j])))
        elif all(0 <= i < count for i in evidence):
            out.append((d.txn_id, d.commit, tuple(batches[i] for i in evidence)))
    return out
