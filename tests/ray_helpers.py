"""Helpers shared by the Ray integration tests: the bank workload's setup and its checks."""

from __future__ import annotations

from dtm_ray.checks.elle import FAIL, INFO, OK, HistTxn, Mop, check_list_append
from actors.loadgen import (  # noqa: F401  (re-exported for the tests)
    BALANCE, bank_accounts_of as bank_accounts, bank_final, bank_setup_of as bank_setup, check_bank_run, quiescent,
    wait_until,
)


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
