"""Evidence a third party can check: each kind the threat model claims is recorded with a proof
that convicts the accused on its own (its signature over a message that is wrong on its face),
and the cluster goes on.

- (not evidence) a PRE-PREPARE whose batch does not match its signed digest: refused, primary replaced;
- ``forged-certificate``: a replica signs a VIEW-CHANGE whose prepared certificate does not verify.
"""

from __future__ import annotations

import random

import pytest

from dtm_ray.crypto import Envelope
from dtm_ray.errors import RemoteProtocolError
from dtm_ray.faults import make_behaviour, open_own, reseal
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.events import Evidence, Rejected
from dtm_ray.pbft.messages import PrePrepare, Prepare, PreparedProof, ViewChange, batch_digest, seal
from dtm_ray.pbft.viewchange import verify_view_change
from dtm_ray.wire import decode
from tests.pbft_harness import Harness


def _evidence(h: Harness, kind: str, accused: str) -> list[Evidence]:
    return [e for r in h.replica_ids if r != accused for e in h.events(r, Evidence)
            if e.kind == kind and e.accused == accused]


def _signed_by(h: Harness, party: str, proof: bytes):
    env = decode(proof, Envelope)
    assert env.sender == party and h.keys["R3"].verify(party, env.body, env.auth)  # anyone can check it
    return decode(env.body)


def test_a_batch_that_does_not_match_its_signed_digest_is_refused_and_its_primary_replaced():
    """A PRE-PREPARE's signature covers its header (view, seq, digest), as in PBFT: a batch that
    does not match the digest may have been attached by anybody, so it is refused (counted), not
    taken as evidence; the primary that never sends a matching one is replaced by the timers."""
    h = Harness(view_change_timeout_ms=200)
    h.byzantine["R0"] = make_behaviour("wrong-digest", keys=h.keys["R0"], config=h.config, rng=random.Random(1))
    rid = h.submit(kvapp.put("k", "v"))
    h.run_until(lambda: rid in h.results(), max_ms=20_000)
    assert rid in h.results()
    refused = [e for r in ("R1", "R2", "R3") for e in h.events(r, Rejected)
               if e.sender == "R0" and "does not match its digest" in e.reason]  # delivered by R0 itself
    assert refused, "no backup refused the mismatched batch"
    assert not _evidence(h, "wrong-digest", "R0")  # nothing provable: no evidence
    assert all(h.replica(r).view >= 1 for r in ("R1", "R2", "R3"))  # the faulty primary is gone
    h.assert_agreement()


def _forging_certificates(h: Harness, me: str):
    """Every VIEW-CHANGE ``me`` sends claims a prepared certificate that has no 2f PREPAREs."""
    keys = h.keys[me]

    def behaviour(dest: str, payload: bytes):
        opened = open_own(keys, payload)
        if opened is None or not isinstance(opened[1], ViewChange):
            return [(dest, payload)]
        vc = opened[1]
        seq = vc.stable_seq + 1
        requests = (b"never-prepared",)
        pp = PrePrepare(0, seq, batch_digest(requests, ()), requests, ())
        own_prepare = seal(keys, Prepare(0, seq, pp.digest))  # the only one it can make
        bogus = PreparedProof(seal(h.keys["R0"], pp), (own_prepare, own_prepare))
        forged = ViewChange(vc.new_view, vc.stable_seq, vc.checkpoint_proof, (bogus,))
        return [(dest, reseal(keys, dest, forged))]

    return behaviour


def test_a_view_change_with_a_forged_certificate_is_evidence_against_its_signer():
    h = Harness(n=7, view_change_timeout_ms=200)  # f = 2: a crashed primary and a forger
    rid = h.submit(kvapp.put("a", 1))
    h.run_until(lambda: rid in h.results())
    h.byzantine["R3"] = _forging_certificates(h, "R3")
    h.crash("R0")  # a view change is needed
    rid = h.submit(kvapp.put("b", 2))
    h.run_until(lambda: rid in h.results(), max_ms=20_000)
    found = _evidence(h, "forged-certificate", "R3")
    assert found, "no replica recorded the forged certificate"
    for e in found:
        assert isinstance(_signed_by(h, "R3", e.proof[0]), ViewChange)
        with pytest.raises(RemoteProtocolError):
            verify_view_change(h.keys["R1"], h.config, e.proof[0])
    assert not [e for r in h.replica_ids if r != "R3" for e in _evidence(h, "forged-certificate", r)]
