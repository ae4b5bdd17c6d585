"""The largest VIEW-CHANGE and NEW-VIEW a configuration can make, and the check that they fit.

Every other message the protocol builds is bounded where it is built (a PRE-PREPARE by
``max_batch_bytes``, a request by ``max_request_bytes``, the checkpointed state by the App's own
bounds). A VIEW-CHANGE carries up to ``watermark_window`` prepared certificates and a NEW-VIEW
2f+1 VIEW-CHANGEs plus one signed header per re-proposed seq. Since a certificate quotes the
PRE-PREPARE's header and not its batch, both are bounded by the configuration alone: this module
builds the worst case (every field at its widest encoding, real signature lengths) and measures
it, so the bound is what the encoder really produces, not a hand-written formula.

``PbftConfig`` refuses a configuration whose NEW-VIEW would not fit below the decoder's field
limit (``wire.MAX_FIELD_BYTES``, which is also the transport's message limit): a view change
that cannot be decoded could never complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dtm_ray.crypto import SIG_LEN, Envelope
from dtm_ray.wire import encode

WIDEST_INT = 2**63 - 1  # the widest integer encoding (9 bytes in msgpack)
DIGEST_BYTES = 32


def _signed(sender: str, msg: object) -> bytes:
    """An envelope as long as a signed one (the signature's bytes do not change its length)."""
    return encode(Envelope(sender, encode(msg), b"\xff" * SIG_LEN))


def _widest_name(config) -> str:
    return max(config.replicas, key=len)


def largest_view_change(config) -> bytes:
    """A sealed VIEW-CHANGE with a full window of certificates and a stable-checkpoint proof."""
    from dtm_ray.pbft.messages import Checkpoint, PrePrepareHeader, Prepare, PreparedProof, ViewChange

    who, d = _widest_name(config), b"\xff" * DIGEST_BYTES
    prepares = tuple(_signed(who, Prepare(WIDEST_INT, WIDEST_INT, d)) for _ in range(2 * config.f))
    proof = PreparedProof(_signed(who, PrePrepareHeader(WIDEST_INT, WIDEST_INT, d)), prepares)
    checkpoints = tuple(_signed(who, Checkpoint(WIDEST_INT, d)) for _ in range(config.quorum))
    vc = ViewChange(WIDEST_INT, WIDEST_INT, checkpoints, (proof,) * config.watermark_window)
    return _signed(who, vc)


def largest_new_view(config) -> bytes:
    """A sealed NEW-VIEW of 2f+1 largest VIEW-CHANGEs re-proposing a full window."""
    from dtm_ray.pbft.messages import NewView, PrePrepareHeader

    who, d = _widest_name(config), b"\xff" * DIGEST_BYTES
    vc = largest_view_change(config)
    headers = tuple(_signed(who, PrePrepareHeader(WIDEST_INT, WIDEST_INT, d)) for _ in range(config.watermark_window))
    return _signed(who, NewView(WIDEST_INT, (vc,) * config.quorum, headers))


def view_change_bytes(config) -> tuple[int, int]:
    """(largest VIEW-CHANGE, largest NEW-VIEW) in bytes, as sealed envelopes."""
    return _bytes_for(_Shape(config.replicas, config.f, config.watermark_window))


@dataclass(frozen=True)
class _Shape:  # what the bound depends on (every config of a cluster shares it: measured once)
    replicas: tuple[str, ...]
    f: int
    watermark_window: int

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1


@lru_cache(maxsize=64)
def _bytes_for(shape: _Shape) -> tuple[int, int]:
    return len(largest_view_change(shape)), len(largest_new_view(shape))
