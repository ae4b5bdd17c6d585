"""Golden histories for the list-append checker: each anomaly is flagged, valid ones pass."""

from __future__ import annotations

import pytest

from dtm_ray.checks.elle import FAIL, OK, HistTxn, append, check_list_append, read


def T(txn_id, *mops, status=OK, start=0, end=100):
    return HistTxn(txn_id, tuple(mops), status, start, end)


def kinds(history, **kw):
    return sorted({a.kind for a in check_list_append(history, **kw)})


def test_a_serial_history_passes():
    history = [
        T("t1", append("x", 1), start=0, end=1),
        T("t2", read("x", [1]), append("x", 2), append("y", 1), start=2, end=3),
        T("t3", read("x", [1, 2]), read("y", [1]), start=4, end=5),
        T("t4", append("x", 3), status=FAIL, start=4, end=5),
    ]
    assert kinds(history, final={"x": [1, 2], "y": [1]}) == []


def test_concurrent_transactions_in_either_order_pass():
    history = [
        T("t1", append("x", 1), read("y", [])),
        T("t2", append("y", 1), read("x", [1])),
        T("t3", read("x", [1]), read("y", [1])),
    ]
    assert kinds(history) == []


def test_reading_own_appends_is_fine():
    history = [T("t1", append("x", 1), read("x", [1]), append("x", 2), read("x", [1, 2]))]
    assert kinds(history, final={"x": [1, 2]}) == []


GOLDEN = {
    "G0": [  # write cycle: t1 before t2 on x, t2 before t1 on y
        T("t1", append("x", 1), append("y", 2)),
        T("t2", append("x", 3), append("y", 4)),
        T("t3", read("x", [1, 3]), read("y", [4, 2])),
    ],
    "G1c": [  # each reads the other's write
        T("t1", append("x", 1), read("y", [2])),
        T("t2", append("y", 2), read("x", [1])),
    ],
    "G-single": [  # read skew: t1 sees t2's y but not its x
        T("t1", read("x", []), read("y", [1])),
        T("t2", append("x", 1), append("y", 1)),
        T("t3", read("x", [1])),
    ],
    "G2": [  # write skew: each misses the other's append
        T("t1", read("x", []), append("y", 1)),
        T("t2", read("y", []), append("x", 2)),
        T("t3", read("x", [2]), read("y", [1])),
    ],
    "G1a": [  # aborted read
        T("t1", append("x", 1), status=FAIL),
        T("t2", read("x", [1])),
    ],
    "G1b": [  # intermediate read
        T("t1", append("x", 1), append("x", 2)),
        T("t2", read("x", [1])),
    ],
    "duplicate-append": [
        T("t1", append("x", 1)),
        T("t2", read("x", [1, 1])),
    ],
    "incompatible-order": [
        T("t1", append("x", 1)),
        T("t2", append("x", 2)),
        T("t3", read("x", [1, 2])),
        T("t4", read("x", [2])),
    ],
    "garbage-read": [T("t1", read("x", [9]))],
    "G-single-realtime": [  # serializable, but t2 began after t1 ended and missed its append
        T("t1", append("x", 1), start=0, end=1),
        T("t2", read("x", []), start=2, end=3),
        T("t3", read("x", [1]), start=4, end=5),
    ],
}


@pytest.mark.parametrize("anomaly", sorted(GOLDEN))
def test_each_anomaly_is_flagged(anomaly):
    assert anomaly in kinds(GOLDEN[anomaly]), check_list_append(GOLDEN[anomaly])


def test_realtime_cycle_is_not_flagged_when_only_serializability_is_asked():
    assert kinds(GOLDEN["G-single-realtime"], realtime=False) == []


def test_lost_append_and_aborted_append_in_final_state():
    history = [T("t1", append("x", 1)), T("t2", append("x", 2), status=FAIL)]
    assert kinds(history, final={"x": [2]}) == ["G1a", "lost-append"]


def test_anomalies_name_the_transactions_involved():
    [g2] = [a for a in check_list_append(GOLDEN["G2"]) if a.kind == "G2"]
    assert set(g2.txns) == {"t1", "t2"}


def test_a_long_serial_history_is_fast_and_clean():
    history, seen = [], []
    for i in range(500):
        history.append(T(f"t{i}", read("k", list(seen)), append("k", i), start=2 * i, end=2 * i + 1))
        seen.append(i)
    assert kinds(history, final={"k": seen}) == []
