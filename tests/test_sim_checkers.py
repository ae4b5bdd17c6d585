"""Every checker must be able to fail: a good history passes, each broken one is caught."""

from __future__ import annotations

from dtm_ray.pbft.events import CheckpointStable, ClientResult, Evidence, Executed
from dtm_ray.sim import checkers
from dtm_ray.sim.simulation import Observed

D1, D2 = b"\x01" * 32, b"\x02" * 32


def ex(party, seq, digest=D1, requests=(), life=0, t=0):
    return Observed(t, party, life, Executed(party, 0, seq, digest, tuple(requests), 0))


def result(client, rid, value, t=0):
    return Observed(t, client, 0, ClientResult(client, rid, value, 0))


GOOD = [ex("R0", 1, requests=[("c0", 1)]), ex("R1", 1, requests=[("c0", 1)]),
        ex("R0", 2, D2, requests=[("c0", 2)]), ex("R1", 2, D2, requests=[("c0", 2)]),
        result("c0", 1, 1, t=10), result("c0", 2, 2, t=20)]
CORRECT = {"R0", "R1", "R2", "R3"}
SUBMITTED = {("c0", 1), ("c0", 2)}


def test_a_good_history_passes_every_checker():
    assert checkers.agreement(GOOD, CORRECT) == []
    assert checkers.validity(GOOD, CORRECT, SUBMITTED) == []
    assert checkers.exactly_once(GOOD, CORRECT) == []
    assert checkers.liveness(GOOD, SUBMITTED, healed_at_ms=0, bound_ms=100, now_ms=50) == []
    assert checkers.counter_results(GOOD, lambda v: v) == []


def test_agreement_catches_two_digests_at_one_seq_but_ignores_faulty_replicas():
    bad = GOOD + [ex("R2", 2, D1)]
    [v] = checkers.agreement(bad, CORRECT)
    assert v.prop == "agreement" and "seq 2" in v.detail
    assert checkers.agreement(bad, CORRECT - {"R2"}) == []


def test_agreement_holds_across_a_restart_only_if_the_replay_matches():
    assert checkers.agreement(GOOD + [ex("R0", 2, D2, life=1)], CORRECT) == []
    assert checkers.agreement(GOOD + [ex("R0", 2, D1, life=1)], CORRECT)


def test_validity_catches_a_request_nobody_submitted():
    [v] = checkers.validity(GOOD + [ex("R1", 3, requests=[("mallory", 1)])], CORRECT, SUBMITTED)
    assert "mallory" in v.detail


def test_exactly_once_catches_a_request_at_two_seqs_and_twice_in_one_life():
    twice = GOOD + [ex("R0", 3, requests=[("c0", 1)])]
    found = checkers.exactly_once(twice, CORRECT)
    assert any("again" in v.detail for v in found) and any("several seqs" in v.detail for v in found)
    # a restarted replica replaying the same seq is not a second execution
    assert checkers.exactly_once(GOOD + [ex("R0", 1, requests=[("c0", 1)], life=1)], CORRECT) == []


def test_bounded_log_catches_a_big_log_in_events_and_in_status():
    stable = [Observed(0, "R0", 0, CheckpointStable("R0", 4, D1, 10))]
    assert checkers.bounded_log(stable, CORRECT, bound=16) == []
    assert checkers.bounded_log(stable, CORRECT, bound=8)
    assert checkers.bounded_log([], CORRECT, 16, statuses={"R1": {"log_entries": 17}})
    assert checkers.bounded_log([], CORRECT, 16, statuses={"R1": {"log_entries": 16}}) == []


def test_liveness_catches_missing_and_late_answers():
    [missing] = checkers.liveness(GOOD, SUBMITTED | {("c1", 1)}, healed_at_ms=0, bound_ms=100, now_ms=100)
    assert "never answered" in missing.detail
    [late] = checkers.liveness(GOOD, SUBMITTED, healed_at_ms=0, bound_ms=15, now_ms=100)
    assert "after" in late.detail


def test_counter_results_catch_a_double_execution_seen_by_the_client():
    [v] = checkers.counter_results([result("c0", 1, 1), result("c0", 2, 3)], lambda v: v)
    assert "read counter 3" in v.detail
    assert checkers.counter_results([result("c0", 2, 2), result("c0", 1, 1)], lambda v: v) == []


def test_evidence_lists_recorded_proofs_by_kind():
    outs = [Observed(0, "R1", 0, Evidence("R1", "R0", "equivocation", (b"a", b"b"))),
            Observed(0, "R2", 0, Evidence("R2", "R3", "bad-auth", ()))]
    assert [e.accused for e in checkers.evidence(outs, "equivocation")] == ["R0"]
    assert len(checkers.evidence(outs)) == 2
