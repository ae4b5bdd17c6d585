"""ByzzFuzz-style process faults: a faulty replica that lies in small ways its keys let it sign.

The named behaviours of ``dtm_ray.faults`` are whole strategies (equivocate, go mute, flood), and
byte mutations are rejected by authentication before any protocol logic sees them. ByzzFuzz
(Winter et al., "Randomized Testing of Byzantine Fault Tolerant Algorithms", OOPSLA 2023) found
most of its bugs between the two: a faulty process that follows the protocol, except that in a
few *rounds* drawn at random it sends some of its peers a message with **one field changed**
(a small-scope mutation: a view or sequence number off by one, another digest, a vote flipped,
an item dropped from a batch) and authenticates it with its own key, so that only the protocol's
own checks stand between the lie and the replicas' state.

- A **round** is the protocol step a message belongs to: its sequence number (PRE-PREPARE,
  PREPARE, COMMIT, CHECKPOINT), a REPLY's request id, else its view (VIEW-CHANGE, NEW-VIEW),
  else the count of messages of its kind this replica sent so far (the transaction layer's
  batches).
- A **schedule** (``draw_schedule(seed, ...)``) is a few ``Fault(round, kinds, targets, salt)``:
  in that round, the messages of those kinds sent to those targets are mutated. Every mutation
  is a pure function of the message and the fault's salt, so one seed is one run.
- The mutated message is re-sealed the way the original was: signed if it was signed, MAC'd to
  its destination if it was MAC'd. A message the replica cannot open (a client's request it
  forwards) passes unchanged: the replica cannot forge what is not its own.

Rules: pure (no clock, no global random), never raises in the send path.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Iterable

import msgspec

from dtm_ray.crypto import Envelope, KeyRing, seal_mac, seal_signed
from dtm_ray.errors import DtmError
from dtm_ray.faults import Behaviour, open_own
from dtm_ray.node import Outgoing
from dtm_ray.wire import Message, decode, encode

SIGNATURE_BYTES = 64  # Ed25519
MAC_BYTES = 32  # HMAC-SHA256
MAX_DEPTH = 2  # how far into nested messages (a batch's items) a mutation reaches

# The message kinds a schedule draws from: the replica protocol's and the transaction layer's.
REPLICA_KINDS = ("PrePrepare", "Prepare", "Commit", "Checkpoint", "ViewChange", "NewView", "Status")
KINDS = REPLICA_KINDS + ("Reply", "PrepareBatch", "DecisionBatch")  # to clients and participants
EVERYONE = ("*",)


@dataclass(frozen=True, slots=True)
class Fault:
    round: int
    kinds: tuple[str, ...]  # class names of the messages mutated in this round
    targets: tuple[str, ...]  # the destinations that get the mutated version (EVERYONE: all)
    salt: int  # picks the field and the mutation

    def __str__(self) -> str:
        return f"r{self.round}:{'|'.join(self.kinds)}->{','.join(self.targets)}#{self.salt % 1000}"


@dataclass(frozen=True, slots=True)
class Schedule:
    faulty: str
    faults: tuple[Fault, ...]

    def describe(self) -> str:
        return f"{self.faulty}: " + " ".join(map(str, self.faults))


def draw_schedule(seed: int, replicas: tuple[str, ...], *, rounds: int = 12, faults: int = 3,
                  faulty: str | None = None, kinds: tuple[str, ...] = KINDS) -> Schedule:
    """``faults`` process faults in rounds 0..``rounds`` for one faulty replica (drawn, the
    view-0 primary about a third of the time, unless given)."""
    rng = random.Random(f"byzzfuzz:{seed}")
    if faulty is None:
        faulty = replicas[0] if rng.random() < 0.35 else rng.choice(replicas[1:])
    peers = [r for r in replicas if r != faulty]
    drawn = []
    for _ in range(rng.randint(1, faults)):
        chosen = tuple(sorted(rng.sample(kinds, rng.randint(1, min(3, len(kinds))))))
        to_everyone = rng.random() < 0.5 or not set(chosen) <= set(REPLICA_KINDS)
        targets = EVERYONE if to_everyone else tuple(sorted(rng.sample(peers, rng.randint(1, len(peers)))))
        drawn.append(Fault(rng.randint(0, rounds), chosen, targets, rng.getrandbits(32)))
    return Schedule(faulty, tuple(sorted(drawn, key=lambda f: (f.round, f.kinds, f.targets))))


def message_fields(obj: Any) -> tuple[str, ...]:
    """The field names of a protocol message (empty for anything else)."""
    return obj.__struct_fields__ if isinstance(obj, Message) else ()


def replace_fields(obj: Any, **changes: Any) -> Any:
    return msgspec.structs.replace(obj, **changes)


def round_of(msg: Any, counters: dict[str, int]) -> int:
    """The round a message belongs to (see the module docstring)."""
    for name in ("seq", "request_id", "new_view", "view"):
        value = getattr(msg, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    kind = type(msg).__name__
    counters[kind] = counters.get(kind, 0) + 1
    return counters[kind]


# ---------------------------------------------------------------------------------------------
# Small-scope mutations of one field


def mutate(msg: Any, rng: random.Random, depth: int = 0) -> Any:
    """``msg`` with one field changed (or, inside a tuple of messages, one item's field)."""
    names = [n for n in message_fields(msg) if getattr(msg, n) is not None]
    if not names:
        return msg
    name = rng.choice(names)
    return replace_fields(msg, **{name: _mutate_value(getattr(msg, name), rng, depth)})


def _mutate_value(value: Any, rng: random.Random, depth: int) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return max(0, value + rng.choice((-1, 1, 2))) if value else rng.choice((1, 2))
    if isinstance(value, bytes):
        if len(value) == 32:  # a digest: another one
            return hashlib.sha256(value + rng.randbytes(4)).digest()
        if not value:
            return b"\x00"
        i = rng.randrange(len(value))
        return value[:i] + bytes([value[i] ^ (1 << rng.randrange(8))]) + value[i + 1:]
    if isinstance(value, str):
        return value + "'" if rng.random() < 0.5 else value[:-1]
    if isinstance(value, tuple):
        return _mutate_tuple(value, rng, depth)
    if message_fields(value) and depth < MAX_DEPTH:
        return mutate(value, rng, depth + 1)
    return value


def _mutate_tuple(items: tuple, rng: random.Random, depth: int) -> tuple:
    if not items:
        return items
    i = rng.randrange(len(items))
    choice = rng.randrange(4)
    if choice == 0:
        return items[:i] + items[i + 1:]  # one dropped
    if choice == 1:
        return items[:i + 1] + items[i:]  # one duplicated
    if choice == 2 and len(items) > 1:
        return tuple(reversed(items))
    changed = _mutate_value(items[i], rng, depth + 1) if depth < MAX_DEPTH else items[i]
    return items[:i] + (changed,) + items[i + 1:]


# ---------------------------------------------------------------------------------------------
# The behaviour


def byzzfuzz(schedule: Schedule, keys: KeyRing) -> Behaviour:
    """The behaviour of ``schedule.faulty`` (whose OWN keys are ``keys``): every message passes,
    except those a fault of the schedule names, which go out mutated and re-sealed."""
    by_round: dict[int, list[Fault]] = {}
    for fault in schedule.faults:
        by_round.setdefault(fault.round, []).append(fault)
    counters: dict[str, int] = {}
    stats = {"mutated": 0}

    def behaviour(dest: str, payload: bytes) -> Iterable[Outgoing]:
        opened = open_own(keys, payload)
        if opened is None:
            return [(dest, payload)]
        env, msg = opened
        kind = type(msg).__name__
        if kind not in KINDS:
            return [(dest, payload)]
        faults = [f for f in by_round.get(round_of(msg, counters), ()) if kind in f.kinds and (dest in f.targets or f.targets == EVERYONE)]
        if not faults:
            return [(dest, payload)]
        try:
            rng = random.Random(f"{faults[0].salt}:{kind}:{dest}")
            mutated = mutate(msg, rng)
            sealed = _reseal(keys, env, dest, mutated)
        except (DtmError, ValueError, TypeError, OverflowError):
            return [(dest, payload)]
        if sealed is None:
            return [(dest, payload)]
        stats["mutated"] += 1
        return [(dest, sealed)]

    behaviour.stats = stats  # type: ignore[attr-defined]  (how many messages it changed)
    return behaviour


def _reseal(keys: KeyRing, env: Envelope, dest: str, msg: Any) -> bytes | None:
    """Authenticate ``msg`` as ``env`` was: signed, or MAC'd to ``dest``."""
    if len(env.auth) == SIGNATURE_BYTES:
        return seal_signed(keys, msg)
    if len(env.auth) == MAC_BYTES:
        return seal_mac(keys, dest, msg)
    return None


def _roundtrip(msg: Any) -> Any:  # used by tests: a mutation must still be a well-formed message
    return decode(encode(msg))


# ---------------------------------------------------------------------------------------------
# One checked run


@dataclass
class FuzzRun:
    seed: int
    schedule: Schedule
    mutated: int  # messages the faulty replica changed
    violations: list
    journal: list

    def report(self) -> str:
        lines = [f"seed={self.seed} schedule: {self.schedule.describe()} ({self.mutated} messages mutated)",
                 f"reproduce: DTM_SEED={self.seed} python -m pytest tests/test_byzzfuzz.py -k seed_replay",
                 *(f"  VIOLATION {v}" for v in self.violations[:20]),
                 "journal:", *(f"  {j}" for j in self.journal[-30:])]
        return "\n".join(lines)


def run_byzzfuzz(seed: int, *, n: int = 4, clients: int = 8, txns_per_client: int = 3, rounds: int = 12,
                 faults: int = 3, kinds: tuple[str, ...] = KINDS, workload: str = "bank",
                 liveness_bound_ms: int = 30_000) -> FuzzRun:
    """One faulty replica on ``draw_schedule(seed)``, a closed-loop workload, every invariant
    checked, and liveness: every client answered, every participant's transactions resolved
    (the faulty replica lies only in the scheduled rounds, then behaves)."""
    from dtm_ray.sim.txn_plans import WORKLOADS
    from dtm_ray.sim.txn_world import build_txn_world
    from dtm_ray.checks import Anomaly

    world = build_txn_world(seed, n, clients=clients)
    schedule = draw_schedule(seed, world.replicas, rounds=rounds, faults=faults, kinds=kinds)
    behaviour = byzzfuzz(schedule, world.keys[schedule.faulty])
    world.make_byzantine(schedule.faulty, behaviour, "byzzfuzz")
    rng = random.Random(world.sim.rng.getrandbits(64))
    world.start(WORKLOADS[workload](list(world.participants), rng), txns_per_client)
    sim = world.sim
    answered = sim.run_until(world.done, liveness_bound_ms)
    quiet = answered and sim.run_until(world.quiescent, liveness_bound_ms)
    violations = world.violations(complete=quiet)
    if answered and not quiet:
        violations.append(Anomaly("liveness", "prepared transactions never resolved at some participant"))
    return FuzzRun(seed, schedule, behaviour.stats["mutated"], violations, list(sim.journal))
