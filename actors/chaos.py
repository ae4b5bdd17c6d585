"""The chaos actor: holds every party's spec and handle, and breaks them on the operator's request.

Targets are replica indices (``2`` is ``R2``) or party names (``"db-0"``, ``"alice"``).

- ``crash(t)``: Ray kills the actor and restarts it; it recovers from its own directory.
- ``kill(t)``: killed for good (until ``restart``).
- ``restart(t)``: a killed party is created again from its directory; a live one is killed and
  created again.
- ``wipe(t)``: killed and created again with an empty directory (a lost disk): a replica must
  catch up by state transfer.
- ``byzantine(t, behaviour)``: a catalogue name, or a cloudpickled callable, rewrites every
  message the party sends; ``heal(t)`` removes it.
- ``partition(*groups)``: parties in different groups cannot talk; parties in no group are
  unaffected; ``heal_network()`` reconnects everybody.

Every operation returns when it has taken effect (the re-created actor answers), so a test or a
shell session can act on it at once.

The fault plan (who is killed, Byzantine or partitioned, where the supervisor moved whom) is
**kept on disk** beside the parties' directories (``data_dir/chaos-plan.json``) and read back
when Ray restarts this actor: a chaos actor that dies must not silently heal the faults it
injected, nor forget that a replica was killed for good. A restarted party gets its partition
and its Byzantine behaviour back too (a crash restarts the process, it does not make a Byzantine
party honest). The plan holds the operator's cloudpickled callables, so it is written with mode
0600 and a plan file that is group- or world-writable or owned by another user is refused
(``actors.private_file.UnsafeFileError``): nobody else gets to run code here.

The chaos actor also **supervises placement** (``actors.placement``): Ray cannot restart a
replica pinned to a node that is gone (``ActorUnschedulableError``), so a background thread, about
once a second, re-creates each replica that was on a lost node on the live node with the fewest
parties (where, without its disk, it recovers by state transfer). ``status()["chaos"]["moved"]``
lists each move (party, from node, to node, when) from the moment its replacement is being
created, and a failed re-creation is retried on the next pass until the replica answers.
Participants and clients are not moved: their state exists only on their node.
"""

from __future__ import annotations

import base64
import os
import threading
import time

import ray

from actors import launch, private_file
from actors.placement import Move, Supervisor


class Chaos:
    def __init__(self, specs: dict[str, dict], handles: dict[str, object] | None, replicas: list[str],
                 spread: bool) -> None:
        self.specs = specs
        self.replicas = replicas
        self.spread = spread
        self.dead: set[str] = set()
        self.behaviours: dict[str, tuple[str | bytes, int]] = {}  # party -> (behaviour, seed)
        self.groups: list[list[str]] = []
        self.placement = Supervisor(self.specs, self.dead, self._recreate, self._save_plan, time.time,
                                    on_error=_log_failed_move)
        self.plan_path = _plan_path(specs)
        self._load_plan()
        # None: found by name. Handles passed to an actor's constructor are references Ray cannot
        # keep for a restart (it warns on every start); the names are what a restart needs anyway.
        # A party that cannot be found now (its node just died; Ray is restarting it) is looked up
        # again when needed, or re-created by the supervisor: it must not fail this constructor.
        self.handles = handles if handles is not None else {p: self._find(s) for p, s in self.specs.items()}
        self._lock = threading.RLock()  # operator calls and the supervisor thread
        self._stop = threading.Event()
        threading.Thread(target=self._supervise, name="placement-supervisor", daemon=True).start()

    @staticmethod
    def _find(spec: dict):
        from actors.names import actor_name

        try:
            return ray.get_actor(actor_name(spec["party"]), namespace=spec["namespace"])
        except ValueError:  # not registered (dead, or being re-created)
            return None

    def _handle(self, party: str):
        """The party's handle, looked up by name when it was not found before."""
        if self.handles.get(party) is None:
            self.handles[party] = self._find(self.specs[party])
        if self.handles[party] is None:
            raise LookupError(f"party {party!r} has no live actor (dead, or being re-created)")
        return self.handles[party]

    # -- the fault plan on disk -----------------------------------------------------------------
    def _save_plan(self) -> None:
        if self.plan_path is None:
            return
        plan = {"dead": sorted(self.dead), "groups": self.groups,
                "moved": [move.to_plain() for move in self.placement.moves],
                "behaviours": {p: [_encode_behaviour(b), seed] for p, (b, seed) in self.behaviours.items()},
                "placed": {p: {"node": s.get("node"), "epoch": s.get("epoch", 0)} for p, s in self.specs.items()}}
        private_file.write_json(self.plan_path, plan)  # 0600, atomic

    def _load_plan(self) -> None:
        if self.plan_path is None or not os.path.exists(self.plan_path):
            return
        plan = private_file.read_json(self.plan_path)  # refuses a file others could have written
        self.dead.clear()  # in place: the placement supervisor shares this set
        self.dead.update(set(plan["dead"]) & set(self.specs))
        self.groups = plan["groups"]
        self.placement.moves = [Move.from_plain(m) for m in plan["moved"]]
        self.behaviours = {p: (_decode_behaviour(b), seed) for p, (b, seed) in plan["behaviours"].items()}
        for party, placed in plan["placed"].items():
            if party in self.specs:
                self.specs[party] = dict(self.specs[party], **placed)

    def party(self, target: int | str) -> str:
        if isinstance(target, int) and not isinstance(target, bool):
            if not 0 <= target < len(self.replicas):
                raise ValueError(f"replica index {target} out of range 0..{len(self.replicas) - 1}")
            return self.replicas[target]
        if target not in self.specs:
            raise ValueError(f"unknown party {target!r}; parties: {sorted(self.specs)}")
        return target

    # -- crashes --------------------------------------------------------------------------------
    def crash(self, target) -> str:
        with self._lock:
            return self._crash(self.party(target))

    def _crash(self, party: str) -> str:
        launch.crash_and_wait(self._handle(party))
        self._reapply(party)
        return party

    def kill(self, target) -> str:
        with self._lock:
            return self._kill(self.party(target))

    def _kill(self, party: str) -> str:
        if self.handles.get(party) is not None:
            launch.kill(self.handles[party], restart=False)
        self.dead.add(party)
        self._save_plan()
        return party

    def restart(self, target) -> str:
        with self._lock:
            return self._restart(self.party(target))

    def _restart(self, party: str) -> str:
        self._recreate(party)
        return party

    def wipe(self, target) -> str:
        with self._lock:
            return self._wipe(self.party(target))

    def _wipe(self, party: str) -> str:
        spec = self.specs[party]
        self.specs[party] = dict(spec, epoch=spec.get("epoch", 0) + 1)
        self._save_plan()
        self._recreate(party)
        return party

    def _recreate(self, party: str) -> None:
        old = self.handles.get(party) or self._find(self.specs[party])
        if old is not None:
            launch.kill(old, restart=False)
        launch.wait_name_released(self.specs[party])
        spread = self.spread and self.specs[party]["role"] in ("replica", "kv-replica")
        self.handles[party] = launch.launch(self.specs[party], spread=spread)
        launch.wait_alive([self.handles[party]])
        self.dead.discard(party)
        self._reapply(party)
        self.placement.answered(party)  # an operator's restart also completes a pending move
        self._save_plan()

    def _reapply(self, party: str) -> None:
        """A restarted process forgot what the operator did to it: its partition and its
        Byzantine behaviour live here, not in the process."""
        handle = self._handle(party)
        blocked = self._blocked_for(party)
        if blocked:
            ray.get(handle.set_blocked.remote(blocked))
        if party in self.behaviours:
            behaviour, seed = self.behaviours[party]
            ray.get(handle.set_byzantine.remote(behaviour, seed))

    # -- Byzantine behaviour --------------------------------------------------------------------
    def byzantine(self, target, behaviour: str | bytes, seed: int = 0) -> str:
        with self._lock:
            party = self.party(target)
            ray.get(self._handle(party).set_byzantine.remote(behaviour, seed))
            self.behaviours[party] = (behaviour, seed)
            self._save_plan()
            return party

    def heal(self, target) -> str:
        with self._lock:
            party = self.party(target)
            ray.get(self._handle(party).set_byzantine.remote(None))
            self.behaviours.pop(party, None)
            self._save_plan()
            return party

    # -- the network ----------------------------------------------------------------------------
    def partition(self, *groups) -> list[list[str]]:
        with self._lock:
            self.groups = [[self.party(t) for t in group] for group in groups]
            self._save_plan()
            self._apply_network()
            return self.groups

    def heal_network(self) -> None:
        with self._lock:
            self.groups = []
            self._save_plan()
            self._apply_network()

    def _blocked_for(self, party: str) -> list[str]:
        mine = next((g for g in self.groups if party in g), None)
        if mine is None:
            return []
        return sorted(p for g in self.groups if g is not mine for p in g)

    def _apply_network(self) -> None:
        live = [p for p in self.specs if p not in self.dead]
        ray.get([self._handle(p).set_blocked.remote(self._blocked_for(p)) for p in live])

    # -- placement supervision ------------------------------------------------------------------
    def _supervise(self) -> None:
        failing = None  # the error of the current streak of failed passes: logged once, not each second
        while not self._stop.wait(1.0):
            try:
                self.supervise_once()
                failing = None
            except Exception as exc:  # Ray's node list unavailable, the plan not writable: next second
                if repr(exc) != failing:
                    from loguru import logger

                    logger.warning("placement supervision pass failed, retried every second: {!r}", exc)
                failing = repr(exc)

    def supervise_once(self) -> list[str]:
        """Re-create every replica pinned to a node that is no longer alive (``actors.placement``);
        returns the parties whose replacement answered in this pass."""
        with self._lock:
            return self.placement.supervise_once(launch.alive_nodes())

    def adopt(self, party: str, spec: dict, handle) -> None:
        """A party created after the chaos actor (a client): it can be crashed and restarted too."""
        with self._lock:
            self.specs[party] = spec
            self.handles[party] = handle

    # -- observation ----------------------------------------------------------------------------
    def plan(self) -> dict:
        byzantine = {p: b if isinstance(b, str) else "custom" for p, (b, _) in self.behaviours.items()}
        return {"dead": sorted(self.dead), "byzantine": byzantine,
                "partition": self.groups, "moved": [move.to_plain() for move in self.placement.moves]}

    def handle(self, party: str):
        return self._handle(party)

    def is_dead(self, party: str) -> bool:
        return party in self.dead


def _plan_path(specs: dict[str, dict]) -> str | None:
    """``chaos-plan.json`` in the cluster's data directory (the parent of every party's directory)."""
    for spec in specs.values():
        if spec.get("path"):
            return os.path.join(os.path.dirname(spec["path"]), "chaos-plan.json")
    return None


def _log_failed_move(move: Move, exc: BaseException) -> None:
    from loguru import logger

    logger.warning("re-creating {} on {} failed (attempt {}), retried next pass: {}",
                   move.party, move.target, move.attempts, move.error)


def _encode_behaviour(behaviour: str | bytes) -> dict:
    if isinstance(behaviour, str):
        return {"name": behaviour}
    return {"pickled": base64.b64encode(behaviour).decode()}  # the operator's own callable


def _decode_behaviour(encoded: dict) -> str | bytes:
    return encoded["name"] if "name" in encoded else base64.b64decode(encoded["pickled"])
