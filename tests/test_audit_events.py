"""The audit trail's pure side: an App's ``take_events`` reach ``Ready.outputs`` through the
replica, and the coordinator reports each step of a transaction's life (order, prepares, decide,
final) and equivocating votes as evidence, once."""

from __future__ import annotations

from dataclasses import dataclass

from dtm_ray.crypto import open_envelope, seal_signed
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.app import take_events
from dtm_ray.pbft.events import Evidence
from dtm_ray.sim.txn_fakelog import FakeLog, small_txn_config
from dtm_ray.txn.events import Decided, Final, Ordered, PreparesSent
from dtm_ray.txn.messages import Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode

from tests.pbft_harness import Harness


@dataclass(frozen=True)
class Seen:
    seq: int
    request_id: int


class ReportingKvApp(kvapp.KvApp):
    """A KvApp that reports each execution, and a (fake) proof against db-9 at seq 2."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list = []

    def execute(self, seq, client, request_id, operation):
        self.events.append(Seen(seq, request_id))
        if seq == 2:
            self.events.append(Evidence("?", "db-9", "test-proof", (b"p",)))
        return super().execute(seq, client, request_id, operation)

    def take_events(self) -> list:
        events, self.events = self.events, []
        return events


def test_the_replica_surfaces_its_apps_events_as_outputs():
    h = Harness(4)
    for r in h.replica_ids:
        h.start(r, ReportingKvApp())
    for _ in range(3):
        h.submit(kvapp.incr("x"))
    h.run_until(lambda: len(h.results()) == 3, max_ms=3_000)
    for r in h.replica_ids:
        assert [e.request_id for e in h.events(r, Seen)] == [1, 2, 3], r
        # an app's Evidence is the replica's: recorded once, counted in status
        assert [(e.replica, e.accused, e.kind) for e in h.events(r, Evidence)] == [(r, "db-9", "test-proof")]
        assert h.replica(r).status()["evidence"] == {"db-9": 1}
        assert h.apps[r].events == []  # drained


def test_an_app_without_take_events_reports_none():
    assert take_events(kvapp.KvApp()) == []
    h = Harness(4)
    h.submit(kvapp.incr("x"))
    h.run_until(lambda: len(h.results()) == 1, max_ms=3_000)
    assert not h.events("R1", Seen)


def test_the_coordinator_reports_order_prepares_decide_and_final():
    log = FakeLog(small_txn_config())
    txn = log.submit("alice", [Op.put("db-0", "k", 1), Op.enqueue("mq-0", "m")])
    log.settle()
    assert log.result(txn).committed
    for r, app in log.apps.items():
        events = [e for e in app.take_events() if getattr(e, "txn_id", None) == txn]
        assert [type(e) for e in events] == [Ordered, PreparesSent, Decided, Final], r
        ordered, prepares, decided, _ = events
        assert prepares.participants == ("db-0", "mq-0") and prepares.pseqs == (0, 0)
        assert (decided.outcome, decided.reason) == ("commit", None)
        assert decided.seq > ordered.seq >= 1
        assert app.take_events() == []


def test_an_equivocating_vote_is_reported_as_evidence_once():
    log = FakeLog(small_txn_config())
    db1 = log.keys["db-1"]

    def equivocate(sender, dest, payload):  # db-1 tells R2 and R3 YES and NO, on every resend
        if sender != "db-1" or dest not in ("R2", "R3"):
            return [payload]
        batch = decode(open_envelope(payload).body)
        if not isinstance(batch, VoteBatch):
            return [payload]
        flipped = tuple(Vote(v.txn_id, v.pseq, False, [], "no!") for v in batch.votes)
        return [payload, seal_signed(db1, VoteBatch("db-1", flipped)), payload]

    log.intercept = equivocate
    txn = log.submit("alice", [Op.put("db-0", "k", 1), Op.put("db-1", "k", 1)])
    log.settle()
    for r in ("R2", "R3"):
        evidence = [e for e in log.apps[r].take_events() if isinstance(e, Evidence)]
        assert [(e.replica, e.accused, e.kind) for e in evidence] == [(r, "db-1", "equivocating-vote")], txn
        assert len(log.apps[r].evidence) == 1


def test_the_audit_log_keeps_each_event_with_its_txn_id_and_seq(tmp_path):
    import os

    from loguru import logger

    from dtm_ray import logs

    directory = logs.log_dir(str(tmp_path))
    os.makedirs(directory)
    sink = logger.add(os.path.join(directory, "audit-R1.jsonl"), serialize=True, level="TRACE",
                      filter=lambda record: "txn" in record["extra"])
    try:
        bound = logger.bind(role="replica", id="R1", view="-", seq="-")
        for event in (Ordered("alice:3", 5), PreparesSent("alice:3", ("db-0",), (2,)),
                      Decided("alice:3", "commit", 6, None), Final("alice:3"), Ordered("bob:1", 7)):
            logs.output(bound, event)
    finally:
        logger.remove(sink)
    trail = logs.audit(directory, "alice:3")
    assert [(r["party"], r["message"].split(" ")[0], r["seq"]) for r in trail] == [
        ("R1", "Ordered", 5), ("R1", "PreparesSent", "-"), ("R1", "Decided", 6), ("R1", "Final", "-")]


def test_evidence_about_a_transaction_is_in_its_audit_trail(tmp_path):
    """(docs/threat-model.md, hardening finding 8) ``dtm-ray audit TXN`` shows the equivocating-vote evidence about TXN."""
    import os

    from loguru import logger

    from dtm_ray import logs

    directory = logs.log_dir(str(tmp_path))
    os.makedirs(directory)
    sink = logger.add(os.path.join(directory, "audit-R2.jsonl"), serialize=True, level="TRACE",
                      filter=lambda record: "txn" in record["extra"])
    try:
        bound = logger.bind(role="replica", id="R2", view="-", seq="-")
        logs.output(bound, Evidence("R2", "db-1", "equivocating-vote", (b"yes", b"no"), "alice:3"))
        logs.output(bound, Evidence("R2", "R0", "equivocation", (b"a", b"b")))  # names no txn
    finally:
        logger.remove(sink)
    trail = logs.audit(directory, "alice:3")
    assert [(r["party"], r["message"].split(" ")[0]) for r in trail] == [("R2", "Evidence")]
    assert "db-1" in trail[0]["message"] and "equivocating-vote" in trail[0]["message"]
