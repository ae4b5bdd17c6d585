"""The one module that decides whether this replica may vote, and signs the vote.

Everything that could make a correct replica contradict itself goes through ``SafetyRules``:
PRE-PREPAREs (the primary's vote for a slot), PREPAREs, COMMITs and VIEW-CHANGEs. Its state is
small and written to ``Ready.writes`` with the vote, and the replica sends votes only with
``send_after_persist``, so a vote never leaves before the state that forbids a contradicting vote
is durable. After a restart the state is reloaded and the same rules refuse what would contradict
a vote sent before the crash.

Storage keys (all under ``s/``):

- ``s/floor`` -> the highest view this replica promised to move to (a VIEW-CHANGE it signed or a
  view it entered); it never votes in a lower view again.
- ``s/vote/<seq:8 bytes big-endian><view:8 bytes>`` -> the digest it voted for in (view, seq).
  Deleted once seq is at or below the stable checkpoint (``forget_through``).
"""

from __future__ import annotations

import struct

from dtm_ray.crypto import KeyRing
from dtm_ray.node import Outbox, Storage
from dtm_ray.pbft.messages import Commit, PrePrepare, PrePrepareHeader, Prepare, ViewChange, seal

FLOOR_KEY = b"s/floor"
VOTE_PREFIX = b"s/vote/"
_U64 = struct.Struct(">Q")


def vote_key(view: int, seq: int) -> bytes:
    return VOTE_PREFIX + _U64.pack(seq) + _U64.pack(view)


class SafetyRules:
    def __init__(self, keys: KeyRing, storage: Storage, out: Outbox) -> None:
        self._keys = keys
        self._out = out
        raw = storage.get(FLOOR_KEY)
        self.floor = _U64.unpack(raw)[0] if raw else 0
        self.votes: dict[tuple[int, int], bytes] = {}
        for key, value in storage.items(VOTE_PREFIX):
            seq, view = _U64.unpack(key[7:15])[0], _U64.unpack(key[15:23])[0]
            self.votes[(view, seq)] = value

    # -- rules ---------------------------------------------------------------------------------
    def may_vote(self, view: int, seq: int, digest: bytes) -> bool:
        """A replica votes only in views at or above its floor, and in one (view, seq) only for
        one digest: a PRE-PREPARE, PREPARE and COMMIT of one slot all carry the same digest."""
        if view < self.floor:
            return False
        return self.votes.get((view, seq), digest) == digest

    def may_change_view(self, new_view: int) -> bool:
        """A VIEW-CHANGE only moves forward (or repeats the last one)."""
        return new_view >= self.floor

    # -- signing -------------------------------------------------------------------------------
    def sign_preprepare(self, pp: PrePrepare) -> bytes | None:
        return self._sign_vote(pp.view, pp.seq, pp.digest, pp)

    def sign_preprepare_header(self, header: PrePrepareHeader) -> bytes | None:
        """The header alone (a NEW-VIEW's re-proposal): the same signature as the full
        PRE-PREPARE of any batch with that digest."""
        return self._sign_vote(header.view, header.seq, header.digest, header)

    def sign_prepare(self, view: int, seq: int, digest: bytes) -> bytes | None:
        return self._sign_vote(view, seq, digest, Prepare(view, seq, digest))

    def sign_commit(self, view: int, seq: int, digest: bytes) -> bytes | None:
        return self._sign_vote(view, seq, digest, Commit(view, seq, digest))

    def sign_view_change(self, vc: ViewChange) -> bytes | None:
        if not self.may_change_view(vc.new_view):
            return None
        self.raise_floor(vc.new_view)
        return seal(self._keys, vc)

    def raise_floor(self, view: int) -> None:
        """Promise never to vote below ``view`` again (entering a view, or asking for it)."""
        if view > self.floor:
            self.floor = view
            self._out.write(FLOOR_KEY, _U64.pack(view))

    def _sign_vote(self, view: int, seq: int, digest: bytes, msg: object) -> bytes | None:
        if not self.may_vote(view, seq, digest):
            return None
        if (view, seq) not in self.votes:
            self.votes[(view, seq)] = digest
            self._out.write(vote_key(view, seq), digest)
        return seal(self._keys, msg)  # Ed25519 is deterministic: a repeated vote is the same bytes

    # -- garbage collection --------------------------------------------------------------------
    def forget_through(self, seq: int) -> None:
        """Drop votes for slots at or below a stable checkpoint: they can never be re-voted,
        since every correct replica ignores slots at or below its low watermark."""
        for view, s in [k for k in self.votes if k[1] <= seq]:
            del self.votes[(view, s)]
            self._out.write(vote_key(view, s), None)
