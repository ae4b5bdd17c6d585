"""Ray's own floor (``benchmarks.ray_floor``): its JSON has the shape the bench report needs and its
figures are consistent with themselves (items = calls x items per call). Speed is not asserted:
this machine is shared."""

from __future__ import annotations

import pytest

POINT_KEYS = {"shape", "items_per_call", "actors", "item_bytes", "window", "seconds", "calls_per_s",
              "items_per_s", "refused_per_s", "cpu_ms_per_call"}


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_floor_measures_every_shape_and_batch_size(ray_session):
    from benchmarks import ray_floor

    result = ray_floor.floor(items=(1, 10), actors=3, seconds=0.5)
    points = result["points"]
    assert [(p["shape"], p["items_per_call"]) for p in points] == [
        (s, k) for s in ray_floor.SHAPES for k in (1, 10)]
    for p in points:
        assert set(p) == POINT_KEYS
        assert p["calls_per_s"] > 0 and p["cpu_ms_per_call"] > 0, p
        assert p["items_per_s"] == pytest.approx(p["calls_per_s"] * p["items_per_call"], rel=0.01), p
    assert result["ray"] == ray_session.__version__


def test_the_bench_report_carries_the_floor_beside_the_systems_calls(monkeypatch):
    import benchmarks.ray_floor as ray_floor
    from benchmarks.bench_ray import floor_section

    points = [{"n": 4, "f": 1, "concurrency": 64, "fault": "none", "committed_per_s": 100.0,
               "per_committed": {"calls_out": 5.0}}]
    fake = {"points": [{"shape": "host", "items_per_call": 1, "calls_per_s": 2000.0}]}
    monkeypatch.setattr(ray_floor, "floor", lambda **kw: fake)
    section = floor_section(points, 1.0)
    assert section["ray"] is fake
    assert section["system"] == [{"n": 4, "f": 1, "concurrency": 64, "fault": "none", "rate": None,
                                  "calls_per_s": 500.0, "of_floor": 0.25}]
