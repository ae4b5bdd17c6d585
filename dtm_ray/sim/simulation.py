"""A deterministic, single-process world of sans-I/O nodes: one seed reproduces everything.

The simulation owns the only clock (virtual milliseconds), the only source of randomness (one
``random.Random(seed)``) and an event queue, a ``heapq`` of ``(time, seq, event)`` where ``seq``
breaks ties in insertion order, so that the same seed always replays the same history.

Events are of three kinds:
- a *delivery*: ``node.receive(sender, payload)`` on the destination, if it is up;
- a *tick*: ``node.tick(now_ms)`` every ``tick_ms`` of virtual time per node;
- a *call*: a scheduled action of a test or a fault plan (crash, partition, heal, submit).

A node may also be *paused* (``pause``), as in one long turn of its host: for a while it takes
in what arrives on its stale clock (no ticks) and nothing it says leaves; at the end it ticks, and
what it had to say leaves then.

After every delivery, tick or call on a node the simulation runs ``dtm_ray.node.drive`` (the very
loop the Ray actors run: send_now, one synced write batch, send_after_persist) and hands the
messages to the network, which decides when (and whether, and how many times) they arrive.

Each node is built by a factory ``factory(storage) -> Node``, so a crash throws the object away
and a restart builds a new one on the same ``MemoryStorage`` (a kept disk) or on a fresh one (a
lost disk). A node may be given a Byzantine *behaviour*, ``fn(dest, payload) -> iterable of (dest,
payload)`` (see ``dtm_ray.faults``), applied to every message it sends.

Every output a node reports is kept, in order, as an ``Observed`` record for the checkers.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from dtm_ray.errors import LocalError
from dtm_ray.node import Node, Outgoing, drive
from dtm_ray.sim.network import Network, NetworkConfig
from dtm_ray.storage import MemoryStorage
from dtm_ray.transport import DEFAULT_RULES, TransportRules

Behaviour = Callable[[str, bytes], Iterable[Outgoing]]
NodeFactory = Callable[[MemoryStorage], Node]

_DELIVER, _TICK, _CALL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Observed:
    """One output of one node: when, who, which life of that node (bumped by every restart)."""

    time_ms: int
    party: str
    incarnation: int
    output: Any


@dataclass(slots=True)
class Party:
    party_id: str
    factory: NodeFactory
    storage: MemoryStorage
    tick_ms: int
    node: Node | None = None
    incarnation: int = 0
    behaviour: Behaviour | None = None
    received: int = 0
    lost_while_down: int = 0
    paused_until: int = 0

    @property
    def alive(self) -> bool:
        return self.node is not None


@dataclass(slots=True)
class SimCounters:
    events: int = 0
    deliveries: int = 0
    ticks: int = 0
    unknown_destination: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(self, seed: int, *, network: NetworkConfig | None = None, tick_ms: int = 5,
                 transport: TransportRules = DEFAULT_RULES) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.network = Network(self.rng, network, transport)
        self.default_tick_ms = tick_ms
        self.parties: dict[str, Party] = {}
        self.outputs: list[Observed] = []
        self.journal: list[str] = []  # what tests and fault plans did, with times: a readable schedule
        self.counters = SimCounters()
        self._watchers: list[Callable[[Observed], None]] = []
        self._queue: list[tuple[int, int, int, tuple]] = []
        self._seq = 0

    # -- building the world ---------------------------------------------------------------------
    def add_node(self, party_id: str, factory: NodeFactory, *, tick_ms: int | None = None,
                 storage: MemoryStorage | None = None) -> Node:
        """Create the node (``factory(storage)``) and start ticking it, at a random phase."""
        if party_id in self.parties:
            raise LocalError(f"party {party_id!r} already exists")
        party = Party(party_id, factory, storage if storage is not None else MemoryStorage(),
                      tick_ms or self.default_tick_ms)
        self.parties[party_id] = party
        self._start(party)
        return party.node

    def node(self, party_id: str) -> Node:
        party = self._party(party_id)
        if party.node is None:
            raise LocalError(f"{party_id} is down")
        return party.node

    def alive(self, party_id: str) -> bool:
        return self._party(party_id).alive

    # -- faults ---------------------------------------------------------------------------------
    def crash(self, party_id: str) -> None:
        """Stop the node: its memory is gone, messages to it are lost, its disk stays."""
        party = self._party(party_id)
        if party.node is None:
            return
        party.node = None
        party.incarnation += 1  # pending ticks of the old life are ignored
        party.paused_until = 0
        self.note(f"crash {party_id}")

    def restart(self, party_id: str, *, wipe: bool = False) -> None:
        """Rebuild the node from its disk (or from an empty one if ``wipe``)."""
        party = self._party(party_id)
        if party.node is not None:
            self.crash(party_id)
        if wipe:
            party.storage = MemoryStorage()
        self.note(f"restart {party_id}{' (disk wiped)' if wipe else ''}")
        self._start(party)

    def set_behaviour(self, party_id: str, behaviour: Behaviour | None, label: str = "") -> None:
        """Apply ``behaviour`` to every message ``party_id`` sends from now on (None: honest)."""
        self._party(party_id).behaviour = behaviour
        self.note(f"byzantine {party_id} {label}" if behaviour else f"honest {party_id}")

    def watch(self, watcher: Callable[[Observed], None]) -> None:
        """Call ``watcher(observed)`` on every output as it is reported (e.g. a closed-loop client
        workload submitting its next request). A watcher that acts on a node should ``schedule``
        the action rather than run it inside the report."""
        self._watchers.append(watcher)

    def note(self, what: str) -> None:
        self.journal.append(f"t={self.now_ms}ms {what}")

    def pause(self, party_id: str, ms: int) -> None:
        """One long turn of ``ms``: the node takes in what arrives on its stale clock, it is not
        ticked, and nothing it sends or writes leaves until the end, when it ticks (a host busy
        with a burst of requests, or a starved process)."""
        party = self._party(party_id)
        if party.node is None or ms <= 0:
            return
        party.paused_until = max(party.paused_until, self.now_ms + ms)
        self.note(f"pause {party_id} for {ms} ms")
        incarnation = party.incarnation  # a crash and restart meanwhile ends this pause, not the next life's
        self.schedule(party.paused_until, lambda sim: sim._resume(party, incarnation))

    def _resume(self, party: Party, incarnation: int) -> None:
        if party.node is None or party.incarnation != incarnation or self.now_ms < party.paused_until:
            return  # crashed meanwhile, or paused again for longer (that pause resumes it)
        party.node.tick(self.now_ms)
        self._drive(party)

    # -- acting on nodes ------------------------------------------------------------------------
    def invoke(self, party_id: str, action: Callable[[Node], Any]) -> Any:
        """Call ``action(node)`` now (e.g. a client's ``submit``), then drive the node."""
        party = self._party(party_id)
        if party.node is None:
            raise LocalError(f"{party_id} is down")
        result = action(party.node)
        self._drive(party)
        return result

    def schedule(self, at_ms: int, action: Callable[["Simulation"], Any]) -> None:
        """Run ``action(sim)`` at virtual time ``at_ms`` (not before now)."""
        self._push(max(at_ms, self.now_ms), _CALL, (action,))

    def inject(self, src: str, dest: str, payload: bytes, delay_ms: int = 0) -> None:
        """Deliver raw bytes as if ``src`` sent them (bypasses the network's faults)."""
        self._push(self.now_ms + delay_ms, _DELIVER, (src, dest, payload))

    # -- running --------------------------------------------------------------------------------
    def step(self) -> bool:
        """Process the next event; False when nothing is left to do."""
        if not self._queue:
            return False
        time_ms, _, kind, args = heapq.heappop(self._queue)
        self.now_ms = time_ms
        self.counters.events += 1
        if kind == _DELIVER:
            self._deliver(*args)
        elif kind == _TICK:
            self._tick(*args)
        else:
            args[0](self)
        return True

    def run_until(self, predicate: Callable[[], bool], max_ms: int) -> bool:
        """Run until ``predicate()`` holds (True) or ``max_ms`` of virtual time passed (False)."""
        deadline = self.now_ms + max_ms
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                self.now_ms = max(self.now_ms, deadline)
                return False
            self.step()
        return True

    def run_for(self, ms: int) -> None:
        self.run_until(lambda: False, ms)

    # -- internals ------------------------------------------------------------------------------
    def _party(self, party_id: str) -> Party:
        try:
            return self.parties[party_id]
        except KeyError:
            raise LocalError(f"no party {party_id!r}") from None

    def _start(self, party: Party) -> None:
        party.node = party.factory(party.storage)
        phase = self.rng.randrange(party.tick_ms)
        self._push(self.now_ms + phase, _TICK, (party.party_id, party.incarnation))
        self._drive(party)  # a restarted core may already want to say something

    def _push(self, time_ms: int, kind: int, args: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, kind, args))

    def _deliver(self, src: str, dest: str, payload: bytes) -> None:
        party = self.parties.get(dest)
        if party is None:
            self.counters.unknown_destination += 1
            return
        if party.node is None:
            party.lost_while_down += 1
            return
        self.counters.deliveries += 1
        party.received += 1
        party.node.receive(src, payload)
        if self.now_ms >= party.paused_until:  # paused: what it says leaves at the end (``_resume``)
            self._drive(party)

    def _tick(self, party_id: str, incarnation: int) -> None:
        party = self.parties[party_id]
        if party.node is None or party.incarnation != incarnation:
            return
        if self.now_ms < party.paused_until:  # paused: the tick is skipped, the next one comes
            self._push(self.now_ms + party.tick_ms, _TICK, (party_id, incarnation))
            return
        self.counters.ticks += 1
        party.node.tick(self.now_ms)
        self._drive(party)
        self._push(self.now_ms + party.tick_ms, _TICK, (party_id, incarnation))

    def _drive(self, party: Party) -> None:
        node, src = party.node, party.party_id
        outputs = drive(node, party.storage, lambda messages: self._send(party, messages))
        for output in outputs:
            observed = Observed(self.now_ms, src, party.incarnation, output)
            self.outputs.append(observed)
            for watcher in self._watchers:
                watcher(observed)

    def _send(self, party: Party, messages: list[Outgoing]) -> None:
        src = party.party_id
        if party.behaviour is not None:
            messages = [out for dest, payload in messages for out in party.behaviour(dest, payload)]
        known = []
        for dest, payload in messages:
            if dest not in self.parties:
                self.counters.unknown_destination += 1
                continue
            known.append((dest, payload))
        # One step's messages to one destination are one host call (the host coalesces them).
        for dest, payload, delay in self.network.route_step(src, known, self.now_ms):
            self._push(self.now_ms + delay, _DELIVER, (src, dest, payload))
