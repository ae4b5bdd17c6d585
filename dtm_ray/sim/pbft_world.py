"""A PBFT cluster inside the simulator: n replicas running ``KvApp``, clients, and a workload.

``PbftWorld`` wires the pieces every PBFT scenario needs and remembers what the checkers must
know: which replicas are faulty (Byzantine, or a lost disk), and which requests clients really
submitted. The workload is the *counter* workload: each client, closed-loop (its next request
leaves when the previous one is answered, as a PBFT client does), increments its own key, so the
k-th answer must read k (``checkers.counter_results``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from dtm_ray.crypto import KeyRing, generate_keys
from dtm_ray.pbft import kvapp
from dtm_ray.pbft.client import ClientCore
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import ClientResult
from dtm_ray.pbft.replica import Replica
from dtm_ray.sim import checkers
from dtm_ray.sim.checkers import Violation
from dtm_ray.sim.network import NetworkConfig
from dtm_ray.sim.simulation import Behaviour, Observed, Simulation
from dtm_ray.sim.verify_cache import VerifyCache, caching


def replica_ids(n: int) -> tuple[str, ...]:
    return tuple(f"R{i}" for i in range(n))


def small_config(n: int, **overrides) -> PbftConfig:
    """A configuration sized for short simulated runs: small batches and windows, so that
    checkpoints, garbage collection and watermarks are all exercised within a few dozen requests."""
    f = (n - 1) // 3
    base = PbftConfig(replicas=replica_ids(n), f=f, batch_size=4, batch_wait_ms=2, checkpoint_interval=4,
                      watermark_window=8, view_change_timeout_ms=300, client_retry_ms=250)
    return replace(base, **overrides) if overrides else base


@dataclass
class PbftWorld:
    sim: Simulation
    config: PbftConfig
    keys: dict[str, KeyRing]
    clients: tuple[str, ...]
    verify_cache: VerifyCache | None
    byzantine: dict[str, str] = field(default_factory=dict)  # replica -> behaviour name
    wiped: set[str] = field(default_factory=set)  # replicas that lost their disk (count as faulty)
    submitted: set[tuple[str, int]] = field(default_factory=set)
    to_submit: dict[str, int] = field(default_factory=dict)  # client -> requests still to send
    think_ms: int = 0  # a client waits up to this long (uniformly) before its next request
    healed_at_ms: int = 0  # when the fault phase ended (liveness is measured from there)
    _answered: set[tuple[str, int]] = field(default_factory=set)  # submitted and answered (kept by a watcher)

    def __post_init__(self) -> None:
        self.sim.watch(self._on_output)

    # -- the parties ----------------------------------------------------------------------------
    @property
    def replicas(self) -> tuple[str, ...]:
        return self.config.replicas

    @property
    def faulty(self) -> set[str]:
        return set(self.byzantine) | self.wiped

    @property
    def correct(self) -> set[str]:
        return set(self.replicas) - self.faulty

    def replica(self, replica_id: str) -> Replica:
        return self.sim.node(replica_id)

    def make_byzantine(self, replica_id: str, behaviour: Behaviour, name: str) -> None:
        self.byzantine[replica_id] = name
        self.sim.set_behaviour(replica_id, behaviour, name)

    def restart(self, replica_id: str, *, wipe: bool = False) -> None:
        if wipe:
            self.wiped.add(replica_id)
        self.sim.restart(replica_id, wipe=wipe)

    # -- the workload ---------------------------------------------------------------------------
    def submit(self, client: str) -> int:
        """Send the client's next counter increment now; returns its request id."""
        rid = self.sim.invoke(client, lambda core: core.submit(kvapp.incr(client, 1)))
        self.submitted.add((client, rid))
        return rid

    def start_workload(self, requests_per_client: int, think_ms: int = 0) -> None:
        """Every client sends ``requests_per_client`` increments, one at a time, pausing up to
        ``think_ms`` after each answer (so that a workload can span a whole fault phase)."""
        self.think_ms = think_ms
        for client in self.clients:
            self.to_submit[client] = requests_per_client
            self._next(client)

    def _next(self, client: str) -> None:
        if self.to_submit.get(client, 0) > 0:
            self.to_submit[client] -= 1
            self.submit(client)

    def _on_output(self, observed: Observed) -> None:
        if not isinstance(observed.output, ClientResult):
            return
        request = (observed.output.client, observed.output.request_id)
        if request in self.submitted:
            self._answered.add(request)
        if observed.party in self.to_submit:
            client = observed.party
            pause = self.sim.rng.randint(0, self.think_ms) if self.think_ms else 0
            self.sim.schedule(self.sim.now_ms + pause, lambda sim: self._next(client))

    def answered(self) -> set[tuple[str, int]]:
        return {(o.output.client, o.output.request_id) for o in self.sim.outputs if isinstance(o.output, ClientResult)}

    def workload_done(self) -> bool:
        """Every client sent all its requests and got every answer (cheap: called after every event)."""
        return len(self._answered) == len(self.submitted) and not any(self.to_submit.values())

    # -- the properties -------------------------------------------------------------------------
    def statuses(self) -> dict[str, dict]:
        return {r: self.replica(r).status() for r in self.replicas if self.sim.alive(r)}

    def safety_violations(self) -> list[Violation]:
        outputs, correct = self.sim.outputs, self.correct
        return (checkers.agreement(outputs, correct)
                + checkers.validity(outputs, correct, self.submitted)
                + checkers.exactly_once(outputs, correct)
                + checkers.counter_results(outputs, lambda b: kvapp.result(b).value))

    def violations(self, *, liveness_bound_ms: int) -> list[Violation]:
        bound = 2 * self.config.watermark_window + self.config.batch_size
        unsent = {c: k for c, k in self.to_submit.items() if k}
        stalled = [Violation("liveness", f"the workload did not finish: still to send {unsent}")] if unsent else []
        return (self.safety_violations() + stalled
                + checkers.bounded_log(self.sim.outputs, self.correct, bound, self.statuses())
                + checkers.liveness(self.sim.outputs, self.submitted, self.healed_at_ms, liveness_bound_ms,
                                    self.sim.now_ms))


def build_world(seed: int, n: int = 4, *, clients: int = 2, network: NetworkConfig | None = None,
                config: PbftConfig | None = None, verify_cache: bool = True, tick_ms: int = 5) -> PbftWorld:
    """n replicas (``R0``..) with ``KvApp`` and ``clients`` clients (``c0``..), keys from ``seed``."""
    client_ids = tuple(f"c{i}" for i in range(clients))
    config = config or small_config(n)
    if config.clients is None:
        config = replace(config, clients=frozenset(client_ids))  # only they may submit
    keys = generate_keys([*config.replicas, *client_ids], seed=seed)
    cache = VerifyCache() if verify_cache else None
    if cache is not None:
        keys = {p: caching(k, cache) for p, k in keys.items()}
    sim = Simulation(seed, network=network, tick_ms=tick_ms)
    world = PbftWorld(sim, config, keys, client_ids, cache)
    for r in config.replicas:
        sim.add_node(r, lambda storage, r=r: Replica(r, config, keys[r], kvapp.KvApp(), storage))
    for c in client_ids:
        sim.add_node(c, lambda storage, c=c: ClientCore(c, config, keys[c], rng=random.Random(f"{seed}/{c}")))
    return world


def behaviour_rng(world: PbftWorld) -> random.Random:
    """A private generator for one behaviour, drawn from the simulation's (so still one seed)."""
    return random.Random(world.sim.rng.getrandbits(64))
