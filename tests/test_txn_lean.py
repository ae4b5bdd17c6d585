"""The transaction layer stays lean and bounded as the load grows.

- Work per transaction is flat: a coordinator checks a transaction when one of its votes or its
  timer arrives, never because another transaction changed (``CoordinatorApp.work`` counts the
  checks and the timer-heap visits, a deterministic count, not a timing).
- Proposals are bounded by bytes: a signed vote batch travels once per ``DecideBatch``, and no
  proposal the coordinator builds exceeds ``proposal_bytes`` (far below the decoder's limit).
- Timers are heaps with lazy cancellation, bounded by twice the live keys.

Negative controls (each seen red): making ``proposals()`` re-check every pending transaction
fails the flat-work test; building each decision its own proposal (no sharing) fails the
evidence-by-reference test; a builder that ignores the byte budget fails the size tests.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dtm_ray.pbft.app import Verdict
from dtm_ray.sim.txn_fakelog import FakeLog, small_txn_config
from dtm_ray.txn.messages import DecideBatch, Forget, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.txn.proposals import DecideBuilder, forget_proposals
from dtm_ray.txn.timers import DeadlineHeap, ResendTimers
from dtm_ray.crypto import Envelope
from dtm_ray.wire import MAX_FIELD_BYTES, decode

TWO_KV = {"db-0": "kv", "db-1": "kv"}


def _burst(count: int, **config) -> FakeLog:
    """``count`` transfers ordered at once, then every message delivered one by one, each
    delivery followed by a PBFT-like step (proposals asked, a tick) on every replica."""
    log = FakeLog(small_txn_config(participants=TWO_KV, **config))
    for i in range(count):
        log.submit("alice", [Op.add("db-0", f"k{i}", 1), Op.add("db-1", f"k{i}", 1)])
    while log.deliver_one():
        pass
    return log


def _finish(log: FakeLog, rounds: int = 50) -> None:
    for _ in range(rounds):
        moved = log.order_due() + log.deliver()
        log.tick(log.config.resend_ms)
        if not moved and not any(a.status()["pending"] or a.status()["decided_kept"] for a in log.apps.values()):
            return


def _work_per_txn(count: int) -> float:
    log = _burst(count)
    _finish(log)
    results = [log.result(f"alice:{i}") for i in range(1, count + 1)]
    assert all(r is not None and r.committed for r in results), results[:3]
    app = log.apps["R0"]
    return (app.work["due_checks"] + app.work["timer_visits"]) / count


def test_work_per_transaction_stays_flat_when_ten_times_more_are_pending():
    small, large = _work_per_txn(30), _work_per_txn(300)
    assert large <= 1.5 * small + 1, (small, large)


def test_a_vote_batch_travels_once_per_proposal():
    """100 transactions whose PREPAREs all reach the participants before they flush: each
    participant signs one vote batch, and the DECIDEs carry each batch once, not once per
    decision (the old ``Decide`` carried 100 copies of each)."""
    log = FakeLog(small_txn_config(participants=TWO_KV))
    for i in range(100):
        log.submit("alice", [Op.add("db-0", f"k{i}", 1), Op.add("db-1", f"k{i}", 1)])
    while log.queue:
        sender, dest, payload = log.queue.popleft()
        log.participants[dest].receive(sender, payload)
    log._collect()
    log.deliver()
    proposals = log.apps["R0"].proposals()
    batches = [decode(p, DecideBatch) for p in proposals]
    envelopes = [e for b in batches for e in b.vote_batches]
    assert sum(len(b.decisions) for b in batches) == 100
    assert len(envelopes) == 2, len(envelopes)  # one signed vote batch per participant
    assert sum(map(len, proposals)) < 2 * sum(map(len, envelopes))
    assert all(log.apps[r].validate_proposal(p) is Verdict.ACCEPT for p in proposals for r in log.apps)
    assert sum(log.order_due() for _ in range(2)) == len(proposals)
    assert all(log.result(f"alice:{i}").committed for i in range(1, 101))


def test_the_largest_proposals_the_configuration_allows_stay_within_their_budget():
    """Votes with large reads fill vote batches up to ``vote_batch_bytes``; the proposals built
    from them stay within ``proposal_bytes`` (and far below the decoder's field limit), decode,
    are accepted by every replica, and commit every transaction."""
    config = {"proposal_bytes": 64 * 1024, "vote_batch_bytes": 16 * 1024}
    log = FakeLog(small_txn_config(participants=TWO_KV, **config))
    big, count = "x" * 1000, 120
    for p in TWO_KV:
        for first in (0, 60):
            log.submit("alice", [Op.put(p, f"k{i}", big) for i in range(first, first + 60)])
    log.settle()
    setups = 4
    for i in range(count):  # distinct keys: none waits for another's locks, all are due at once
        log.submit("alice", [Op.get("db-0", f"k{i}"), Op.get("db-1", f"k{i}")])
    while log.deliver_one():
        pass
    proposals = log.apps["R0"].proposals()
    assert len(proposals) > 3  # the budget cut them
    for proposal in proposals:
        assert len(proposal) <= config["proposal_bytes"] < MAX_FIELD_BYTES // 16
        batch = decode(proposal, DecideBatch)
        for envelope in batch.vote_batches:
            assert len(envelope) <= config["vote_batch_bytes"]
            assert decode(decode(envelope, Envelope).body, VoteBatch).votes
    for proposal in proposals:
        assert set(log.order_proposal(proposal).values()) == {Verdict.ACCEPT}
    assert all(log.result(f"alice:{i}").committed for i in range(1, setups + count + 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), min_size=1, max_size=200),
       st.integers(4 * 1024, 64 * 1024))
def test_a_decide_batch_never_exceeds_its_budget(decisions, budget):
    """Property: whatever the decisions and however their evidence is shared, every proposal
    built encodes within the budget, unless it is one decision whose own evidence exceeds it."""
    envelopes = [bytes([i]) * (100 + 97 * i) for i in range(41)]
    builder = DecideBuilder(budget)
    for n, (first, count) in enumerate(decisions):
        evidence = tuple(envelopes[(first + k) % 41] for k in range(count))
        builder.add(f"client-{n}:{n}", bool(count), evidence)
    built = builder.finish()
    assert sum(len(ids) for _, ids in built) == len(decisions)
    for proposal, ids in built:
        parsed = decode(proposal, DecideBatch)
        assert [d.txn_id for d in parsed.decisions] == list(ids)
        assert len(proposal) <= budget or len(ids) == 1


def test_forget_proposals_are_cut_by_bytes():
    ids = [f"client-{i}:{i}" for i in range(20_000)]
    built = forget_proposals(ids, 16 * 1024)
    assert [t for _, chunk in built for t in chunk] == ids
    assert all(len(p) <= 16 * 1024 and decode(p, Forget).txn_ids == chunk for p, chunk in built)


def test_a_deadline_heap_pops_only_what_expired_and_skips_what_was_cancelled():
    heap: DeadlineHeap[str] = DeadlineHeap()
    for i in range(100):
        heap.schedule(f"t{i}", 1000 + i)
    heap.cancel("t0")
    heap.schedule("t1", 5000)  # rescheduled: its old deadline no longer fires
    assert list(heap.expired(999)) == [] and heap.visits == 0
    assert list(heap.expired(1002)) == ["t2"]
    assert list(heap.expired(5000)) == [f"t{i}" for i in range(3, 100)] + ["t1"]
    for i in range(10_000):  # lazy cancellation never lets stale entries pile up
        heap.schedule("again", i)
    assert len(heap._heap) <= 2 * len(heap) + 1024


def test_resend_timers_back_off_and_forget():
    timers: ResendTimers[str] = ResendTimers(100, max_factor=4)
    timers.sent("a", 0)
    assert timers.due(99) == [] and timers.due(100) == ["a"]
    timers.sent("a", 100)  # waits 200 now, then 400, capped
    assert timers.due(299) == [] and timers.due(300) == ["a"]
    timers.sent("a", 300)
    timers.sent("a", 300)
    assert timers.due(699) == [] and timers.due(700) == ["a"]
    timers.forget("a")
    assert "a" not in timers and timers.due(10_000) == []
