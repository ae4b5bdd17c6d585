"""The coordinator's PREPAREs to the participants: soft state, never replicated.

Executing a transaction's request queues one ``PrepareItem`` per participant it touches; a flush
takes them as one MAC'd ``PrepareBatch`` per participant (cut to fit the decoder). A participant
that has not voted on a transaction gets its PREPARE again after ``resend_ms``, then twice that,
and so on (``ResendTimers``); its vote, or the transaction's decision, ends the resends.
"""

from __future__ import annotations

from dtm_ray.crypto import KeyRing, seal_mac
from dtm_ray.pbft.app import Outgoing
from dtm_ray.txn.messages import PendingTxn, PrepareBatch, PrepareItem, Slot, fitting_batches
from dtm_ray.txn.timers import ResendTimers


class PrepareOutbox:
    def __init__(self, resend_ms: int) -> None:
        self._out: dict[str, dict[str, PrepareItem]] = {}  # participant -> txn id -> item
        self._timers: ResendTimers[str] = ResendTimers(resend_ms)  # transactions not fully voted on

    def send(self, txn: PendingTxn, slots: list[Slot] | tuple[Slot, ...], now_ms: int) -> None:
        """Queue ``txn``'s PREPARE to the participants of ``slots``, and time its resend."""
        self._timers.sent(txn.txn_id, now_ms)
        for slot in slots:
            ops = tuple(op for op in txn.ops if op.participant == slot.participant)
            self._out.setdefault(slot.participant, {})[txn.txn_id] = PrepareItem(txn.txn_id, slot.pseq, ops)

    def due(self, now_ms: int) -> list[str]:
        """Transactions whose PREPAREs wait for a resend (each reported once per ``send``)."""
        return self._timers.due(now_ms)

    def done(self, txn_id: str) -> None:
        """Decided: no more resends."""
        self._timers.forget(txn_id)

    def restart(self) -> None:
        """After a restore: every resend is timed again by the coordinator's ``send``s."""
        self._timers.keep_only(())

    def take(self, keys: KeyRing) -> list[Outgoing]:
        """What the flush sends: one MAC'd batch per participant (more if it would not fit)."""
        out: list[Outgoing] = [(participant, seal_mac(keys, participant, batch))
                               for participant, items in sorted(self._out.items())
                               for batch in fitting_batches(PrepareBatch, list(items.values()))]
        self._out.clear()
        return out

    @property
    def visits(self) -> int:
        return self._timers.visits
