"""Helpers shared by the Ray integration tests: the bank workload's setup and its checks."""

from __future__ import annotations

import time

from dtm_ray.checks.bank import check_bank
from dtm_ray.checks.elle import FAIL, INFO, OK, HistTxn, Mop, check_list_append
from dtm_ray.txn.ops import Op

BALANCE = 100


def wait_until(predicate, timeout_s=30.0, what="condition"):
    """Poll an observable condition; fails with a message (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def bank_accounts(cluster, per_participant=3):
    kv = [p for p, kind in cluster.config.participants.items() if kind == "kv"]
    return [(p, f"acct:{i}") for p in kv for i in range(per_participant)]


def bank_setup(cluster, accounts, client="alice"):
    r = cluster.client(client).submit([Op.put(p, k, BALANCE) for p, k in accounts])
    assert r.committed, r
    return BALANCE * len(accounts)


def quiescent(cluster, participants):
    """Every decision applied: a client's reply comes at the commit point, before participants
    apply, so the committed data is a consistent snapshot only once nothing is prepared."""
    status = cluster.status()["participants"]
    return all(status[p].get("alive") and not status[p]["locks"] and status[p]["prepared"] == 0
               for p in participants)


def bank_final(cluster, accounts):
    participants = sorted({p for p, _ in accounts})
    wait_until(lambda: quiescent(cluster, participants), timeout_s=30, what="participants quiescent")
    states = {p: cluster.participant_state(p) for p in {p for p, _ in accounts}}
    return {(p, k): states[p].get(k) for p, k in accounts}


def check_bank_run(cluster, accounts, total, records):
    reads = [(r["txn_id"], dict(zip(accounts, r["reads"]))) for r in records
             if r["kind"] == "read" and r["status"] == "ok"]
    anomalies = check_bank(total, bank_final(cluster, accounts), reads)
    assert not anomalies, [str(a) for a in anomalies]


def bank_load(cluster, accounts, clients, count, seed, timeout_s=20.0):
    return cluster.run_load("bank", clients, count=count, seed=seed, timeout_s=timeout_s,
                            params={"accounts": [list(a) for a in accounts]})


def elle_history(records):
    history = []
    for r in records:
        status = {"ok": OK, "fail": FAIL, "info": INFO}[r["status"]]
        mops = []
        for i, (p, kind, key, value) in enumerate(r["ops"]):
            if kind == "append":
                mops.append(Mop("append", (p, key), value))
            else:
                observed = r["reads"][i] if r["reads"] is not None else None
                mops.append(Mop("r", (p, key), observed))
        history.append(HistTxn(r["txn_id"] if r["txn_id"] != "?" else f"unknown-{id(r)}", tuple(mops),
                               status, r["start_ns"], r["end_ns"]))
    return history


def check_elle_run(cluster, records):
    anomalies = check_list_append(elle_history(records))
    assert not anomalies, [str(a) for a in anomalies]
