"""The host's cost counters exported as Ray metrics: each export adds the growth since the last one,
at most once a period (a metric update is a call into Ray's core worker)."""

from __future__ import annotations

import pytest

from actors.metrics import EXPORTED, PERIOD_MS, MetricsExporter, metric_name


class Recorder:
    def __init__(self) -> None:
        self.total = 0.0
        self.tags: list[dict] = []

    def inc(self, value, tags=None):
        assert value > 0  # Prometheus counters only grow
        self.total += value
        self.tags.append(tags)


@pytest.fixture
def exporter(monkeypatch):
    exp = MetricsExporter("R1", "replica")
    exp._metrics = {name: Recorder() for name in exp._metrics}
    return exp


def test_exports_growth_once_per_period_with_the_party_tag(exporter):
    assert exporter.maybe_export({"calls_out": 5, "fsyncs": 2}, 0)
    assert not exporter.maybe_export({"calls_out": 9}, PERIOD_MS - 1)  # too soon: nothing sent
    assert exporter._metrics["calls_out"].total == 5
    assert exporter.maybe_export({"calls_out": 9, "fsyncs": 2, "out:Executed": 3}, PERIOD_MS)
    assert exporter._metrics["calls_out"].total == 9
    assert exporter._metrics["fsyncs"].total == 2  # unchanged: not incremented again
    assert exporter._metrics["out:Executed"].total == 3
    assert exporter._metrics["calls_out"].tags[-1] == {"party": "R1", "role": "replica"}


def test_metric_names_are_prometheus_safe():
    for name in EXPORTED + ("out:Executed",):
        assert metric_name(name).replace("_", "").isalnum(), metric_name(name)
    assert metric_name("out:ViewChanged") == "dtm_out_viewchanged"
