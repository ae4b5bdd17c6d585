"""``dtm-ray demo``: its pieces without Ray (plot, audit-log reading, the live view's rendering),
and ONE end-to-end run as a user runs it (a subprocess that starts its own local Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from loguru import logger
from rich.console import Console

from dtm_ray import demo, logs, watch
from dtm_ray.errors import ConfigError
from dtm_ray.txn.events import Applied

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _status(**overrides):
    replicas = [{"id": f"R{i}", "alive": True, "view": 1, "primary": "R1", "executed_seq": 40 + i,
                 "stable_checkpoint": 32, "evidence": {"equivocation": i}, "rejected": {}, "byzantine": None,
                 "view_changing": False, "state_transfer_target": 0} for i in range(4)]
    replicas[0]["byzantine"] = "equivocate"
    replicas[3] = {"id": "R3", "alive": False, "error": "ActorDiedError"}
    status = {"replicas": replicas,
              "participants": {"db-0": {"alive": True, "kind": "kv", "committed": 9, "aborted": 1, "prepared": 0,
                                        "in_doubt": 0, "locks": 0, "byzantine": None}}}
    status.update(overrides)
    return status


def test_one_line_summarises_the_cluster():
    line = watch.one_line(_status())
    assert line == ("view 1 (primary R1), executed seq 42, 3/4 replicas up, evidence 3, "
                    "R0=byzantine:equivocate R3=down")


def test_a_party_that_did_not_answer_in_time_is_not_called_down():
    assert watch.replica_health({"id": "R1", "alive": False}) == "no answer"
    assert watch.replica_health({"id": "R1", "alive": False, "error": "RayActorError"}) == "down"


def test_the_live_view_shows_each_replica_and_the_load():
    load = watch.LoadCounters(committed=12, aborted=2, timeouts=1, completions=[10.0, 11.0, 12.0])
    console = Console(record=True, width=120, file=open(os.devnull, "w"))
    console.print(watch.render(_status(), load=load, phase="t=5s phase: R0 (the primary) equivocates", now=12.5))
    text = console.export_text()
    assert "byzantine:equivocate" in text and "down" in text and "view-change" not in text
    assert "committed 12  aborted 2  timed out 1  throughput 0.6 txn/s" in text
    assert "R0 (the primary) equivocates" in text
    assert [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ R")] == \
        ["R0", "R1", "R2", "R3"]


def test_plot_is_a_png_with_fault_markers(tmp_path):
    t0 = 1_000_000_000_000
    records = [{"status": "ok" if i % 5 else "fail", "end_ns": t0 + i * 200_000_000} for i in range(50)]
    records.append({"status": "info", "end_ns": None})
    events = [demo.FaultEvent(2.0, "R0 equivocates"), demo.FaultEvent(4.0, "R0 healed")]
    path = tmp_path / "sub" / "plot.png"
    demo.write_plot(str(path), records, events, t0, 10.0)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_each_phase_of_the_attack_gets_its_own_rate():
    t0 = 1_000_000_000_000
    at = lambda s: t0 + int(s * 1e9)  # noqa: E731
    records = [{"status": "ok", "end_ns": at(s)} for s in (0.5, 1.5, 2.5, 3.0, 3.5, 9.0, 12.0)]
    records += [{"status": "fail", "end_ns": at(1.0)}, {"status": "info", "end_ns": None}]
    events = [demo.FaultEvent(2.0, "R0 equivocates"), demo.FaultEvent(4.0, "R0 healed")]
    phases = demo.phase_rates(records, events, t0, load_s=10.0)
    assert [(p.name, p.start_s, p.end_s, p.committed) for p in phases] == [
        ("healthy", 0.0, 2.0, 2), ("R0 equivocates", 2.0, 4.0, 3), ("R0 healed", 4.0, 10.0, 2)]
    assert [p.per_s for p in phases] == [1.0, 1.5, 2 / 6]  # a straggler after the load counts in the last


def test_the_load_clients_are_declared_after_the_configured_ones():
    from dtm_ray.config import ClusterConfig

    from actors.loadgen_actor import client_names

    cfg = demo.with_load_clients(ClusterConfig(clients=("alice",)), 3)
    assert cfg.clients == ("alice", "lg0..c0", "lg0..c1", "lg0..c2")
    assert cfg.clients[1:] == tuple(client_names(demo.GENERATOR, 3))  # the names its generator gives them


def test_whole_bank_reads_only_while_the_bank_fits_in_one_transaction():
    assert demo.read_share_for(demo.bank_accounts(["db-0", "db-1"], 32), max_ops=64) == 0.1
    assert demo.read_share_for(demo.bank_accounts(["db-0", "db-1"], 33), max_ops=64) == 0.0


def test_progress_counts_commits_applied_at_the_kv_participants():
    progress = demo.CommitProgress(window_s=5.0)

    def status(db0, db1):
        return {"participants": {"db-0": {"kind": "kv", "committed": db0}, "db-1": {"kind": "kv", "committed": db1},
                                 "mq-0": {"kind": "queue", "committed": 1000}}}
    assert progress.line(status(0, 0), 256, now=10.0) == \
        "commits applied at db-0+db-1: 0 (0/s) | in flight at the load generator: 256"
    assert progress.line(status(300, 500), None, now=12.0) == \
        "commits applied at db-0+db-1: 800 (400/s) | in flight at the load generator: ?"
    assert progress.line(status(600, 800), 10, now=20.0).startswith("commits applied at db-0+db-1: 1400 (75/s)")


def test_applied_decisions_are_read_back_from_the_audit_log(tmp_path):
    """The audit line ``logs.output`` writes for an Applied event is what the demo parses."""
    directory = logs.log_dir(str(tmp_path))
    os.makedirs(directory)
    sink = logger.add(os.path.join(directory, "audit-db-0.jsonl"), serialize=True,
                      filter=lambda record: "txn" in record["extra"])
    try:
        bound = logger.bind(role="participant", id="db-0")
        logs.output(bound, Applied("db-0", "alice:3", 7, True, True))
        logs.output(bound, Applied("db-0", "bob:1", 8, False, None))
    finally:
        logger.remove(sink)
    assert demo.applied_events(str(tmp_path), ["db-0", "db-1"]) == [
        Applied("db-0", "alice:3", 7, True, True), Applied("db-0", "bob:1", 8, False, None)]


def test_the_demo_refuses_a_used_data_dir(tmp_path):
    (tmp_path / "R0").mkdir()
    with pytest.raises(ConfigError, match="not empty"):
        demo.check_data_dir(str(tmp_path))
    demo.check_data_dir(str(tmp_path / "fresh"))  # absent: fine


def test_verdicts_tell_safety_from_a_stall():
    assert demo.verdict_line([]).startswith("verdict: invariants held")
    stalled = demo.verdict_line(["liveness: no transaction committed after the faults healed"])
    assert stalled.startswith("verdict: safety invariants held, but the cluster STALLED: liveness: no")
    broken = demo.verdict_line(["liveness: x", "bank: total-changed: balances sum to 790, expected 800"])
    assert broken == "verdict: INVARIANTS BROKEN: bank: total-changed: balances sum to 790, expected 800"


def test_latency_percentiles():
    records = [{"status": "ok", "start_ns": 0, "end_ns": ms * 1_000_000} for ms in range(1, 101)]
    assert demo.latency_ms(records) == (50.5, 100.0)
    assert demo.latency_ms([]) == (None, None)


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_demo_end_to_end(tmp_path):
    """The main job as a user runs it (short): exit 0, the verdict, the plot."""
    plot = tmp_path / "demo.png"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", DTM_RAY_HOME=str(tmp_path / "home"),
               COLUMNS="200")  # the summary table unwrapped, so that its lines can be matched
    env.pop("DTM_RAY_FORBID_START", None)
    proc = subprocess.run([sys.executable, "-m", "dtm_ray.cli", "demo", "--duration", "15", "--plain",
                           "--load-clients", "8", "--accounts", "4",
                           "--data-dir", str(tmp_path / "data"), "--out", str(plot), "--seed", "3"],
                          capture_output=True, text=True, env=env, timeout=400)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "verdict: invariants held" in proc.stdout, tail
    assert "phase:" in proc.stdout  # plain progress lines, not a live view, when not a terminal
    assert "constructor arguments in the object store" not in proc.stderr, tail  # Ray's chaos-actor warning
    for check in ("bank", "atomicity", "liveness"):
        assert f"check: {check}" in proc.stdout and "anomalies" not in proc.stdout, tail
    assert "whole-bank reads consistent" in proc.stdout and " 0 whole-bank reads" not in proc.stdout, tail
    assert "8 logical clients (1 load generator)" in proc.stdout, tail
    assert "phase 4: R" in proc.stdout and "restarts" in proc.stdout, tail  # txn/s per phase of the attack
    assert "commits applied at db-0+db-1" in proc.stdout, tail  # the progress lines during the load
    data = plot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


class _FakeChaos:
    def __init__(self, cluster):
        self.cluster = cluster

    def byzantine(self, i, behaviour, seed=0):
        self.cluster.faulty.add(i)
        self.cluster.log.append(("byzantine", i, behaviour))

    def heal(self, i):
        self.cluster.faulty.discard(i)
        self.cluster.log.append(("heal", i))

    def kill(self, i):
        self.cluster.faulty.add(i)
        self.cluster.log.append(("kill", i))

    def restart(self, i):
        self.cluster.faulty.discard(i)
        self.cluster.log.append(("restart", i))


class _FakeCluster:
    """Just enough of a Cluster for the attack: a primary that moves on after an equivocation."""

    def __init__(self, n):
        self.config = type("Config", (), {"replica_count": n})()
        self.faulty, self.log, self.view, self.max_faulty = set(), [], 0, 0
        self.chaos = _FakeChaos(self)

    def status(self, timeout_s=None):
        self.max_faulty = max(self.max_faulty, len(self.faulty))
        if any(entry[0] == "byzantine" for entry in self.log):
            self.view = 1  # the equivocator was voted out
        n = self.config.replica_count
        return {"replicas": [{"id": f"R{i}", "alive": True, "view": self.view, "primary": f"R{self.view % n}"}
                             for i in range(n)]}


@pytest.mark.parametrize("n", [4, 7])
def test_the_attack_never_has_more_than_one_faulty_replica_and_spares_the_story(n):
    cluster = _FakeCluster(n)
    attack = demo.Attack(cluster, duration_s=10, t0=0.0, seed=1)
    for _, action in attack.steps():
        action()
        cluster.status()
    assert [entry[0] for entry in cluster.log] == ["byzantine", "heal", "kill", "restart"]
    equivocator, crashed = cluster.log[0][1], cluster.log[2][1]
    assert equivocator == 0 and cluster.log[0][2] == "equivocate"  # the primary of view 0
    assert crashed not in (equivocator, 1)  # neither the healed equivocator nor the new primary
    assert cluster.max_faulty == 1 and not cluster.faulty
    assert [e.label for e in attack.events] == ["R0 equivocates", "R0 healed", f"R{crashed} crashes",
                                                f"R{crashed} restarts"]
