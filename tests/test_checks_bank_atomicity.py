"""The bank and atomicity checkers on hand-written histories."""

from __future__ import annotations

from dtm_ray.checks.atomicity import check_atomicity
from dtm_ray.checks.bank import check_bank
from dtm_ray.txn.events import Applied
from dtm_ray.txn.ops import TxnResult

A, B = ("db-0", "a"), ("db-1", "b")


def kinds(anomalies):
    return sorted(a.kind for a in anomalies)


def test_bank_passes_when_money_is_conserved():
    assert check_bank(10, {A: 4, B: 6}, [("t1", {A: 10, B: 0}), ("t2", {A: 4, B: 6})]) == []


def test_bank_flags_created_money_negative_balances_and_torn_reads():
    assert kinds(check_bank(10, {A: 5, B: 6})) == ["total-changed"]
    assert kinds(check_bank(10, {A: -1, B: 11})) == ["negative-balance"]
    assert kinds(check_bank(10, {A: 4, B: 6}, [("t", {A: 4, B: 0})])) == ["inconsistent-read"]
    assert kinds(check_bank(10, {A: 4, B: 6}, [("t", {A: -2, B: 12})])) == ["negative-balance"]


def ok(txn_id, committed=True):
    return TxnResult(committed, "commit" if committed else "abort", txn_id, [], None)


def test_atomicity_passes_one_outcome_everywhere():
    applied = [Applied("db-0", "t1", 0, True, True), Applied("db-1", "t1", 0, True, True),
               Applied("db-0", "t2", 1, False, False), Applied("db-1", "t2", 1, False, None)]
    touched = {"t1": ["db-0", "db-1"], "t2": ["db-0", "db-1"]}
    assert check_atomicity(applied, {"t1": ok("t1"), "t2": ok("t2", False)}, touched, complete=True) == []


def test_atomicity_flags_split_commit_without_yes_twice_mismatch_and_absent():
    split = [Applied("db-0", "t", 0, True, True), Applied("db-1", "t", 0, False, True)]
    assert "split" in kinds(check_atomicity(split))
    assert kinds(check_atomicity([Applied("db-0", "t", 0, True, False)])) == ["commit-without-yes"]
    twice = [Applied("db-0", "t", 0, True, True)] * 2
    assert kinds(check_atomicity(twice)) == ["applied-twice"]
    mismatch = [Applied("db-0", "t", 0, False, True)]
    assert kinds(check_atomicity(mismatch, {"t": ok("t")})) == ["client-mismatch"]
    absent = [Applied("db-0", "t", 0, True, True)]
    assert kinds(check_atomicity(absent, {"t": ok("t")}, {"t": ["db-0", "db-1"]}, complete=True)) == ["absent"]
    assert check_atomicity(absent, {"t": ok("t")}, {"t": ["db-0", "db-1"]}, complete=False) == []


def test_atomicity_ignores_participants_not_checked():
    byz = [Applied("db-0", "t", 0, True, True), Applied("evil", "t", 0, False, True)]
    assert check_atomicity(byz, participants={"db-0"}) == []
