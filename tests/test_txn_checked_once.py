"""Work a coordinator replica does once instead of twice: a request checked at intake is not
decoded and checked again when it executes (``txn.requests``), and a proposal's decisions are
listed once for its validation and its execution (``txn.proposals.DecodedProposals``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dtm_ray.sim.txn_fakelog import small_txn_config
from dtm_ray.txn import requests as requests_module
from dtm_ray.txn.messages import Decision, DecideBatch, TxnRequest
from dtm_ray.txn.ops import Op
from dtm_ray.txn.proposals import DecodedProposals, decisions_in
from dtm_ray.txn.requests import RequestRules
from dtm_ray.wire import encode

VALID = encode(TxnRequest((Op.put("db-0", "k", 1), Op.add("db-1", "a", 5))))
UNKNOWN_PARTICIPANT = encode(TxnRequest((Op.put("db-9", "k", 1),)))


def counting_decodes(monkeypatch) -> list:
    calls = []
    real = requests_module.decode
    monkeypatch.setattr(requests_module, "decode", lambda data, cls: calls.append(data) or real(data, cls))
    return calls


def test_a_request_found_valid_at_intake_is_not_decoded_again_when_it_executes(monkeypatch):
    rules = RequestRules(small_txn_config())
    decodes = counting_decodes(monkeypatch)
    assert rules.check("alice", VALID) is None
    request, problem = rules.for_execution("alice", VALID)
    assert problem is None and request == TxnRequest((Op.put("db-0", "k", 1), Op.add("db-1", "a", 5)))
    assert len(decodes) == 1
    rules.for_execution("alice", VALID)  # taken once: a second execution (a replay) checks again
    assert len(decodes) == 2


def test_what_execution_decides_does_not_depend_on_whether_intake_saw_the_request():
    config = small_txn_config()
    for client, operation in [("alice", VALID), ("alice", UNKNOWN_PARTICIPANT), ("alice", b"\x93garbage")]:
        checked, fresh = RequestRules(config), RequestRules(config)
        checked.check(client, operation)
        assert checked.for_execution(client, operation) == fresh.for_execution(client, operation)
    seen_by_bob = RequestRules(config)
    seen_by_bob.check("bob", VALID)  # another client's bytes: no shortcut for alice's
    assert seen_by_bob.for_execution("alice", VALID) == RequestRules(config).for_execution("alice", VALID)
    assert ("bob", VALID) in seen_by_bob._valid


def test_an_invalid_request_is_refused_and_not_kept():
    rules = RequestRules(small_txn_config())
    assert "unknown participant" in rules.check("alice", UNKNOWN_PARTICIPANT)
    assert "invalid request" in rules.check("alice", b"not msgpack")
    assert not rules._valid
    request, problem = rules.for_execution("alice", b"not msgpack")
    assert request is None and problem.startswith("invalid request")


def test_the_valid_requests_kept_are_bounded():
    rules = RequestRules(small_txn_config(), max_entries=8)
    for i in range(50):
        assert rules.check(f"c{i}", VALID) is None
    assert len(rules._valid) == 8 and ("c49", VALID) in rules._valid and ("c0", VALID) not in rules._valid


indices = st.lists(st.integers(-2, 6), min_size=0, max_size=4).map(tuple)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.lists(indices, min_size=0, max_size=6))
def test_decisions_are_listed_as_the_generic_rule_lists_them(batches, evidences):
    """The fast paths for one and two vote batches agree with the generic index check."""
    batch = DecideBatch(tuple(bytes([i]) * 3 for i in range(batches)),
                        tuple(Decision(f"t{i}", bool(i % 2), ev) for i, ev in enumerate(evidences)))
    expected = [(d.txn_id, d.commit, tuple(batch.vote_batches[i] for i in d.evidence)) for d in batch.decisions
                if all(0 <= i < batches for i in d.evidence)]
    assert decisions_in(batch) == expected


def test_a_proposals_decisions_are_listed_once():
    batch = encode(DecideBatch((b"v",), (Decision("t1", True, (0,)), Decision("t2", False, (0,)))))
    decoded = DecodedProposals()
    first = decoded.decisions(batch)
    assert [d[0] for d in first] == ["t1", "t2"]
    assert decoded.decisions(batch) is first
    assert decoded.parse(b"not a proposal") is None and decoded.decisions(b"not a proposal") == []
