"""No VIEW-CHANGE or NEW-VIEW the protocol builds can outgrow the decoder.

A certificate quotes the PRE-PREPARE's signed header, never its batch: the largest VIEW-CHANGE
(a full window of certificates over batches at ``max_batch_bytes``) and the NEW-VIEW of 2f+1 of
them are built with real keys, decoded by the strict decoder and verified, and stay within the
bound ``sizes`` computes (which the config checks against the decoder's limit). Then, in the
simulator with the transport's real size limit: 2,000 closed-loop clients and a crashed primary
in the middle of their load; the view change completes and every transaction is answered.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtm_ray.crypto import generate_keys
from dtm_ray.errors import ConfigError
from dtm_ray.pbft.config import BATCH_ITEM_OVERHEAD, PbftConfig
from dtm_ray.pbft.messages import (Checkpoint, NewView, PrePrepare, Prepare, PreparedProof, ViewChange, batch_digest,
                                   quote_preprepare, seal)
from dtm_ray.pbft.certcache import VerifiedCertificates
from dtm_ray.pbft.sizes import view_change_bytes
from dtm_ray.pbft.viewchange import plan_new_view, preprepares_for, verify_new_view, verify_view_change
from dtm_ray.pbft.events import ViewChanged
from dtm_ray.sim.txn_world import build_txn_world
from dtm_ray.txn.messages import OUTGOING_BATCH_BYTES, PrepareBatch, PrepareItem, fitting_batches
from dtm_ray.txn.ops import Op
from dtm_ray.wire import MAX_FIELD_BYTES, decode
from dtm_ray.crypto import Envelope


def _config(f: int, interval: int, window_factor: int) -> PbftConfig:
    n = 3 * f + 1
    return PbftConfig(tuple(f"R{i}" for i in range(n)), f, checkpoint_interval=interval,
                      watermark_window=interval * window_factor)


def _full_batch(config: PbftConfig, entry_bytes: int) -> tuple[bytes, ...]:
    """Requests filling ``max_batch_bytes``: the largest batch a primary may cut."""
    count = max(1, config.max_batch_bytes // (entry_bytes + BATCH_ITEM_OVERHEAD))
    return tuple(i.to_bytes(4, "big") + b"r" * (entry_bytes - 4) for i in range(count))


def _certificate(keys, config: PbftConfig, view: int, seq: int, batch: tuple[bytes, ...]) -> PreparedProof:
    primary = config.primary(view)
    pp = PrePrepare(view, seq, batch_digest(batch, ()), batch, ())
    backups = [r for r in config.replicas if r != primary][: 2 * config.f]
    prepares = tuple(seal(keys[b], Prepare(view, seq, pp.digest)) for b in backups)
    return PreparedProof(quote_preprepare(seal(keys[primary], pp)), prepares)


def _largest_real_new_view(config: PbftConfig, entry_bytes: int):
    """2f+1 VIEW-CHANGEs to view 1, each with a certificate for every seq of the window (view 0,
    full batches), and the NEW-VIEW of view 1 re-proposing them all."""
    keys = generate_keys(list(config.replicas), seed=config.f)
    batch = _full_batch(config, entry_bytes)
    stable = config.checkpoint_interval
    checkpoint_proof = tuple(seal(keys[r], Checkpoint(stable, b"s" * 32)) for r in config.replicas[: config.quorum])
    window = range(stable + 1, stable + config.watermark_window + 1)
    certificates = tuple(_certificate(keys, config, 0, seq, batch) for seq in window)
    senders = config.replicas[: config.quorum]
    vcs = tuple(seal(keys[r], ViewChange(1, stable, checkpoint_proof, certificates)) for r in senders)
    new_primary = config.primary(1)
    cache = VerifiedCertificates()
    plan = plan_new_view(config, 1, [verify_view_change(keys[new_primary], config, p, cache) for p in vcs])
    headers = tuple(seal(keys[new_primary], h) for h in preprepares_for(1, plan))
    nv = seal(keys[new_primary], NewView(1, vcs, headers))
    return keys, batch, vcs, nv


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(f=st.integers(1, 3), interval=st.sampled_from([4, 8, 16]), window_factor=st.integers(2, 4),
       entry_bytes=st.sampled_from([64, 4096, 60_000]))
def test_the_largest_view_change_and_new_view_decode_and_verify_within_the_bound(f, interval, window_factor,
                                                                                entry_bytes):
    config = _config(f, interval, window_factor)
    vc_bound, nv_bound = view_change_bytes(config)
    assert nv_bound <= MAX_FIELD_BYTES  # the config would have refused itself otherwise
    keys, batch, vcs, nv = _largest_real_new_view(config, entry_bytes)
    batch_bytes = sum(map(len, batch))
    assert batch_bytes > config.max_batch_bytes // 2  # the certificates are over large batches
    assert all(len(vc) <= vc_bound for vc in vcs) and len(nv) <= nv_bound, (len(vcs[0]), vc_bound, len(nv), nv_bound)
    env = decode(nv, Envelope)  # the strict decoder, as a replica receives it
    checker = config.replicas[-1]
    plan, accepted = verify_new_view(keys[checker], config, env.sender, decode(env.body, NewView))
    assert [h.seq for h, _ in accepted] == [seq for seq, _ in plan.entries]
    assert len(plan.entries) == config.watermark_window
    assert {h.digest for h, _ in accepted} == {batch_digest(batch, ())}


def test_a_certificate_is_as_large_for_a_full_batch_as_for_an_empty_one():
    config = _config(1, 16, 4)
    keys = generate_keys(list(config.replicas), seed=1)
    full = _certificate(keys, config, 0, 7, _full_batch(config, 4096))
    empty = _certificate(keys, config, 0, 7, ())
    from dtm_ray.wire import encode

    assert len(encode(full)) == len(encode(empty)) < 1_000


def test_a_configuration_whose_new_view_could_not_be_decoded_is_refused():
    with pytest.raises(ConfigError, match="NEW-VIEW"):
        PbftConfig(tuple(f"R{i}" for i in range(31)), 10, checkpoint_interval=32, watermark_window=128)
    PbftConfig(tuple(f"R{i}" for i in range(31)), 10, checkpoint_interval=16, watermark_window=64)  # fits


# ---------------------------------------------------------------------------------------------
# The simulator, with the transport's real size limit


class Transfers:
    """Moves between 10,000 accounts (unbounded balances, so no setup and no contention: the
    test is about sizes and load), each with a 2 kB memo: batches are then cut by bytes
    (``max_batch_bytes``), so a VIEW-CHANGE that quoted its certificates' batches would be
    megabytes (past the decoder's limit with four of them) where headers make it a few kB."""

    def __init__(self, accounts: int = 10_000) -> None:
        self.accounts, self.i = accounts, 0

    def setup(self) -> list[Op]:
        return [Op.put("db-0", "opened", 1)]

    def next_ops(self) -> list[Op]:
        self.i += 1
        account = f"acct:{self.i % self.accounts}"
        return [Op.add("db-0", account, -1), Op.add("db-1", account, 1), Op.put("db-1", f"memo:{self.i}", "m" * 2_000)]

    def check(self, world) -> list:
        return []


SEEDS = [int(os.environ["DTM_SEED"])] if "DTM_SEED" in os.environ else [1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_two_thousand_clients_and_a_primary_crash_mid_load_every_transaction_answered(seed):
    print(f"seed {seed} (DTM_SEED={seed} reproduces it)")
    world = build_txn_world(seed, 4, clients=2_000, participants={"db-0": "kv", "db-1": "kv"}, client_tick_ms=500,
                            pbft={"batch_size": 400, "checkpoint_interval": 16, "watermark_window": 64,
                                  "max_inflight_batches": 0, "view_change_timeout_ms": 2_000,
                                  "client_retry_ms": 5_000},
                            txn={"vote_timeout_ms": 5_000})
    largest: dict[str, int] = {}
    route_step = world.sim.network.route_step

    def measuring(src, messages, now_ms):
        for _, payload in messages:
            try:
                kind = type(decode(decode(payload, Envelope).body)).__name__
            except Exception:  # noqa: BLE001 - a test's observer: anything undecodable is counted as such
                kind = "undecodable"
            largest[kind] = max(largest.get(kind, 0), len(payload))
        return route_step(src, messages, now_ms)

    world.sim.network.route_step = measuring
    world.start(Transfers(), 1)
    executed = lambda: world.sim.node("R1").status()["executed_seq"]  # noqa: E731
    assert world.sim.run_until(lambda: executed() >= 3, 120_000), "the load never got going"
    answered_before = len(world.results())
    world.sim.crash("R0")  # the primary, with most of the load queued at it or in flight
    print(f"primary crashed at {world.sim.now_ms} ms with {answered_before} of 2000 answered")
    assert world.sim.run_until(world.done, 600_000), (
        f"seed {seed}: {sum(1 for r in world.results().values())} of 2000 answered; {world.statuses()}")
    views = [o.output.view for o in world.sim.outputs if isinstance(o.output, ViewChanged)]
    assert views and min(views) >= 1, "no view change completed"
    assert answered_before < 1_000  # most of the load needed the new primary
    assert world.sim.network.counters.oversized == 0, world.sim.network.counters.oversized_by_link
    assert largest.get("NewView", 0) > 0 and largest.get("ViewChange", 0) > 0, largest
    assert largest["PrePrepare"] > 500_000  # batches cut by bytes, so certificates are over large ones
    assert largest["NewView"] < 64 * 1024, largest  # quoting headers: a few kB, not the batches
    assert max(largest[k] for k in ("PrepareBatch", "DecisionBatch", "AckBatch")) <= OUTGOING_BATCH_BYTES + 1024
    assert not world.violations(), world.violations()
    print(f"largest messages (bytes): {largest}")


def test_outgoing_batches_to_participants_are_cut_by_bytes():
    from dtm_ray.wire import encode

    items = [PrepareItem(f"t{i}", i, (Op.put("db-0", f"k{i}", "v" * 1_000),)) for i in range(3_000)]
    batches = fitting_batches(PrepareBatch, items, 64 * 1024)
    assert len(batches) > 40 and [i for b in batches for i in b.items] == items
    assert all(len(encode(b)) <= 64 * 1024 for b in batches)
    assert fitting_batches(PrepareBatch, items[:10], 64 * 1024) == [PrepareBatch(tuple(items[:10]))]


# ---------------------------------------------------------------------------------------------
# A re-proposed batch a replica never had is fetched by seq, and adopted only if it matches


def test_a_replica_lacking_a_re_proposed_batch_asks_its_peers_and_adopts_only_the_matching_one():
    from dtm_ray.pbft.kvapp import KvApp, put
    from dtm_ray.pbft.messages import Request, SlotRequest, assemble_preprepare, seal_request
    from dtm_ray.pbft.replica import Replica
    from dtm_ray.storage import MemoryStorage

    config = PbftConfig(("R0", "R1", "R2", "R3"), 1, checkpoint_interval=4, watermark_window=8,
                        clients=frozenset({"c0"}))
    keys = generate_keys(["R0", "R1", "R2", "R3", "c0"], seed=9)
    request = seal_request(keys["c0"], config.replicas, "hmac", Request("c0", 1, put("k", "v")))
    batch = ((request,), ())
    cert = _certificate(keys, config, 0, 1, batch[0])  # prepared in view 0 by R0 (primary), R1, R2
    vcs = tuple(seal(keys[r], ViewChange(1, 0, (), (cert,) if r != "R3" else ())) for r in ("R0", "R2", "R3"))
    cache = VerifiedCertificates()
    plan = plan_new_view(config, 1, [verify_view_change(keys["R1"], config, p, cache) for p in vcs])
    headers = tuple(seal(keys["R1"], h) for h in preprepares_for(1, plan))  # R1 is the primary of view 1
    r2 = Replica("R2", config, keys["R2"], KvApp(), MemoryStorage())  # never saw the batch
    r2.tick(1)
    r2.take_ready()
    r2.receive("R1", seal(keys["R1"], NewView(1, vcs, headers)))
    ready = r2.take_ready()
    assert r2.view == 1 and r2.log.get(1).wanted is not None and r2.log.get(1).pp is None
    asked = {dest for dest, payload in ready.send_now + ready.send_after_persist
             if isinstance(decode(decode(payload, Envelope).body), SlotRequest)}
    assert asked == {"R0", "R1", "R3"}
    # a peer that has it serves the full PRE-PREPARE: the header's signature covers any batch
    # with its digest, and only that one
    forged = PrePrepare(1, 1, plan.entries[0][1], (), ())  # right digest, wrong batch
    r2.receive("R3", encode_envelope(keys["R1"], forged, headers[0]))
    assert r2.log.get(1).pp is None  # refused: the batch does not match the digest
    _, served = assemble_preprepare(headers[0], *batch)
    r2.receive("R3", served)
    slot = r2.log.get(1)
    assert slot.pp is not None and slot.pp.requests == batch[0] and slot.wanted is None
    votes = [decode(decode(p, Envelope).body) for _, p in r2.take_ready().send_after_persist]
    assert any(isinstance(v, Prepare) and v.view == 1 and v.seq == 1 for v in votes)  # it votes in view 1


def encode_envelope(keys, pp: PrePrepare, header_quote: bytes) -> bytes:
    """``pp`` under the signature of ``header_quote`` (what a relaying peer could attach)."""
    from dtm_ray.wire import encode

    return encode(Envelope(keys.me, encode(pp), decode(header_quote, Envelope).auth))


def test_a_peer_relaying_the_primarys_header_with_another_batch_is_refused_and_blamed_not_the_primary():
    from dtm_ray.pbft.kvapp import KvApp, put
    from dtm_ray.pbft.messages import Request, seal_request
    from dtm_ray.pbft.replica import Replica
    from dtm_ray.storage import MemoryStorage

    config = PbftConfig(("R0", "R1", "R2", "R3"), 1, checkpoint_interval=4, watermark_window=8,
                        clients=frozenset({"c0"}))
    keys = generate_keys(["R0", "R1", "R2", "R3", "c0"], seed=4)
    request = seal_request(keys["c0"], config.replicas, "hmac", Request("c0", 1, put("k", "v")))
    pp = PrePrepare(0, 1, batch_digest((request,), ()), (request,), ())
    genuine = seal(keys["R0"], pp)
    r1 = Replica("R1", config, keys["R1"], KvApp(), MemoryStorage())
    r1.tick(1)
    r1.receive("R3", encode_envelope(keys["R0"], PrePrepare(0, 1, pp.digest, (), ()), quote_preprepare(genuine)))
    assert r1.log.get(1) is None or r1.log.get(1).pp is None
    assert r1.status()["rejected"] == {"R3": 1}  # the relayer, not the primary whose header it reused
    r1.receive("R0", genuine)
    assert r1.log.get(1).pp == pp  # the real one is still accepted
