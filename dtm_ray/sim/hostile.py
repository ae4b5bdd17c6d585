"""Hostile inputs for the simulator and the fuzzers: bytes and requests an attacker can send.

Everything here builds what an adversary *could* put on the wire with the keys it holds, and
nothing more: a hostile client signs with its own key, a faulty replica with its own, a fuzzer
with none. The tests (``tests/test_hostile_*.py``) and the atheris targets (``fuzz/``) feed
these to every party's ``receive`` and check that the party rejects them, counts them, keeps
its state, and keeps serving everybody else.

- ``hostile_variants``: one captured, genuine message turned into each kind of malformed or
  misauthenticated message (random, truncated, bit-flipped, oversized, deeply nested,
  wrong-type, resealed by the wrong party, sealed by a client instead of a replica);
- ``client_request`` and the ``*_request`` helpers: requests a hostile client crafts
  (replays, forged authenticators, impersonation, oversized, unknown participant or op, an
  authenticator good at some replicas only: ``inconsistent_request``, the Aardvark attack);
- ``Recorder``: a pass-through behaviour that keeps every message a party sends (traffic to
  mutate);
- ``FuzzingSender``: a simulator action that injects hostile bytes at a steady rate;
- ``honest_throughput``: committed transactions of the honest clients per virtual second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import msgspec

from dtm_ray.crypto import MAC_LEN, Envelope, KeyRing, seal_mac, seal_signed
from dtm_ray.node import Outgoing
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import Executed, Rejected, ViewChanged
from dtm_ray.pbft.messages import Checkpoint, Reply, Request, seal_request
from dtm_ray.sim.txn_world import BankWorkload, ListAppendWorkload, TxnWorld, build_txn_world
from dtm_ray.txn.messages import AckBatch, DecisionBatch, DecisionItem, TxnRequest, Vote, VoteBatch
from dtm_ray.txn.ops import Op
from dtm_ray.wire import MAX_MESSAGE_BYTES, decode, encode

# The kinds of hostile bytes ``hostile_variants`` makes, in a fixed order (reports list them).
VARIANTS = ("random", "truncated", "bit-flip", "trailing-bytes", "oversized", "deeply-nested",
            "wrong-type", "resealed-by-other", "sealed-by-client", "claimed-by-other")

DEEP = 200  # nesting depth of the deeply nested variant (the decoder allows MAX_VALUE_DEPTH = 8)


# ---------------------------------------------------------------------------------------------
# Malformed and misauthenticated bytes


def nested(depth: int) -> bytes:
    """msgpack of ``[[[...[0]...]]]``, ``depth`` levels deep."""
    value: object = 0
    for _ in range(depth):
        value = [value]
    return msgspec.msgpack.encode(value)


def wrong_type_for(target_kind: str) -> object:
    """A well-formed message the target never expects from its peers."""
    if target_kind == "client":
        return Checkpoint(1, b"\0" * 32)
    if target_kind == "participant":
        return Reply(0, "c0", 1, b"")
    return DecisionBatch((DecisionItem("c0:1", 0, True),))  # a replica never receives decisions


def hostile_variant(kind: str, rng: random.Random, payload: bytes, *, target_kind: str,
                    impostor: KeyRing, client: KeyRing, oversized: bool = True) -> bytes:
    """``payload`` (a genuine envelope) turned into hostile bytes of ``kind`` (see ``VARIANTS``).

    ``impostor`` is a party other than the payload's sender (its key is not the sender's);
    ``client`` is a client's key ring (a client may never speak for a replica or participant)."""
    if kind == "random":
        return rng.randbytes(rng.randrange(0, 300))
    if kind == "truncated":
        return payload[: rng.randrange(len(payload))]
    if kind == "bit-flip":
        b = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b) if bytes(b) != payload else payload[:-1]
    if kind == "trailing-bytes":
        return payload + rng.randbytes(rng.randrange(1, 16))
    if kind == "oversized":
        if oversized:
            return payload + bytes(MAX_MESSAGE_BYTES)
        return payload + bytes(1024)
    env = decode(payload, Envelope)
    if kind == "deeply-nested":
        return encode(Envelope(env.sender, nested(DEEP), impostor.sign(nested(DEEP))))
    if kind == "wrong-type":
        return seal_signed(impostor, wrong_type_for(target_kind))
    if kind == "resealed-by-other":  # the sender's name, someone else's signature over its body
        return encode(Envelope(env.sender, env.body, impostor.sign(env.body)))
    if kind == "sealed-by-client":  # a client's valid signature on a message only a peer may send
        return seal_signed(client, decode(env.body))
    if kind == "claimed-by-other":  # the body and auth unchanged, another sender claimed
        return encode(Envelope(impostor.me, env.body, env.auth))
    raise ValueError(f"unknown variant {kind!r}")


# ---------------------------------------------------------------------------------------------
# Requests a hostile client crafts


def client_request(keys: KeyRing, config: PbftConfig, request_id: int, ops: list[Op], *,
                   client: str | None = None) -> bytes:
    """A request sealed with ``keys`` (the attacker's own), naming ``client`` (default: itself)."""
    operation = encode(TxnRequest(tuple(ops)))
    req = Request(client or keys.me, request_id, operation)
    # A replica holds no MAC key with itself, so its authenticator cannot cover every replica: a
    # replica posing as a client signs (replicas accept signed requests under either scheme).
    scheme = "ed25519" if keys.me in config.replicas else config.auth_scheme
    return seal_request(keys, config.replicas, scheme, req)


def forged_request(keys: KeyRing, config: PbftConfig, request_id: int, ops: list[Op],
                   rng: random.Random) -> bytes:
    """A request of ``keys.me`` whose authenticator is random bytes of the right length."""
    genuine = decode(client_request(keys, config, request_id, ops), Envelope)
    return encode(Envelope(genuine.sender, genuine.body, rng.randbytes(len(genuine.auth))))


def inconsistent_request(keys: KeyRing, config: PbftConfig, request_id: int, ops: list[Op],
                         good_at: Iterable[str], rng: random.Random, *, client: str | None = None) -> bytes:
    """The Aardvark attack's request (NSDI'09, section 4.1): an authenticator whose MAC is right
    for the replicas in ``good_at`` and random bytes for the others. ``keys`` need only share a
    key with the replicas of ``good_at``: a faulty primary forging a request in the name of
    ``client`` holds exactly its own pairwise key with that client."""
    name = client or keys.me
    body = encode(Request(name, request_id, encode(TxnRequest(tuple(ops)))))
    good = set(good_at)
    parts = []
    for r in config.replicas:
        if r in good:
            mac = keys.mac(name, body, sender=name) if keys.me != name else keys.mac(r, body)
            parts.append(mac)
        else:
            parts.append(rng.randbytes(MAC_LEN))
    return encode(Envelope(name, body, b"".join(parts)))


def impersonating_request(attacker: KeyRing, victim: str, config: PbftConfig, request_id: int,
                          ops: list[Op]) -> bytes:
    """A request claiming to be ``victim``'s, signed by ``attacker`` (both outer and inner names)."""
    body = encode(Request(victim, request_id, encode(TxnRequest(tuple(ops)))))
    return encode(Envelope(victim, body, attacker.sign(body)))


def oversized_ops(participant: str, config: PbftConfig) -> list[Op]:
    """Two puts whose values together exceed ``max_request_bytes`` (each is a valid Value)."""
    half = config.max_request_bytes // 2 + 8
    return [Op.put(participant, f"big:{i}", "x" * half) for i in range(2)]


# ---------------------------------------------------------------------------------------------
# Hostile services: what a participant can send with its own key


def vote_batch(keys: KeyRing, votes: Iterable[Vote]) -> bytes:
    return seal_signed(keys, VoteBatch(keys.me, tuple(votes)))


def ack_batch(keys: KeyRing, dest: str, items: Iterable[DecisionItem]) -> bytes:
    return seal_mac(keys, dest, AckBatch(tuple(items)))


# ---------------------------------------------------------------------------------------------
# Simulator helpers


@dataclass
class Recorder:
    """A pass-through behaviour that keeps what a party sends: ``(src, dest, payload)``."""

    src: str
    seen: list[tuple[str, str, bytes]]

    def __call__(self, dest: str, payload: bytes) -> Iterable[Outgoing]:
        self.seen.append((self.src, dest, payload))
        return [(dest, payload)]


@dataclass
class FuzzingSender:
    """Injects one hostile message every ``period_ms`` into a random target, as ``name``.

    ``make(rng, dest) -> bytes`` builds the message; ``sent`` counts per destination."""

    name: str
    targets: list[str]
    make: Callable[[random.Random, str], bytes]
    rng: random.Random
    period_ms: int = 2
    until_ms: int = 10**9
    sent: dict[str, int] = field(default_factory=dict)

    def start(self, sim) -> None:
        sim.schedule(sim.now_ms, self._fire)

    def _fire(self, sim) -> None:
        if sim.now_ms >= self.until_ms:
            return
        dest = self.rng.choice(self.targets)
        sim.inject(self.name, dest, self.make(self.rng, dest))
        self.sent[dest] = self.sent.get(dest, 0) + 1
        sim.schedule(sim.now_ms + self.period_ms, self._fire)


# ---------------------------------------------------------------------------------------------
# A world with honest clients and one attacker, and what to measure in it
#
# The last client of the world is the *hostile* one: it runs no workload; an attack injects what
# it sends (``sim.inject``). Honest clients run a closed-loop bank workload on accounts the
# attacker never names, so a slowdown measured is the attack's cost, not lock contention.

HONEST_CLIENTS = 4
ATTACK_START_MS = 400  # the bank setup is done by then; the attack and the measure start here
ATTACK_END_MS = 1_900


def hostile_world(seed: int, *, workload: str = "bank", **kwargs) -> tuple[TxnWorld, list[str], str]:
    """A world, its honest clients (started, closed loop, ``bank`` or ``list-append``), and the
    hostile client's id."""
    world = build_txn_world(seed, clients=HONEST_CLIENTS + 1, **kwargs)
    honest, hostile = list(world.clients[:-1]), world.clients[-1]
    make = BankWorkload if workload == "bank" else ListAppendWorkload
    world.workload = make(list(world.participants), random.Random(seed))
    world.sim.watch(world._on_output)
    for c in honest:
        world.to_submit[c] = 10**6  # closed loop until the run stops
    setup = world.workload.setup()
    if setup:
        world.setup_done = False
        world.submit(honest[0], setup)
    else:
        for c in honest:
            world._next(c)
    return world, honest, hostile


def honest_throughput(world: TxnWorld, clients: Iterable[str], start_ms: int, end_ms: int) -> float:
    """Committed transactions of ``clients`` completed in [start_ms, end_ms), per virtual second."""
    clients = set(clients)
    done = sum(1 for e in world.history.values()
               if e.client in clients and e.result is not None and e.result.committed
               and e.end_ms is not None and start_ms <= e.end_ms < end_ms)
    return done * 1000.0 / (end_ms - start_ms)


def rejections(world: TxnWorld, party: str, marker: str = "", since_ms: int = 0) -> int:
    """Rejected outputs of ``party`` whose reason contains ``marker``."""
    return sum(1 for o in world.sim.outputs
               if o.party == party and o.time_ms >= since_ms and isinstance(o.output, Rejected)
               and marker in o.output.reason)


def executions(world: TxnWorld, replica: str, client: str) -> list[int]:
    """The request ids of ``client`` that ``replica`` executed, one entry per execution."""
    return [rid for o in world.sim.outputs if o.party == replica and isinstance(o.output, Executed)
            for c, rid in o.output.requests if c == client]


def measure(seed: int, attack: Callable[[TxnWorld, str], None] | None, *,
            world_kwargs: dict | None = None) -> tuple[TxnWorld, float]:
    """Run the honest load, ``attack(world, hostile)`` scheduled at ATTACK_START_MS; returns the
    world and the honest committed transactions per virtual second over the attack window."""
    world, honest, hostile = hostile_world(seed, **(world_kwargs or {}))
    if attack is not None:
        world.sim.schedule(ATTACK_START_MS, lambda sim: attack(world, hostile))
    world.sim.run_for(ATTACK_END_MS)
    return world, honest_throughput(world, honest, ATTACK_START_MS, ATTACK_END_MS)


# ---------------------------------------------------------------------------------------------
# Hostile clients: each attack schedules what the hostile client sends and says, after the
# run, how many of its messages were tried and how many the replicas caught.


@dataclass
class Attack:
    """One attack in one world: what was sent, and how to count what was caught."""

    name: str
    tried: int = 0
    detect: Callable[[TxnWorld, "Attack"], int] = lambda world, attack: 0
    notes: dict = field(default_factory=dict)

    def detected(self, world: TxnWorld) -> int:
        return self.detect(world, self)


WATCHER = "R1"  # a backup: every injected request reaches it directly (counted there)
ATTACK_SPAN_MS = 1_000  # injections spread over this much virtual time


def _spread(world: TxnWorld, hostile: str, count: int, make: Callable[[int], bytes], *,
            every_replica: bool = True) -> None:
    """Inject ``make(i)`` for i < count, evenly over ATTACK_SPAN_MS, to every replica."""
    start, step = world.sim.now_ms, max(1, ATTACK_SPAN_MS // max(count, 1))
    targets = world.replicas if every_replica else (WATCHER,)
    for i in range(count):
        payload = make(i)
        for r in targets:
            world.sim.inject(hostile, r, payload, delay_ms=i * step)
    world.sim.note(f"attack: {count} messages from {hostile} over {count * step} ms")


def _marker_detector(marker: str) -> Callable[[TxnWorld, Attack], int]:
    """Counts the watcher's rejections whose reason names ``marker`` (never empty: an empty
    marker would count every rejection, the attacker's or not, as a detection)."""
    if not marker:
        raise ValueError("a detector needs a marker that names the attack's rejection")
    return lambda world, attack: rejections(world, WATCHER, marker, since_ms=ATTACK_START_MS)


def _from_attacker(hostile: str, marker: str) -> Callable[[TxnWorld, Attack], int]:
    """Counts the watcher's rejections of messages *from the attacker* whose reason names ``marker``."""
    def detect(world: TxnWorld, attack: Attack) -> int:
        return sum(1 for o in world.sim.outputs
                   if o.party == WATCHER and o.time_ms >= ATTACK_START_MS and isinstance(o.output, Rejected)
                   and o.output.sender == hostile and marker in o.output.reason)
    return detect


def attack_forged_auth(world: TxnWorld, hostile: str, rng: random.Random, count: int = 100) -> Attack:
    keys, cfg = world.keys[hostile], world.config
    _spread(world, hostile, count, lambda i: forged_request(keys, cfg, 1 + i, [Op.add("db-0", "mallory", 1)], rng))
    return Attack("forged authenticator", count, _marker_detector("bad"))


def attack_impersonation(world: TxnWorld, hostile: str, rng: random.Random, count: int = 100) -> Attack:
    """Requests in an honest client's name with a huge request id: accepted, they would turn every
    later request of the victim into a 'replay'."""
    victim = world.clients[0]
    keys, cfg = world.keys[hostile], world.config
    ops = [Op.add("db-0", "acct:0", -1, min=0), Op.add("db-0", "mallory", 1)]
    _spread(world, hostile, count, lambda i: impersonating_request(keys, victim, cfg, 10**9 + i, ops))
    return Attack("impersonating another client", count, _marker_detector("bad"))


def _refused(name: str, ops: list[Op], marker: str):
    def attack(world: TxnWorld, hostile: str, rng: random.Random, count: int = 50) -> Attack:
        keys, cfg = world.keys[hostile], world.config
        _spread(world, hostile, count, lambda i: client_request(keys, cfg, 1 + i, ops))
        return Attack(name, count, _marker_detector(marker))
    return attack


def _unknown_op() -> Op:
    return Op("db-0", "frobnicate", "k", None, None, None)  # bypasses the constructors' checks


attack_unknown_participant = _refused("unknown participant", [Op.put("db-9", "k", 1)], "unknown participant")
attack_unknown_op = _refused("unknown operation", [_unknown_op()], "unknown op kind")


def attack_oversized(world: TxnWorld, hostile: str, rng: random.Random, count: int = 20) -> Attack:
    keys, cfg = world.keys[hostile], world.config
    _spread(world, hostile, count, lambda i: client_request(keys, cfg, 1 + i, oversized_ops("db-0", cfg)))
    return Attack("oversized transaction", count, _marker_detector("max_request_bytes"))


def attack_replay(world: TxnWorld, hostile: str, rng: random.Random, count: int = 60) -> Attack:
    """Two genuine transactions of the attacker, then each of their envelopes replayed (the same
    and an older request id) to every replica. Caught = not executed a second time."""
    seen: list[tuple[str, str, bytes]] = []
    world.sim.set_behaviour(hostile, Recorder(hostile, seen), "recorder")
    sim = world.sim
    first = sim.now_ms
    sim.invoke(hostile, lambda node: node.submit([Op.add("db-0", "mallory", 1)]))
    sim.schedule(first + 200, lambda s: s.invoke(hostile, lambda node: node.submit([Op.add("db-0", "mallory", 1)])))

    def replay(s) -> None:
        requests = list(dict.fromkeys(p for src, dest, p in seen if dest in world.replicas))
        attack.notes["distinct_requests"] = len(requests)
        _spread(world, hostile, count, lambda i: requests[i % len(requests)])

    sim.schedule(first + 500, replay)

    def detect(world: TxnWorld, attack: Attack) -> int:
        """Caught = answered from the reply cache as a replay (the watcher counts each one),
        and never executed a second time."""
        done = executions(world, WATCHER, hostile)
        attack.notes["executions"] = len(done)
        attack.notes["executed_twice"] = len(done) - len(set(done))
        attack.notes["mallory"] = world.sim.node("db-0").state().get("mallory")
        replayed = world.sim.node(WATCHER).status()["replayed"].get(hostile, 0)
        return replayed if not attack.notes["executed_twice"] else 0

    attack = Attack("replayed request (same and older id)", count, detect)
    return attack


def attack_request_flood(world: TxnWorld, hostile: str, rng: random.Random, count: int = 600) -> Attack:
    """Valid, distinct requests as fast as the attacker can sign them: rate-limited per client
    (at most MAX_PENDING_PER_CLIENT waiting) so honest clients keep their share."""
    keys, cfg = world.keys[hostile], world.config
    _spread(world, hostile, count, lambda i: client_request(keys, cfg, 1 + i, [Op.add("db-2", "flood", 1)]))

    def detect(world: TxnWorld, attack: Attack) -> int:
        attack.notes["executed"] = len(executions(world, WATCHER, hostile))
        attack.notes["rate_limited"] = rejections(world, WATCHER, "too many pending", ATTACK_START_MS)
        return attack.notes["rate_limited"]

    return Attack("request flood (valid requests)", count, detect)


def attack_garbage_flood(world: TxnWorld, hostile: str, rng: random.Random, count: int = 1_000) -> Attack:
    _spread(world, hostile, count, lambda i: rng.randbytes(rng.randrange(1, 200)))
    return Attack("garbage flood (random bytes)", count, _from_attacker(hostile, "malformed"))


def attack_inconsistent_auth(world: TxnWorld, hostile: str, rng: random.Random, count: int = 100,
                             good_at: tuple[str, ...] | None = None) -> Attack:
    """Aardvark's MAC attack: requests whose authenticator verifies at the primary of the current
    view (default ``good_at``) and nowhere else, sent to every replica."""
    keys, cfg = world.keys[hostile], world.config
    good = good_at or (cfg.primary(max(world.sim.node(r).view for r in world.replicas)),)
    _spread(world, hostile, count,
            lambda i: inconsistent_request(keys, cfg, 1 + i, [Op.add("db-2", "aardvark", 1)], good, rng))

    def detect(world: TxnWorld, attack: Attack) -> int:
        attack.notes["executed"] = len(executions(world, WATCHER, hostile))
        attack.notes["view_changes"] = view_changes(world, WATCHER)
        return attack.tried - attack.notes["executed"]

    return Attack("inconsistent authenticator (Aardvark)", count, detect)


def view_changes(world: TxnWorld, replica: str, since_ms: int = 0) -> int:
    """Views ``replica`` entered since ``since_ms``."""
    return sum(1 for o in world.sim.outputs
               if o.party == replica and o.time_ms >= since_ms and isinstance(o.output, ViewChanged))


CLIENT_ATTACKS: dict[str, Callable[..., Attack]] = {
    "replay": attack_replay,
    "forged-auth": attack_forged_auth,
    "impersonation": attack_impersonation,
    "oversized": attack_oversized,
    "unknown-participant": attack_unknown_participant,
    "unknown-op": attack_unknown_op,
    "request-flood": attack_request_flood,
    "garbage-flood": attack_garbage_flood,
    "inconsistent-auth": attack_inconsistent_auth,
}


def run_client_attack(name: str | None, seed: int, *, world_kwargs: dict | None = None,
                      **attack_kwargs) -> tuple[TxnWorld, Attack | None, float]:
    """One run: honest load plus attack ``name`` (None: the baseline). Returns the world, the
    attack record and honest committed transactions per virtual second."""
    holder: list[Attack] = []
    rng = random.Random(seed * 7919 + 1)

    def start(world: TxnWorld, hostile: str) -> None:
        holder.append(CLIENT_ATTACKS[name](world, hostile, rng, **attack_kwargs))

    world, tps = measure(seed, start if name is not None else None, world_kwargs=world_kwargs)
    return world, (holder[0] if holder else None), tps


def main() -> None:  # python -m dtm_ray.sim.hostile [seed]
    import sys

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    _, _, base = run_client_attack(None, seed)
    print(f"seed {seed}; honest clients: {HONEST_CLIENTS}; window {ATTACK_START_MS}..{ATTACK_END_MS} virtual ms")
    print(f"{'attack':40} {'tried':>6} {'detected':>9} {'honest tx/s':>12} {'baseline':>9}  notes")
    for name in CLIENT_ATTACKS:
        world, attack, tps = run_client_attack(name, seed)
        print(f"{attack.name:40} {attack.tried:>6} {attack.detected(world):>9} {tps:>12.1f} {base:>9.1f}  {attack.notes}")


if __name__ == "__main__":
    main()
