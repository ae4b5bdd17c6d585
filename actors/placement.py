"""Placement supervision: a replica whose Ray node is gone is re-created on a live node.

Ray cannot restart a replica pinned (hard node affinity) to a node that no longer exists: the
actor stays dead (``ActorUnschedulableError``). The chaos actor runs :meth:`Supervisor.supervise_once`
about once a second, and keeps this promise whichever way the races between Ray, the load and
its own loop go:

- every replica (role ``replica`` or ``kv-replica``) pinned to a node that is no longer alive,
  and not killed on purpose by the operator, is re-created on the live node with the fewest
  parties (where, without its disk, it recovers by state transfer);
- the move is recorded, and persisted with the fault plan, **before** the replacement is created:
  by the time the replacement can answer anybody, ``status()["chaos"]["moved"]`` lists it as
  ``{"party", "from", "to", "at", "answered_at", "attempts", "error"}`` (times in Unix seconds);
- a re-creation that fails (a timeout, an unavailable actor, a name still held) leaves its error
  on the move and is tried again on the next pass, until the replica answers (``answered_at``
  set). If the target node dies meanwhile, a new move from it is recorded. A chaos actor that
  restarts reads the moves back with its plan and finishes the unanswered ones.

Participants and clients are never moved: their state lives only on their node, and they come
back with it.

This module is bookkeeping only: the chaos actor injects Ray (``recreate``), the disk (``save``)
and the clock, so the promise is tested without starting Ray (``tests/test_placement.py``).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Collection

MOVABLE_ROLES = ("replica", "kv-replica")
MAX_ERROR_CHARS = 300  # an exception's text kept on the move: enough to read, bounded in the plan


@dataclasses.dataclass
class Move:
    """One re-creation of ``party`` away from the lost node ``source``."""

    party: str
    source: str
    target: str
    at: float
    answered_at: float | None = None
    attempts: int = 0
    error: str | None = None

    def to_plain(self) -> dict:
        return {"party": self.party, "from": self.source, "to": self.target, "at": self.at,
                "answered_at": self.answered_at, "attempts": self.attempts, "error": self.error}

    @classmethod
    def from_plain(cls, plain: dict) -> "Move":
        return cls(plain["party"], plain["from"], plain["to"], plain["at"], plain["answered_at"],
                   plain["attempts"], plain["error"])


class Supervisor:
    """Moves replicas off lost nodes. ``specs`` and ``dead`` are the chaos actor's own (shared,
    not copied): a move rewrites the spec's ``node``, and a party in ``dead`` was killed by the
    operator and stays where it is. ``recreate(party)`` returns once the new actor answers, or
    raises; ``save()`` persists the plan (``moves`` included)."""

    def __init__(self, specs: dict[str, dict], dead: set[str], recreate: Callable[[str], None],
                 save: Callable[[], None], clock: Callable[[], float], moves: Collection[Move] = (),
                 on_error: Callable[[Move, BaseException], None] | None = None) -> None:
        self.specs = specs
        self.dead = dead
        self.moves = list(moves)
        self._recreate = recreate
        self._save = save
        self._clock = clock
        self._on_error = on_error

    def supervise_once(self, alive: Collection[str]) -> list[str]:
        """Record a move for every lost replica, then (re-)create each replica whose latest move
        has not answered yet. Returns the parties whose replacement answered in this pass."""
        alive = set(alive)
        if not alive:  # Ray's view of the cluster is not available: decide nothing
            return []
        for party in self.lost(alive):
            self._record(party, alive)
        return [party for party, move in self.unanswered().items()
                if party not in self.dead and self._attempt(move)]

    def lost(self, alive: set[str]) -> list[str]:
        """Replicas pinned to a node that is not alive (killed ones excepted)."""
        return [party for party, spec in self.specs.items()
                if spec.get("node") is not None and spec["node"] not in alive
                and party not in self.dead and spec["role"] in MOVABLE_ROLES]

    def unanswered(self) -> dict[str, Move]:
        """Each party's latest move, if its replacement has not answered yet."""
        latest = {move.party: move for move in self.moves}
        return {party: move for party, move in latest.items() if move.answered_at is None}

    def answered(self, party: str) -> None:
        """``party`` was re-created and answers (by this supervisor or by the operator's
        ``restart``/``wipe``): its pending move, if any, is done."""
        move = self.unanswered().get(party)
        if move is not None:
            move.answered_at = self._clock()
            move.error = None

    def _record(self, party: str, alive: set[str]) -> None:
        load = collections.Counter(spec.get("node") for spec in self.specs.values())
        target = min(alive, key=lambda node: (load[node], node))
        spec = self.specs[party]
        self.moves.append(Move(party, spec["node"], target, self._clock()))
        self.specs[party] = dict(spec, node=target)
        self._save()  # before the replacement exists: whoever sees it can see the move

    def _attempt(self, move: Move) -> bool:
        move.attempts += 1
        try:
            self._recreate(move.party)  # returns once the replacement answers
        except Exception as exc:  # a transient Ray failure: the next pass tries again
            move.error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            self._save()
            if self._on_error is not None:
                self._on_error(move, exc)
            return False
        self.answered(move.party)
        self._save()
        return True
