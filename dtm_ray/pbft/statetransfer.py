"""State transfer, the pure parts: whom to ask, and whether a received state can be installed.

A replica that fell behind the stable checkpoint of the others (or lost its disk) asks ``f+1``
peers for their stable state, a different group each round so that one silent or lagging group
cannot stall it. A STATE-REPLY is only MAC'd by its sender (the sender may be faulty), so the
state is trusted because of its proof: ``2f+1`` signed CHECKPOINTs of exactly that digest.
"""

from __future__ import annotations

from dtm_ray.crypto import KeyRing
from dtm_ray.errors import AuthError
from dtm_ray.pbft import checkpoint, quorum
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.messages import ReplicaState, StateReply, state_digest
from dtm_ray.wire import decode


def sources(peers: tuple[str, ...], f: int, round_: int) -> list[str]:
    """The f+1 peers (one of them correct) to ask in round ``round_``, rotating over all."""
    if not peers:
        return []
    k = min(quorum.weak(f), len(peers))
    start = (round_ * k) % len(peers)
    return [peers[(start + i) % len(peers)] for i in range(k)]


def verify_reply(keys: KeyRing, config: PbftConfig, rep: StateReply) -> tuple[bytes, ReplicaState]:
    """``(digest, state)`` of a certified state, or ``RemoteProtocolError``."""
    digest = state_digest(rep.state)
    checkpoint.verify_proof(keys, config, rep.seq, digest, rep.proof)
    state = decode(rep.state, ReplicaState)
    if state.seq != rep.seq:
        raise AuthError(f"state of seq {state.seq} sent as {rep.seq}")
    return digest, state
