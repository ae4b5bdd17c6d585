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

The chaos actor also **supervises placement**: a replica pinned to a Ray node that is gone cannot
be restarted by Ray (``ActorUnschedulableError``), so a background thread re-creates it on the
live node with the fewest parties (where, without its disk, it recovers by state transfer).
Participants and clients are not moved: their state exists only on their node.
"""

from __future__ import annotations

import collections
import threading

import ray

from actors import launch


class Chaos:
    def __init__(self, specs: dict[str, dict], handles: dict[str, object] | None, replicas: list[str],
                 spread: bool) -> None:
        self.specs = specs
        # None: found by name. Handles passed to an actor's constructor are references Ray cannot
        # keep for a restart (it warns on every start); the names are what a restart needs anyway.
        self.handles = handles if handles is not None else {p: self._find(s) for p, s in specs.items()}
        self.replicas = replicas
        self.spread = spread
        self.dead: set[str] = set()
        self.byzantine_parties: dict[str, str] = {}
        self.groups: list[list[str]] = []
        self.moved: list[tuple[str, str]] = []  # (party, new node) re-created by the supervisor
        self._lock = threading.RLock()  # operator calls and the supervisor thread
        self._stop = threading.Event()
        threading.Thread(target=self._supervise, name="placement-supervisor", daemon=True).start()

    @staticmethod
    def _find(spec: dict):
        from actors.names import actor_name

        return ray.get_actor(actor_name(spec["party"]), namespace=spec["namespace"])

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
        launch.crash_and_wait(self.handles[party])
        self._reapply(party)
        return party

    def kill(self, target) -> str:
        with self._lock:
            return self._kill(self.party(target))

    def _kill(self, party: str) -> str:
        launch.kill(self.handles[party], restart=False)
        self.dead.add(party)
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
        self._recreate(party)
        return party

    def _recreate(self, party: str) -> None:
        launch.kill(self.handles[party], restart=False)
        launch.wait_name_released(self.specs[party])
        spread = self.spread and self.specs[party]["role"] in ("replica", "kv-replica")
        self.handles[party] = launch.launch(self.specs[party], spread=spread)
        launch.wait_alive([self.handles[party]])
        self.dead.discard(party)
        self._reapply(party)

    def _reapply(self, party: str) -> None:
        """A restarted process forgot the network's state: partitions live outside it."""
        blocked = self._blocked_for(party)
        if blocked:
            ray.get(self.handles[party].set_blocked.remote(blocked))

    # -- Byzantine behaviour --------------------------------------------------------------------
    def byzantine(self, target, behaviour: str | bytes, seed: int = 0) -> str:
        party = self.party(target)
        ray.get(self.handles[party].set_byzantine.remote(behaviour, seed))
        self.byzantine_parties[party] = behaviour if isinstance(behaviour, str) else "custom"
        return party

    def heal(self, target) -> str:
        party = self.party(target)
        ray.get(self.handles[party].set_byzantine.remote(None))
        self.byzantine_parties.pop(party, None)
        return party

    # -- the network ----------------------------------------------------------------------------
    def partition(self, *groups) -> list[list[str]]:
        self.groups = [[self.party(t) for t in group] for group in groups]
        self._apply_network()
        return self.groups

    def heal_network(self) -> None:
        self.groups = []
        self._apply_network()

    def _blocked_for(self, party: str) -> list[str]:
        mine = next((g for g in self.groups if party in g), None)
        if mine is None:
            return []
        return sorted(p for g in self.groups if g is not mine for p in g)

    def _apply_network(self) -> None:
        live = [p for p in self.specs if p not in self.dead]
        ray.get([self.handles[p].set_blocked.remote(self._blocked_for(p)) for p in live])

    # -- placement supervision ------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.supervise_once()
            except Exception:  # a transient Ray error: look again next second
                pass

    def supervise_once(self) -> list[str]:
        """Re-create every live party pinned to a node that is no longer alive."""
        with self._lock:
            alive = launch.alive_nodes()
            if not alive:
                return []
            load = collections.Counter(s.get("node") for s in self.specs.values())
            moved = []
            for party, spec in list(self.specs.items()):
                node = spec.get("node")
                if node is None or node in alive or party in self.dead:
                    continue
                if spec["role"] not in ("replica", "kv-replica"):
                    continue  # its data lives on that node: it comes back with the node, not elsewhere
                target = min(alive, key=lambda n: (load[n], n))
                load[target] += 1
                self.specs[party] = dict(spec, node=target)
                self._recreate(party)
                self.moved.append((party, target))
                moved.append(party)
            return moved

    def adopt(self, party: str, spec: dict, handle) -> None:
        """A party created after the chaos actor (a client): it can be crashed and restarted too."""
        self.specs[party] = spec
        self.handles[party] = handle

    # -- observation ----------------------------------------------------------------------------
    def plan(self) -> dict:
        return {"dead": sorted(self.dead), "byzantine": dict(self.byzantine_parties),
                "partition": self.groups, "moved": [list(m) for m in self.moved]}

    def handle(self, party: str):
        return self.handles[party]

    def is_dead(self, party: str) -> bool:
        return party in self.dead
