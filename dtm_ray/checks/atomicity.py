"""Atomicity across participants: one outcome per transaction, everywhere.

Inputs are what correct participants reported (``dtm_ray.txn.events.Applied``) and what clients
were told (``TxnResult``). Checked:

- ``split``: a transaction applied as COMMIT at one participant and as ABORT at another;
- ``commit-without-yes``: a participant applied COMMIT for a transaction it never voted YES on
  (the coordinator committed without every vote);
- ``applied-twice``: one participant applied one transaction twice;
- ``client-mismatch``: a client was told one outcome and a participant applied the other;
- ``absent`` (only once the run is complete): a transaction the client saw committed was never
  applied at a participant it touched.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from dtm_ray.checks.report import Anomaly
from dtm_ray.txn.events import Applied
from dtm_ray.txn.ops import TxnResult


def check_atomicity(applied: Iterable[Applied], results: Mapping[str, TxnResult] | None = None,
                    touched: Mapping[str, Iterable[str]] | None = None, *,
                    participants: set[str] | None = None, complete: bool = False) -> list[Anomaly]:
    """``applied``: Applied events of the participants to check (``participants`` filters them);
    ``results``: txn_id -> the client's result; ``touched``: txn_id -> participants it touched;
    ``complete``: every decision has been delivered (faults healed, the run drained)."""
    out: list[Anomaly] = []
    outcomes: dict[str, dict[str, bool]] = defaultdict(dict)
    for event in applied:
        if participants is not None and event.participant not in participants:
            continue
        seen = outcomes[event.txn_id]
        if event.participant in seen:
            out.append(Anomaly("applied-twice", f"{event.participant} applied {event.txn_id} twice", (event.txn_id,)))
        seen[event.participant] = event.commit
        if event.commit and event.voted_yes is not True:
            out.append(Anomaly("commit-without-yes", f"{event.participant} applied COMMIT of {event.txn_id} "
                                                     f"without voting YES (vote: {event.voted_yes})", (event.txn_id,)))
    for txn_id, seen in sorted(outcomes.items()):
        if len(set(seen.values())) > 1:
            out.append(Anomaly("split", f"{txn_id}: {dict(sorted(seen.items()))}", (txn_id,)))
    for txn_id, result in sorted((results or {}).items()):
        seen = outcomes.get(txn_id, {})
        wrong = sorted(p for p, commit in seen.items() if commit != result.committed)
        if wrong:
            out.append(Anomaly("client-mismatch", f"{txn_id}: client told {result.outcome}, {wrong} applied "
                                                  "the other outcome", (txn_id,)))
        if complete and result.committed:
            expected = set((touched or {}).get(txn_id, ()))
            if participants is not None:
                expected &= participants
            missing = sorted(expected - set(seen))
            if missing:
                out.append(Anomaly("absent", f"{txn_id} committed but never applied at {missing}", (txn_id,)))
    return out
