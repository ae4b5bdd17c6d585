"""A load run's costs per committed transaction (``actors.report``), without Ray."""

from __future__ import annotations

from actors.report import COST_KEYS, party_totals, summarise


def status(party: str, **counts) -> dict:
    return {"id": party, "host": {k: counts.get(k, 0) for k in COST_KEYS}}


def records(n: int) -> list[dict]:
    return [{"status": "ok", "start_ns": i * 10**6, "end_ns": i * 10**6 + 5 * 10**6, "reason": None} for i in range(n)]


def test_a_party_restarted_between_the_snapshots_counts_from_its_restart_and_is_named():
    """Its counters start again from zero: subtracting the first snapshot made the crash-primary
    bench point report negative costs per transaction."""
    before = party_totals([status("R0", calls_out=900, fsyncs=90, cpu_s=9.0), status("R1", calls_out=100, fsyncs=10, cpu_s=1.0)])
    after = party_totals([status("R0", calls_out=40, fsyncs=4, cpu_s=0.5), status("R1", calls_out=300, fsyncs=30, cpu_s=3.0)])
    report = summarise(records(10), 1.0, 0, before, after)
    assert report["restarted"] == ["R0"]
    assert report["per_committed"]["calls_out"] == (40 + 200) / 10
    assert report["per_committed"]["fsyncs"] == (4 + 20) / 10
    assert all(v >= 0 for v in report["per_committed"].values())
    assert report["per_committed_by_party"]["R0"]["calls_out"] == 4.0


def test_the_loop_threads_cpu_is_reported_beside_the_process_cpu():
    before = party_totals([status("R0", cpu_s=1.0, loop_cpu_s=0.5)])
    after = party_totals([status("R0", cpu_s=5.0, loop_cpu_s=3.5)])
    report = summarise(records(10), 1.0, 0, before, after)
    assert report["per_committed"]["loop_cpu_s"] == 0.3 and report["per_committed"]["cpu_s"] == 0.4
    assert report["per_committed_by_party"]["R0"]["loop_cpu_s"] == 0.3


def test_no_restart_is_a_plain_difference():
    before = party_totals([status("R0", calls_out=10, bytes_out=1_000)])
    after = party_totals([status("R0", calls_out=30, bytes_out=5_000)])
    report = summarise(records(4), 1.0, 0, before, after)
    assert report["restarted"] == [] and report["per_committed"]["calls_out"] == 5.0
    assert report["per_committed"]["bytes_out"] == 1_000.0
