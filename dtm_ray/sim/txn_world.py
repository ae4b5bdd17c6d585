"""Transactions inside the simulator: PBFT replicas running the 2PC coordinator, participants,
clients, a workload, and the checkers that judge the run.

``TxnWorld`` builds the parties (replicas ``R0..``, participants by name, clients ``c0..``), runs
a closed-loop workload (each client sends its next transaction when the previous one is
answered, 20+ clients for concurrency), records the history (invocation and completion times,
ops, results) and checks, after a run:

- PBFT agreement among correct replicas (``dtm_ray.sim.checkers.agreement``);
- atomicity across participants (``dtm_ray.checks.atomicity``);
- the bank invariant (``dtm_ray.checks.bank``) for the bank workload;
- strict serializability of the list-append history (``dtm_ray.checks.elle``);
- liveness: every submitted transaction answered once the faults healed.

Workloads (``BankWorkload``, ``ListAppendWorkload``, ``HotKeyWorkload``) draw from their own
generator, seeded from the simulation's, so one seed replays everything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dtm_ray.checks import Anomaly
from dtm_ray.checks.atomicity import check_atomicity
from dtm_ray.checks.bank import check_bank
from dtm_ray.checks.elle import FAIL, INFO, OK, HistTxn, Mop, check_list_append
from dtm_ray.crypto import KeyRing, generate_keys
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.replica import Replica
from dtm_ray.sim import checkers
from dtm_ray.sim.network import NetworkConfig
from dtm_ray.sim.pbft_world import small_config
from dtm_ray.sim.simulation import Behaviour, Observed, Simulation
from dtm_ray.sim.verify_cache import VerifyCache, caching
from dtm_ray.txn.client import TxnClient
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.coordinator import CoordinatorApp
from dtm_ray.txn.events import Applied
from dtm_ray.txn.ops import Op, TxnResult, txn_id_of
from dtm_ray.txn.participant import Participant

DEFAULT_PARTICIPANTS = {"db-0": "kv", "db-1": "kv", "db-2": "kv"}


# ---------------------------------------------------------------------------------------------
# Workloads


class BankWorkload:
    """Accounts spread over the kv participants; transfers ``add(-x, min=0)`` + ``add(+x)``, and
    now and then a transaction that reads every account."""

    name = "bank"

    def __init__(self, participants: list[str], rng: random.Random, accounts_per_participant: int = 2,
                 initial: int = 10, read_all_rate: float = 0.2) -> None:
        self.accounts = [(p, f"acct:{i}") for p in participants for i in range(accounts_per_participant)]
        self.initial, self.rng, self.read_all_rate = initial, rng, read_all_rate
        self.total = initial * len(self.accounts)

    def setup(self) -> list[Op]:
        return [Op.put(p, k, self.initial) for p, k in self.accounts]

    def next_ops(self) -> list[Op]:
        if self.rng.random() < self.read_all_rate:
            return [Op.get(p, k) for p, k in self.accounts]
        (p1, k1), (p2, k2) = self.rng.sample(self.accounts, 2)
        amount = self.rng.randint(1, self.initial)
        return [Op.add(p1, k1, -amount, min=0), Op.add(p2, k2, amount)]

    def check(self, world: "TxnWorld") -> list[Anomaly]:
        final = {}
        for p, k in self.accounts:
            final[(p, k)] = world.sim.node(p).state().get(k) if world.sim.alive(p) else None
        reads = [(e.txn_id, {(op.participant, op.key): v for op, v in zip(e.ops, e.result.reads)})
                 for e in world.history.values()
                 if e.result is not None and e.result.committed and e.ops[0].kind == "get"]
        return check_bank(self.total, final, reads)


class ListAppendWorkload:
    """Elle's list-append: transactions of random appends (unique values) and reads."""

    name = "list-append"

    def __init__(self, participants: list[str], rng: random.Random, keys_per_participant: int = 3,
                 max_ops: int = 4) -> None:
        self.keys = [(p, f"list:{i}") for p in participants for i in range(keys_per_participant)]
        self.rng, self.max_ops = rng, max_ops
        self.next_value = 0

    def setup(self) -> list[Op]:
        return []

    def next_ops(self) -> list[Op]:
        ops = []
        for _ in range(self.rng.randint(1, self.max_ops)):
            p, k = self.rng.choice(self.keys)
            if self.rng.random() < 0.5:
                ops.append(Op.get(p, k))
            else:
                self.next_value += 1
                ops.append(Op.append(p, k, self.next_value))
        return ops

    def check(self, world: "TxnWorld") -> list[Anomaly]:
        final = {(p, k): (world.sim.node(p).state().get(k) or []) for p, k in self.keys if world.sim.alive(p)}
        return check_list_append(world.elle_history(), final)


class HotKeyWorkload(ListAppendWorkload):
    """Every transaction increments one hot counter, reads it and appends to one hot list: all
    conflict, none may abort, and the history must be serializable."""

    name = "hot-key"

    def __init__(self, participants: list[str], rng: random.Random) -> None:
        super().__init__(participants[:1], rng, keys_per_participant=1)
        self.hot = participants[0]

    def next_ops(self) -> list[Op]:
        self.next_value += 1
        return [Op.add(self.hot, "counter", 1), Op.get(self.hot, "list:0"),
                Op.append(self.hot, "list:0", self.next_value)]

    def check(self, world: "TxnWorld") -> list[Anomaly]:
        out = super().check(world)
        results = [e.result for e in world.history.values() if e.result is not None]
        aborted = [r for r in results if not r.committed]
        if aborted:
            out.append(Anomaly("conflict-abort", f"{len(aborted)} hot-key transactions aborted: {aborted[0].reason}"))
        counter = world.sim.node(self.hot).state().get("counter", 0)
        if counter != len(results) - len(aborted):
            out.append(Anomaly("counter", f"hot counter {counter} != {len(results) - len(aborted)} commits"))
        return out


# ---------------------------------------------------------------------------------------------
# The world


@dataclass
class HistoryEntry:
    txn_id: str
    client: str
    ops: list[Op]
    start_ms: int
    end_ms: int | None = None
    result: TxnResult | None = None


@dataclass
class TxnWorld:
    sim: Simulation
    config: PbftConfig
    txn_config: TxnConfig
    keys: dict[str, KeyRing]
    clients: tuple[str, ...]
    verify_cache: VerifyCache | None
    byzantine: dict[str, str] = field(default_factory=dict)  # party -> behaviour name
    wiped: set[str] = field(default_factory=set)
    history: dict[str, HistoryEntry] = field(default_factory=dict)
    to_submit: dict[str, int] = field(default_factory=dict)
    workload: Any = None
    healed_at_ms: int = 0
    setup_done: bool = True
    unanswered: int = 0

    @property
    def replicas(self) -> tuple[str, ...]:
        return self.config.replicas

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(self.txn_config.participants)

    @property
    def correct(self) -> set[str]:
        return set(self.replicas) - set(self.byzantine) - self.wiped

    @property
    def correct_participants(self) -> set[str]:
        return set(self.participants) - set(self.byzantine)

    def make_byzantine(self, party: str, behaviour: Behaviour, name: str) -> None:
        self.byzantine[party] = name
        self.sim.set_behaviour(party, behaviour, name)

    def restart(self, party: str, *, wipe: bool = False) -> None:
        if wipe:
            self.wiped.add(party)
        self.sim.restart(party, wipe=wipe)

    # -- the workload ---------------------------------------------------------------------------
    def start(self, workload, txns_per_client: int) -> None:
        """Run ``workload``'s setup transaction (if any) first, then every client closed-loop."""
        self.workload = workload
        self.sim.watch(self._on_output)
        for c in self.clients:
            self.to_submit[c] = txns_per_client
        setup = workload.setup()
        if setup:
            self.setup_done = False
            self.submit(self.clients[0], setup)
        else:
            self._start_clients()

    def _start_clients(self) -> None:
        self.setup_done = True
        for c in self.clients:
            self._next(c)

    def submit(self, client: str, ops: list[Op]) -> str:
        rid = self.sim.invoke(client, lambda node: node.submit(ops))
        txn_id = txn_id_of(client, rid)
        self.history[txn_id] = HistoryEntry(txn_id, client, list(ops), self.sim.now_ms)
        self.unanswered += 1
        return txn_id

    def _next(self, client: str) -> None:
        if self.to_submit.get(client, 0) > 0:
            self.to_submit[client] -= 1
            self.submit(client, self.workload.next_ops())

    def _on_output(self, observed: Observed) -> None:
        result = observed.output
        if not isinstance(result, TxnResult) or result.txn_id not in self.history:
            return
        entry = self.history[result.txn_id]
        if entry.result is None:
            entry.result, entry.end_ms = result, observed.time_ms
            self.unanswered -= 1
        client = entry.client
        if not self.setup_done and not result.committed:  # e.g. an equivocating participant said NO
            self.sim.schedule(self.sim.now_ms, lambda sim: self.submit(client, self.workload.setup()))
        elif not self.setup_done:
            self.sim.schedule(self.sim.now_ms, lambda sim: self._start_clients())
        else:
            self.sim.schedule(self.sim.now_ms, lambda sim: self._next(client))

    def done(self) -> bool:
        return self.setup_done and self.unanswered == 0 and not any(self.to_submit.values())

    def quiescent(self) -> bool:
        """Every decision delivered: no correct participant holds a prepared transaction."""
        return all(self.sim.node(p).status()["prepared"] == 0 for p in self.participants if self.sim.alive(p))

    # -- the checks -----------------------------------------------------------------------------
    def results(self) -> dict[str, TxnResult]:
        return {t: e.result for t, e in self.history.items() if e.result is not None}

    def applied(self) -> list[Applied]:
        return [o.output for o in self.sim.outputs if isinstance(o.output, Applied)]

    def elle_history(self) -> list[HistTxn]:
        out = []
        for e in self.history.values():
            mops = []
            for i, op in enumerate(e.ops):
                if op.kind == "append":
                    mops.append(Mop("append", (op.participant, op.key), op.value))
                elif op.kind == "get":
                    value = e.result.reads[i] if e.result is not None and e.result.committed else None
                    mops.append(Mop("r", (op.participant, op.key), value if value is not None or e.result is None
                                    else []))
            status = INFO if e.result is None else (OK if e.result.committed else FAIL)
            out.append(HistTxn(e.txn_id, tuple(mops), status, e.start_ms, e.end_ms))
        return out

    def violations(self, *, complete: bool = True) -> list[Anomaly]:
        out = [Anomaly(v.prop, v.detail) for v in checkers.agreement(self.sim.outputs, self.correct)]
        touched = {t: {op.participant for op in e.ops} for t, e in self.history.items()}
        out += check_atomicity(self.applied(), self.results(), touched,
                               participants=self.correct_participants, complete=complete)
        if self.workload is not None:
            out += self.workload.check(self)
        unanswered = [t for t, e in self.history.items() if e.result is None]
        if unanswered:
            out.append(Anomaly("liveness", f"{len(unanswered)} transactions unanswered, e.g. {unanswered[:3]}"))
        return out

    def statuses(self) -> dict[str, dict]:
        return {p: self.sim.node(p).status() for p in self.replicas + self.participants if self.sim.alive(p)}


def client_server_keys(servers: list[str], clients: list[str], seed: int) -> dict[str, KeyRing]:
    """Key rings where clients share MAC keys with the servers (replicas, participants) only:
    clients never talk to each other, and ``generate_keys``' key per pair of parties is
    quadratic (12.5 million keys, half a minute, for 5,000 clients). Reproducible from ``seed``."""
    keys = generate_keys(servers, seed=seed)
    rng = random.Random(f"{seed}/client-keys")
    secret = {c: rng.getrandbits(256).to_bytes(32, "big") for c in clients}
    public = dict(keys[servers[0]].public_keys)
    public.update({c: Ed25519PrivateKey.from_private_bytes(k).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                   for c, k in secret.items()})
    macs = {s: dict(keys[s].mac_keys) for s in servers}
    out = {}
    for c in clients:
        mine = {s: rng.getrandbits(256).to_bytes(32, "big") for s in servers}
        for s, k in mine.items():
            macs[s][c] = k
        out[c] = KeyRing(c, secret[c], public, mine)
    out.update({s: KeyRing(s, keys[s].signing_key, public, macs[s]) for s in servers})
    return out


def build_txn_world(seed: int, n: int = 4, *, clients: int = 20, participants: dict[str, str] | None = None,
                    network: NetworkConfig | None = None, verify_cache: bool = True, tick_ms: int = 10,
                    pbft: dict | None = None, txn: dict | None = None, client_tick_ms: int | None = None,
                    participant_class: type = Participant, app_class: type = CoordinatorApp,
                    client_pair_keys: bool = True) -> TxnWorld:
    """``client_tick_ms``: how often clients tick (default ``tick_ms``); a client's timer only
    resends after ``client_retry_ms``, so a coarser tick costs no behaviour, and spares a
    simulation of thousands of idle clients most of its events. ``client_pair_keys=False``:
    no keys between clients (``client_server_keys``), for runs of thousands of clients."""
    participants = participants or dict(DEFAULT_PARTICIPANTS)
    config = replace(small_config(n), batch_size=32, checkpoint_interval=8, watermark_window=32,
                     view_change_timeout_ms=400, client_retry_ms=400)
    config = replace(config, **(pbft or {}))
    txn_config = TxnConfig(config.replicas, config.f, participants,
                           **{"vote_timeout_ms": 800, "resend_ms": 100, **(txn or {})})
    client_ids = tuple(f"c{i}" for i in range(clients))
    if config.clients is None:
        config = replace(config, clients=frozenset(client_ids))  # only they may submit
    if client_pair_keys:
        keys = generate_keys([*config.replicas, *participants, *client_ids], seed=seed)
    else:
        keys = client_server_keys([*config.replicas, *participants], list(client_ids), seed)
    cache = VerifyCache() if verify_cache else None
    if cache is not None:
        keys = {p: caching(k, cache) for p, k in keys.items()}
    sim = Simulation(seed, network=network, tick_ms=tick_ms)
    world = TxnWorld(sim, config, txn_config, keys, client_ids, cache)
    for r in config.replicas:
        sim.add_node(r, lambda storage, r=r: Replica(r, config, keys[r], app_class(r, txn_config, keys[r]), storage))
    for name, kind in participants.items():
        sim.add_node(name, lambda storage, name=name, kind=kind: participant_class(
            name, kind, txn_config, keys[name], storage))
    for c in client_ids:
        # each client's own generator (the busy backoff's jitter), seeded from the run's seed
        sim.add_node(c, lambda storage, c=c: TxnClient(c, config, keys[c], rng=random.Random(f"{seed}/{c}")),
                     tick_ms=client_tick_ms)
    return world
