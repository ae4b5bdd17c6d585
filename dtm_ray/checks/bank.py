"""The bank invariant: transfers move money, they never create or destroy it.

Accounts are ``(participant, key)`` pairs holding integers. Checked:

- ``total-changed``: the committed balances at the end do not sum to the initial total;
- ``negative-balance``: a committed balance (at the end, or in any committed read) is below 0;
- ``inconsistent-read``: a committed transaction that read every account saw a total other than
  the initial one (a read that straddles a transfer: atomicity or isolation is broken).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from dtm_ray.checks.report import Anomaly

Account = tuple[str, str]


def check_bank(total: int, final: Mapping[Account, Any], reads: Iterable[tuple[str, Mapping[Account, Any]]] = ()
               ) -> list[Anomaly]:
    """``final``: every account's committed balance at the end (absent accounts count as 0);
    ``reads``: (txn_id, balances) for each committed transaction that read all accounts."""
    out = []
    balances = {a: (v if v is not None else 0) for a, v in final.items()}
    for account, value in sorted(balances.items()):
        if type(value) is not int:
            out.append(Anomaly("bad-balance", f"{account} holds {value!r}, not an integer"))
        elif value < 0:
            out.append(Anomaly("negative-balance", f"{account} ends at {value}"))
    ints = [v for v in balances.values() if type(v) is int]
    if sum(ints) != total:
        out.append(Anomaly("total-changed", f"balances sum to {sum(ints)}, expected {total}"))
    for txn_id, seen in reads:
        values = [0 if v is None else v for v in seen.values()]
        if any(type(v) is not int for v in values):
            out.append(Anomaly("bad-balance", f"{txn_id} read a non-integer balance", (txn_id,)))
            continue
        if any(v < 0 for v in values):
            out.append(Anomaly("negative-balance", f"{txn_id} read a negative balance", (txn_id,)))
        if sum(values) != total:
            out.append(Anomaly("inconsistent-read", f"{txn_id} read a total of {sum(values)}, expected {total}",
                               (txn_id,)))
    return out
