"""Getting each decision to its participants, and knowing when it got there (soft state).

Once a DECIDE executed, this replica sends the decision to every participant of the
transaction and resends it (exponential backoff, ``timers.ResendTimers``) until each one has
acknowledged; then the transaction is *final* here. Final transactions wait in ``final`` (oldest
first) until the coordinator proposes to forget them. A participant in doubt may also ask
(``Query``), and gets the decision again if it is still kept.

Nothing here is replicated: after a restore every kept decision is simply resent, and the
participants acknowledge again (they re-acknowledge decisions they applied already).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from dtm_ray.txn.messages import AckBatch, DecidedTxn, DecisionItem, Query
from dtm_ray.txn.timers import ResendTimers


class Delivery:
    def __init__(self, resend_ms: int) -> None:
        self.unacked: dict[str, set[str]] = {}  # txn id -> participants yet to acknowledge
        self.final: OrderedDict[str, int] = OrderedDict()  # final here, not yet forgotten -> since (ms)
        self.outbox: dict[str, dict[str, DecisionItem]] = {}  # participant -> decisions to send
        self._resend: ResendTimers[str] = ResendTimers(resend_ms)
        self.finals = 0

    def decided(self, decided: DecidedTxn, now: int) -> None:
        """A new decision: send it to every participant, until each acknowledges."""
        self.unacked[decided.txn_id] = {s.participant for s in decided.slots}
        self._send(decided, now)

    def restart(self, kept: Mapping[str, DecidedTxn], now: int) -> None:
        """After a restore: every decision kept may be unacknowledged, resend them all."""
        self.unacked, self.final = {}, OrderedDict()
        self._resend.keep_only(())
        for decided in kept.values():
            self.decided(decided, now)

    def resend_due(self, kept: Mapping[str, DecidedTxn], now: int) -> None:
        for txn_id in self._resend.due(now):
            waiting = self.unacked.get(txn_id)
            if waiting and txn_id in kept:
                self._send(kept[txn_id], now, waiting)

    def acks(self, participant: str, acks: AckBatch, kept: Mapping[str, DecidedTxn], now: int) -> list[str]:
        """Acknowledgements from ``participant``; returns the transactions that became final."""
        final = []
        for item in acks.items:
            waiting = self.unacked.get(item.txn_id)
            decided = kept.get(item.txn_id)
            if waiting is None or decided is None or item.commit != decided.commit:
                continue
            waiting.discard(participant)
            if not waiting:
                del self.unacked[item.txn_id]
                self._resend.forget(item.txn_id)
                self.final[item.txn_id] = now
                self.finals += 1
                final.append(item.txn_id)
        return final

    def query(self, participant: str, query: Query, kept: Mapping[str, DecidedTxn]) -> None:
        for item in query.items:
            decided = kept.get(item.txn_id)
            if decided is not None:
                for slot in decided.slots:
                    if slot.participant == participant:
                        self.outbox.setdefault(participant, {})[item.txn_id] = DecisionItem(
                            item.txn_id, slot.pseq, decided.commit)

    def final_for(self, txn_id: str, kept: Mapping[str, DecidedTxn]) -> bool:
        return txn_id in kept and txn_id not in self.unacked

    def take_final(self, until: int) -> list[str]:
        """The transactions final since ``until`` or before, oldest first (they leave ``final``)."""
        out = []
        while self.final:
            txn_id, since = next(iter(self.final.items()))
            if since > until:
                break
            del self.final[txn_id]
            out.append(txn_id)
        return out

    def oldest_final(self) -> int | None:
        return next(iter(self.final.values())) if self.final else None

    def drop(self, txn_id: str) -> None:
        """Forgotten (or evicted): nothing more to send or wait for."""
        self.unacked.pop(txn_id, None)
        self.final.pop(txn_id, None)
        self._resend.forget(txn_id)

    @property
    def visits(self) -> int:
        return self._resend.visits

    def _send(self, decided: DecidedTxn, now: int, participants=None) -> None:
        self._resend.sent(decided.txn_id, now)
        for slot in decided.slots:
            if participants is None or slot.participant in participants:
                self.outbox.setdefault(slot.participant, {})[decided.txn_id] = DecisionItem(
                    decided.txn_id, slot.pseq, decided.commit)
