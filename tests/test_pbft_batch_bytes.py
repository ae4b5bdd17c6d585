"""PRE-PREPAREs bounded by bytes as well as by count (issue 11 part 2, the PBFT side).

- the largest PRE-PREPARE the configuration allows (``max_batch_bytes`` of requests of
  ``max_request_bytes``, signed) encodes below the decoder's field limit and decodes back;
- the primary's cut (``_cut_batch``) never exceeds ``batch_size`` or ``max_batch_bytes``, for
  any mix of entry sizes (hypothesis), and says "full" exactly when the next entry did not fit;
- a backup refuses a signed batch over the byte budget (evidence against the primary);
- a configuration whose budget could not hold one request, or would not fit the decoder, is a
  ConfigError.

Negative control: without the byte cut, ``test_the_cut_respects_count_and_bytes`` fails (the
cut takes ``batch_size`` entries of any size).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtm_ray.crypto import Envelope, generate_keys, open_envelope
from dtm_ray.errors import ConfigError
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.app import Verdict
from dtm_ray.pbft.config import PbftConfig, batch_item_bytes
from dtm_ray.pbft.messages import PrePrepare, Request, batch_digest, seal, seal_request
from dtm_ray.sim.pbft_world import build_world, small_config
from dtm_ray.wire import MAX_FIELD_BYTES, decode

REPLICAS = ("R0", "R1", "R2", "R3")
KEYS = generate_keys([*REPLICAS, "alice"], seed=1)


def largest_requests(config: PbftConfig) -> tuple[bytes, ...]:
    """As many requests of ``max_request_bytes`` as the byte budget admits."""
    requests, size, rid = [], 0, 0
    while True:
        rid += 1
        req = seal_request(KEYS["alice"], config.replicas, config.auth_scheme,
                           Request("alice", rid, b"x" * config.max_request_bytes))
        if size + batch_item_bytes(req) > config.max_batch_bytes:
            return tuple(requests)
        size += batch_item_bytes(req)
        requests.append(req)


@pytest.mark.parametrize("scheme", ["ed25519", "hmac"])
@pytest.mark.parametrize("max_batch_bytes", [None, MAX_FIELD_BYTES - 1024])
def test_the_largest_preprepare_the_configuration_allows_decodes(scheme, max_batch_bytes):
    config = PbftConfig(REPLICAS, 1, auth_scheme=scheme)
    if max_batch_bytes is not None:
        config = replace(config, max_batch_bytes=max_batch_bytes)
    requests = largest_requests(config)
    assert len(requests) >= 2
    pp = PrePrepare(7, 10**6, batch_digest(requests, ()), requests, ())
    payload = seal(KEYS["R0"], pp)
    env = open_envelope(payload)
    assert len(env.body) < MAX_FIELD_BYTES
    assert decode(env.body, PrePrepare) == pp
    assert decode(payload, Envelope).sender == "R0"


def test_a_configuration_that_cannot_bound_its_batches_is_refused():
    with pytest.raises(ConfigError, match="decoder"):
        PbftConfig(REPLICAS, 1, max_batch_bytes=MAX_FIELD_BYTES)
    with pytest.raises(ConfigError, match="one request"):
        PbftConfig(REPLICAS, 1, max_request_bytes=64 * 1024, max_batch_bytes=64 * 1024)


def _primary(batch_size: int, max_batch_bytes: int):
    config = small_config(4, batch_size=batch_size, max_request_bytes=1024, max_batch_bytes=max_batch_bytes)
    world = build_world(1, 4, clients=1, config=config)
    return world.replica("R0")


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 1024 + 4096), min_size=0, max_size=40),
       props=st.lists(st.integers(1, 6000), min_size=0, max_size=5),
       batch_size=st.integers(1, 20), budget=st.integers(6 * 1024, 40 * 1024))
def test_the_cut_respects_count_and_bytes(sizes, props, batch_size, budget):
    primary = _primary(batch_size, budget)
    primary.queued_proposals = dict.fromkeys(bytes([i % 256]) * n + i.to_bytes(2, "big") for i, n in enumerate(props))
    primary.queued = {("c", i): b"r" * n for i, n in enumerate(sizes)}
    cut_props, cut_reqs, full = primary._cut_batch()
    entries = cut_props + [p for _, p in cut_reqs]
    total = sum(map(batch_item_bytes, entries))
    assert len(entries) <= batch_size
    assert total <= budget or len(entries) == 1
    queue = list(primary.queued_proposals) + list(primary.queued.values())
    assert entries == queue[:len(entries)]  # proposals first, then requests, in queue order
    rest = queue[len(entries):]
    expected_full = len(entries) == batch_size or (bool(rest) and total + batch_item_bytes(rest[0]) > budget)
    assert full == expected_full, (len(entries), total, budget)


def test_a_backup_refuses_a_signed_batch_over_the_byte_budget():
    config = PbftConfig(REPLICAS, 1, max_request_bytes=1024, max_batch_bytes=8 * 1024)
    world = build_world(1, 4, clients=1, config=config)
    backup = world.replica("R1")
    requests = tuple(seal_request(world.keys["c0"], REPLICAS, config.auth_scheme, Request("c0", i, kvapp.put("k", "x" * 950)))
                     for i in range(1, 10))
    pp = PrePrepare(0, 1, batch_digest(requests, ()), requests, ())
    verdict, reason, _ = backup._check_batch(pp)
    assert (verdict.name, reason) == ("REJECT", "batch larger than max_batch_bytes")
    fits = requests[:7]
    assert backup._check_batch(PrePrepare(0, 1, batch_digest(fits, ()), fits, ())) == (Verdict.ACCEPT, None, ())
