"""The short `dtm-ray bench` (``benchmarks.bench_ray --quick``) on real Ray actors: its JSON has the
shape the report needs and says something true (every point checked by the bank and atomicity
checkers, costs consistent with what committed). Speed is not asserted: this machine is shared."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

POINT_KEYS = {"n", "f", "concurrency", "fault", "committed", "committed_per_s", "abort_rate", "abort_reasons",
              "latency_ms", "per_committed", "timeline", "view_changes", "load_average", "checked"}
COSTS = {"calls_out", "messages_out", "bytes_out", "fsyncs", "crypto_sign", "crypto_verify", "crypto_mac",
         "crypto_mac_checked", "cpu_s", "loop_cpu_s"}


def test_quick_bench_writes_checked_json_and_plots(ray_session, tmp_path):
    from benchmarks import bench_ray

    out = str(tmp_path)
    result = bench_ray.main(["--quick", "--duration", "2", "--out", out])
    with open(os.path.join(out, "bench.json")) as fh:
        assert json.load(fh) == json.loads(json.dumps(result))
    points = result["points"]
    assert [(p["n"], p["f"]) for p in points] == [(4, 1), (1, 0)]
    for p in points:
        assert POINT_KEYS <= set(p), POINT_KEYS - set(p)
        assert p["checked"] is True and p["committed"] > 0 and p["committed_per_s"] > 0
        assert set(p["per_committed"]) == COSTS
        lat = p["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert p["per_committed"]["calls_out"] > 0 and p["per_committed"]["fsyncs"] > 0
        r0 = p["per_committed_by_party"]["R0"]  # the loop thread's CPU is a part of the process's
        assert 0 < r0["loop_cpu_s"] <= r0["cpu_s"], r0
        assert sum(rate for _, rate in p["timeline"]) / 2 == p["committed"]  # 0.5 s bins of txn/s
    bft, cft = points
    # BFT signs, MACs and replicates what f=0 does once: it must cost more per committed txn
    assert bft["per_committed"]["messages_out"] > cft["per_committed"]["messages_out"]
    assert set(result["bft_cost"]) >= {"throughput_ratio_f0_over_f1", "calls_ratio_f1_over_f0"}
    for path in result["plots"]:
        assert os.path.getsize(path) > 1000


def test_the_sweep_has_a_point_per_byzantine_behaviour_and_per_span():
    """Built without running anything: the issue's sweep (each Byzantine behaviour, participants
    per transaction 1-4, open loop) is what the command line asks for."""
    from benchmarks.bench_ray import build_parser, sweep
    from dtm_ray.faults import CATALOGUE, PARTICIPANT_CATALOGUE

    args = build_parser().parse_args(["--concurrency", "8", "32", "--faults", "crash-primary", "byzantine",
                                      "--byzantine", "all", "--span", "1", "2", "3", "4", "--rate", "5"])
    points = sweep(args)
    byz = [p["byzantine"] for p in points if p["fault"] == "byzantine"]
    assert sorted(byz) == sorted(set(CATALOGUE) - set(PARTICIPANT_CATALOGUE))
    assert [p["span"] for p in points if p.get("span")] == [1, 2, 3, 4]
    assert [p["rate"] for p in points if p["rate"]] == [5.0]
    assert {p["concurrency"] for p in points if p["fault"] != "none"} == {32}


def test_an_unknown_byzantine_behaviour_is_refused():
    from benchmarks.bench_ray import build_parser, sweep

    with pytest.raises(SystemExit, match="unknown Byzantine"):
        sweep(build_parser().parse_args(["--faults", "byzantine", "--byzantine", "nonsense"]))
