"""Exponential resend backoff (dtm_ray.retry) and its use by the coordinator: a slow participant
gets a handful of PREPARE resends, not one per period."""

from hypothesis import given, strategies as st

from dtm_ray.retry import Backoff


def test_first_resend_after_base_then_doubling_up_to_the_cap():
    b = Backoff(100, max_factor=4)
    assert b.due("k", 0)
    b.sent("k", 0)
    assert not b.due("k", 99) and b.due("k", 100)
    b.sent("k", 100)
    assert not b.due("k", 299) and b.due("k", 300)
    b.sent("k", 300)
    b.sent("k", 700)  # capped at 400
    assert not b.due("k", 1099) and b.due("k", 1100)
    b.forget("k")
    assert b.due("k", 1100) and "k" not in b


@given(st.integers(1, 1000), st.integers(1, 32), st.lists(st.integers(0, 10_000), max_size=30))
def test_waits_never_shrink_and_never_exceed_the_cap(base, factor, gaps):
    b, now, last_wait = Backoff(base, max_factor=factor), 0, 0
    for gap in gaps:
        b.sent("k", now)
        sent_at, wait = b._sent["k"]
        assert base <= wait <= base * factor and wait >= last_wait
        assert not b.due("k", now + wait - 1) and b.due("k", now + wait)
        last_wait, now = wait, now + gap


def test_keep_only_forgets_the_rest():
    b = Backoff(10)
    for k in "abc":
        b.sent(k, 0)
    b.keep_only(["a", "c"])
    assert "b" not in b and len(b) == 2


def test_a_silent_participant_gets_a_handful_of_prepares_not_one_per_period():
    """The coordinator resends PREPAREs to a participant that never votes: over 10 s with a 200 ms
    base, a fixed period would send 50 batches; backoff (cap 16x) sends 1 + a handful."""
    from dtm_ray.crypto import generate_keys
    from dtm_ray.txn.config import TxnConfig
    from dtm_ray.txn.coordinator import CoordinatorApp
    from dtm_ray.txn.messages import TxnRequest
    from dtm_ray.txn.ops import Op
    from dtm_ray.wire import encode

    replicas = ("R0", "R1", "R2", "R3")
    keys = generate_keys([*replicas, "db-0", "c"], seed=3)
    cfg = TxnConfig(replicas=replicas, f=1, participants={"db-0": "kv"}, resend_ms=200, vote_timeout_ms=60_000)
    app = CoordinatorApp("R0", cfg, keys["R0"])
    app.tick(0)
    app.execute(1, "c", 1, encode(TxnRequest((Op.put("db-0", "k", 1),))))
    batches = 0
    for now in range(0, 10_000, 10):
        app.tick(now)
        batches += sum(1 for dest, _ in app.take_messages() if dest == "db-0")
    assert 4 <= batches <= 8, batches
