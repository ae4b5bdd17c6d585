"""Resource limits: what a flood can make a party remember or write is bounded.

- ``dtm_ray.limits``: the token bucket and the report throttle (bounded keys, bounded reports);
- a replica flooded with garbage under thousands of invented sender names keeps a bounded
  rejection table; a Byzantine replica's votes far ahead of the high watermark take no memory;
- in the simulator, a flooding sender hammering one replica while honest clients run: the
  replica's pending requests, log, early votes and rejection table stay bounded throughout, and
  the honest clients keep committing;
- a Byzantine primary's PRE-PREPARE with more than ``batch_size`` requests + proposals is
  refused by the backups (evidence: invalid-batch, view change);
- a flood of Rejected outputs writes one log line per sender per period (``logs.REPORTS``),
  each with the number it stands for, and every one is counted.

Negative controls: ``test_negative_control_an_unbounded_rejection_table_grows_with_the_flood``,
``test_negative_control_without_the_window_check_far_votes_take_memory``,
``test_negative_control_without_the_size_check_the_oversized_batch_is_accepted`` and
``test_negative_control_without_the_throttle_every_rejection_is_a_line``.
"""

from __future__ import annotations

import random
from dataclasses import replace

from dtm_ray.limits import OTHERS, Throttle, TokenBucket
from dtm_ray.pbft import replica as replica_module
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.pbft.log import Log
from dtm_ray.pbft.messages import Commit, Prepare, PrePrepare, batch_digest, seal
from dtm_ray.sim.hostile import (ATTACK_END_MS, ATTACK_START_MS, FuzzingSender, client_request, hostile_world,
                                 honest_throughput, rejections, run_client_attack, vote_batch)
from dtm_ray.txn.early_votes import EARLY_VOTES
from dtm_ray.txn.messages import Vote
from dtm_ray.txn.ops import Op

SEED = 3


# ---------------------------------------------------------------------------------------------
# dtm_ray.limits


def test_a_token_bucket_allows_a_burst_then_the_sustained_rate():
    bucket = TokenBucket(rate_per_s=100, burst=10)
    assert sum(bucket.allow("c", 0) for _ in range(50)) == 10
    assert sum(bucket.allow("c", 100) for _ in range(50)) == 10  # 100 ms at 100/s refills 10
    assert sum(bucket.allow("d", 100) for _ in range(5)) == 5  # another key has its own bucket
    assert bucket.refused["c"] == 80


def test_invented_keys_share_one_bucket_beyond_max_keys():
    bucket = TokenBucket(rate_per_s=1, burst=1, max_keys=100)
    allowed = sum(bucket.allow(f"sender-{i}", 0) for i in range(10_000))
    assert len(bucket) == 100 and allowed == 100  # 99 named buckets + the shared one, spent once
    assert len(bucket.refused) <= 100 and OTHERS in bucket.refused


def test_a_flood_of_the_same_rejection_is_reported_once_per_period_and_fully_counted():
    throttle = Throttle(period_ms=10_000)
    reports = [throttle.report("Rejected", "mallory", t) for t in range(0, 60_000, 1)]
    shown = [r for r in reports if r is not None]
    assert len(shown) == 6 and shown[0] == 0 and shown[1] == 9_999
    assert throttle.summary() == {"Rejected:mallory": 60_000}


def test_the_throttle_table_is_bounded_under_invented_keys():
    throttle = Throttle(period_ms=1_000, max_keys=50)
    shown = sum(throttle.report("Rejected", f"s{i}", 0) is not None for i in range(5_000))
    assert shown == 50 and len(throttle.summary()) == 50


# ---------------------------------------------------------------------------------------------
# A replica's own tables


def _world():
    world, honest, hostile = hostile_world(SEED)
    world.sim.run_for(ATTACK_START_MS)
    return world, honest, hostile


def test_a_flood_under_invented_sender_names_keeps_the_rejection_table_bounded():
    world, _, _ = _world()
    replica = world.sim.node("R1")
    rng = random.Random(SEED)
    for i in range(5_000):
        replica.receive(f"invented-{i}", rng.randbytes(20))
    replica.take_ready()
    table = replica.status()["rejected"]
    assert len(table) <= replica_module.MAX_COUNTED_SENDERS + 1
    assert sum(table.values()) == 5_000


def test_negative_control_an_unbounded_rejection_table_grows_with_the_flood(monkeypatch):
    bound = replica_module.MAX_COUNTED_SENDERS
    monkeypatch.setattr(replica_module, "MAX_COUNTED_SENDERS", 10**9)
    world, _, _ = _world()
    replica = world.sim.node("R1")
    for i in range(5_000):
        replica.receive(f"invented-{i}", b"\x00")
    assert len(replica.status()["rejected"]) > bound + 1


def _far_votes(world, count: int) -> list[bytes]:
    """Votes signed by R3 (a Byzantine replica may sign anything with its own key) for sequence
    numbers far beyond the watermark window, with random digests."""
    rng = random.Random(SEED)
    high = world.sim.node("R1").log.high
    keys = world.keys["R3"]
    return [seal(keys, (Prepare if i % 2 else Commit)(0, high + 1 + rng.randrange(10**9), rng.randbytes(32)))
            for i in range(count)]


def test_votes_ahead_of_the_high_watermark_take_no_memory():
    world, _, _ = _world()
    replica = world.sim.node("R1")
    before = len(replica.log)
    for payload in _far_votes(world, 3_000):
        replica.receive("R3", payload)
    replica.take_ready()
    assert len(replica.log) <= max(before, world.config.watermark_window)
    assert replica.ignored >= 3_000


def test_negative_control_without_the_window_check_far_votes_take_memory(monkeypatch):
    monkeypatch.setattr(Log, "in_window", lambda self, seq: True)
    world, _, _ = _world()
    replica = world.sim.node("R1")
    for payload in _far_votes(world, 500):
        replica.receive("R3", payload)
    assert len(replica.log) > world.config.watermark_window


# ---------------------------------------------------------------------------------------------
# A flooded replica keeps serving the others


def test_a_flooded_replica_stays_bounded_and_honest_clients_keep_committing():
    """The flood reaches each bound it checks: garbage, far votes, valid requests of the hostile
    client (its pending quota), and a participant's votes for transactions nobody ordered (the
    early-vote queue), beside the honest load."""
    world, honest, hostile = hostile_world(SEED)
    rng = random.Random(SEED)
    far = []
    next_rid = iter(range(1, 10**6))

    def make(r: random.Random, dest: str) -> bytes:
        choice = r.randrange(5)
        if choice == 0:
            return r.randbytes(r.randrange(1, 400))
        if choice == 1 and far:
            return far[r.randrange(len(far))]
        if choice == 2:
            return make_request()
        if choice == 3:
            base = 10**7 + r.randrange(10**9)
            return vote_batch(world.keys["db-0"], [Vote(f"c0:{base + i}", i, True, [], None) for i in range(60)])
        return seal(world.keys["R3"], Prepare(0, 10**6 + r.randrange(10**6), r.randbytes(32)))

    flooder = FuzzingSender("R3", ["R1"], make, rng, period_ms=1, until_ms=ATTACK_END_MS)
    world.sim.schedule(ATTACK_START_MS, lambda sim: (far.extend(_far_votes(world, 50)), flooder.start(sim)))
    peaks = {"pending_requests": 0, "hostile_pending": 0, "log_entries": 0, "early_votes": 0, "rejected_keys": 0}

    def probe(sim) -> None:
        status = sim.node("R1").status()
        for key, value in (("pending_requests", status["pending_requests"]), ("log_entries", status["log_entries"]),
                           ("hostile_pending", sim.node("R1").pending_per_client[hostile]),
                           ("early_votes", sim.node("R1").app._book.early.count("db-0")),
                           ("rejected_keys", len(status["rejected"]))):
            peaks[key] = max(peaks[key], value)
        if sim.now_ms < ATTACK_END_MS:
            sim.schedule(sim.now_ms + 25, probe)

    def burst(sim) -> None:  # more of the hostile client's requests at once than its quota
        for _ in range(4 * replica_module.MAX_PENDING_PER_CLIENT):
            sim.inject(hostile, "R1", make_request())

    def make_request() -> bytes:
        return client_request(world.keys[hostile], world.config, next(next_rid), [Op.get("db-0", "k")])

    world.sim.schedule(ATTACK_START_MS + 100, burst)
    world.sim.schedule(0, probe)
    world.sim.run_for(ATTACK_END_MS)
    sent = sum(flooder.sent.values())
    assert sent >= 1_400, sent
    assert peaks["pending_requests"] <= replica_module.MAX_PENDING, peaks
    assert peaks["hostile_pending"] <= replica_module.MAX_PENDING_PER_CLIENT, peaks
    assert rejections(world, "R1", "too many pending requests") > 0, peaks  # the quota was reached
    assert peaks["log_entries"] <= world.config.watermark_window + 1, peaks
    assert peaks["early_votes"] == EARLY_VOTES, peaks  # the flood filled the queue, never past it
    assert peaks["rejected_keys"] <= 10, peaks
    flooded_tps = honest_throughput(world, honest, ATTACK_START_MS, ATTACK_END_MS)
    baseline = run_client_attack(None, SEED)[2]
    assert flooded_tps >= 0.75 * baseline, (flooded_tps, baseline)


# ---------------------------------------------------------------------------------------------
# Bounded batches (docs/threat-model.md, hardening finding 5)


def _preprepare_of(world, hostile: str, count: int) -> tuple[PrePrepare, bytes]:
    """A PRE-PREPARE signed by the primary R0 with ``count`` valid requests, inside R1's window."""
    requests = tuple(client_request(world.keys[hostile], world.config, 10 + i, [Op.get("db-0", "k")])
                     for i in range(count))
    replica = world.sim.node("R1")
    pp = PrePrepare(replica.view, replica.log.high, batch_digest(requests, ()), requests, ())
    return pp, seal(world.keys["R0"], pp)


def test_a_pre_prepare_larger_than_batch_size_is_refused_as_evidence_against_the_primary():
    """A Byzantine primary may sign a batch of any length up to the 8 MiB envelope: backups
    refuse more than ``batch_size`` requests + proposals before verifying them, and the signed
    PRE-PREPARE is evidence (invalid-batch) and a reason to change view."""
    world, _, hostile = hostile_world(SEED, pbft={"batch_size": 4})
    world.sim.run_for(ATTACK_START_MS)
    replica = world.sim.node("R1")
    pp, payload = _preprepare_of(world, hostile, 5)
    replica.receive("R0", payload)
    outputs = replica.take_ready().outputs
    assert replica.log.slot(pp.seq).pp != pp, f"seed={SEED}: the oversized batch was accepted"
    assert [o for o in outputs if isinstance(o, Evidence) and o.kind == "invalid-batch" and o.accused == "R0"]
    assert replica.view_changing and replica.vc_target == pp.view + 1


def test_control_a_pre_prepare_of_exactly_batch_size_is_accepted():
    """The bound is batch_size itself: what a correct primary cuts is never refused (without this,
    the test above could pass because the forged batch were refused for another reason)."""
    world, _, hostile = hostile_world(SEED, pbft={"batch_size": 4})
    world.sim.run_for(ATTACK_START_MS)
    replica = world.sim.node("R1")
    pp, payload = _preprepare_of(world, hostile, 4)
    replica.receive("R0", payload)
    outputs = replica.take_ready().outputs
    assert replica.log.slot(pp.seq).pp == pp, f"seed={SEED}"
    assert not [o for o in outputs if isinstance(o, Evidence)]


def test_negative_control_without_the_size_check_the_oversized_batch_is_accepted(monkeypatch):
    checked = replica_module.Replica._check_batch

    def unbounded(self, pp):  # the same check, with batch_size out of the way
        config, self.config = self.config, replace(self.config, batch_size=10**9)
        try:
            return checked(self, pp)
        finally:
            self.config = config

    monkeypatch.setattr(replica_module.Replica, "_check_batch", unbounded)
    world, _, hostile = hostile_world(SEED, pbft={"batch_size": 4})
    world.sim.run_for(ATTACK_START_MS)
    replica = world.sim.node("R1")
    pp, payload = _preprepare_of(world, hostile, 5)
    replica.receive("R0", payload)
    assert replica.log.slot(pp.seq).pp == pp  # the assertion of the refusal test above would fail


# ---------------------------------------------------------------------------------------------
# Rate-limited logging (docs/threat-model.md, hardening finding 7)


def _log_flood(count: int, period_ms: int = 1) -> list[str]:
    """``count`` Rejected outputs of one sender, one per ``period_ms``, plus one Evidence and one
    Rejected of another sender, through ``logs.output``: the WARNING lines written."""
    from loguru import logger

    from dtm_ray import logs

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING", format="{message}")
    try:
        bound = logger.bind(role="replica", id="R1", view="-", seq="-")
        for i in range(count):
            logs.output(bound, Rejected("R1", "mallory", f"malformed #{i}"), now_ms=i * period_ms)
        logs.output(bound, Rejected("R1", "alice", "bad MAC"), now_ms=count * period_ms)
        logs.output(bound, Evidence("R1", "R0", "invalid-batch", (b"p",)), now_ms=count * period_ms)
    finally:
        logger.remove(sink)
    return lines


def test_a_flood_of_rejections_writes_a_bounded_number_of_log_lines_and_counts_them_all(monkeypatch):
    from dtm_ray import logs

    monkeypatch.setattr(logs, "REPORTS", Throttle(period_ms=logs.REPORT_PERIOD_MS))
    lines = _log_flood(60_000)  # one per virtual ms for 60 s
    mallory = [line for line in lines if "'mallory'" in line]
    assert len(mallory) == 60_000 // logs.REPORT_PERIOD_MS, mallory
    assert "suppressed" not in mallory[0] and "(+9999 similar suppressed)" in mallory[1]
    assert sum("'alice'" in line for line in lines) == 1  # another sender is not drowned out
    assert sum(line.startswith("Evidence") for line in lines) == 1
    assert logs.reports_summary() == {"Rejected:mallory": 60_000, "Rejected:alice": 1, "Evidence:R0": 1}


def test_negative_control_without_the_throttle_every_rejection_is_a_line(monkeypatch):
    from dtm_ray import logs

    class Unthrottled(Throttle):
        def report(self, kind: str, key: str, now_ms: int) -> int | None:
            super().report(kind, key, now_ms)
            return 0

    monkeypatch.setattr(logs, "REPORTS", Unthrottled())
    assert len(_log_flood(5_000)) == 5_002  # the assertion of the flood test above would fail


# ---------------------------------------------------------------------------------------------
# The admitted-request cache is bounded in bytes


def test_a_flood_of_large_valid_requests_fills_the_admitted_cache_to_its_bound_and_no_further():
    """A declared client floods R1 with distinct valid requests of nearly ``max_request_bytes``
    (each one authentic: the cache would have kept up to 20,000 of them, ~1.3 GB). The cache
    (shrunk here so the flood can reach it) fills to its byte bound, never past it, and the
    honest clients keep committing."""
    world, honest, hostile = hostile_world(SEED)
    bound = 512 * 1024
    world.sim.invoke("R1", lambda node: setattr(node._admitted, "max_bytes", bound))
    value = "x" * (world.config.max_request_bytes - 1_000)
    rids = iter(range(1, 10**6))
    peaks = {"bytes": 0, "entries": 0}

    def flood(sim) -> None:
        for _ in range(5):
            ops = [Op.put("db-0", f"big:{next(rids) % 50}", value)]
            sim.inject(hostile, "R1", client_request(world.keys[hostile], world.config, next(rids), ops))
        cache = sim.node("R1")._admitted
        peaks["bytes"], peaks["entries"] = max(peaks["bytes"], cache.bytes), max(peaks["entries"], len(cache))
        if sim.now_ms < ATTACK_END_MS:
            sim.schedule(sim.now_ms + 5, flood)

    world.sim.schedule(ATTACK_START_MS, flood)
    world.sim.run_for(ATTACK_END_MS)
    context = f"seed={SEED} peaks={peaks}"
    assert bound - world.config.max_request_bytes <= peaks["bytes"] <= bound, context  # filled, bounded
    flooded_tps = honest_throughput(world, honest, ATTACK_START_MS, ATTACK_END_MS)
    baseline = run_client_attack(None, SEED)[2]
    assert flooded_tps >= 0.75 * baseline, (context, flooded_tps, baseline)
