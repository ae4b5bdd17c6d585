"""Workloads a client actor runs against the cluster (the load generator), and what they record
for the checkers.

- **bank**: transfers ``add(src, -x, min=0)`` + ``add(dst, +x)`` between accounts spread over the
  kv participants, and now and then a read of every account (a snapshot the bank checker sums).
- **hot-key**: bank transfers where most pick their accounts from a small hot set (contention).
- **list-append**: transactions of a few ``append(key, unique value)`` and ``get(key)`` micro-ops,
  recorded as an Elle history (``dtm_ray.checks.elle``).

Each op list is made from an injected ``random.Random``; the actor does the I/O and the timing.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from dtm_ray.checks.bank import check_bank
from dtm_ray.txn.ops import Op

Account = tuple[str, str]


def bank_step(rng: random.Random, accounts: list[Account], read_share: float = 0.1,
              span: int | None = None) -> tuple[str, list[Op]]:
    """A full read (``read_share``), or a transfer between two random accounts; with ``span`` = k,
    a transfer that touches exactly k participants (one debit, credits spread over the others; two
    accounts of one participant when k = 1)."""
    if rng.random() < read_share:
        return "read", [Op.get(p, k) for p, k in accounts]
    amount = rng.randint(1, 20)
    if span is None:
        src, dst = rng.sample(accounts, 2)
        return "transfer", [Op.add(src[0], src[1], -amount, min=0), Op.add(dst[0], dst[1], amount)]
    return "transfer", spread_transfer(rng, accounts, span, amount)


def spread_transfer(rng: random.Random, accounts: list[Account], span: int, amount: int) -> list[Op]:
    by_participant: dict[str, list[str]] = {}
    for p, k in accounts:
        by_participant.setdefault(p, []).append(k)
    if not 1 <= span <= len(by_participant):
        raise ValueError(f"span {span} needs 1..{len(by_participant)} participants")
    chosen = rng.sample(sorted(by_participant), span)
    if span == 1:
        src, dst = rng.sample(by_participant[chosen[0]], 2)
        return [Op.add(chosen[0], src, -amount, min=0), Op.add(chosen[0], dst, amount)]
    ops = [Op.add(chosen[0], rng.choice(by_participant[chosen[0]]), -amount, min=0)]
    shares = [amount // (span - 1)] * (span - 1)
    shares[0] += amount - sum(shares)  # the credits sum to the debit: the bank's total holds
    ops += [Op.add(p, rng.choice(by_participant[p]), share) for p, share in zip(chosen[1:], shares)]
    return ops


def hot_bank_step(rng: random.Random, accounts: list[Account], hot: int = 2, hot_share: float = 0.8,
                  read_share: float = 0.05) -> tuple[str, list[Op]]:
    """A bank step whose accounts come from the first ``hot`` accounts with ``hot_share``."""
    if rng.random() < read_share:
        return "read", [Op.get(p, k) for p, k in accounts]
    src, dst = (rng.sample(accounts[:max(2, hot)], 2) if rng.random() < hot_share
                else rng.sample(accounts, 2))
    amount = rng.randint(1, 20)
    return "transfer", [Op.add(src[0], src[1], -amount, min=0), Op.add(dst[0], dst[1], amount)]


def workload_step(workload: str, rng: random.Random, client: str, n: int, params: dict
                  ) -> tuple[str, list[Op]]:
    """The next transaction of ``workload`` ("bank", "hot-key" or "list-append"). The accounts are
    used as they came ((participant, key) pairs, lists after a Ray call): copying a list of
    30,000 of them per transaction cost the load generator ~3 ms per transaction, most of its CPU."""
    if workload == "bank":
        return bank_step(rng, params["accounts"], params.get("read_share", 0.1), params.get("span"))
    if workload == "hot-key":
        return hot_bank_step(rng, params["accounts"], params.get("hot", 2),
                             params.get("hot_share", 0.8), params.get("read_share", 0.05))
    if workload == "list-append":
        return "txn", list_append_step(rng, client, n, params["participants"], params.get("keys", 8))
    raise ValueError(f"unknown workload {workload!r}: 'bank', 'hot-key' or 'list-append'")


class MuxCore:
    """Many transaction-client cores behind one ``Node``: the core of a load-generator actor.

    ``receive_for(dest, ...)`` hands a message to the logical client it was sent to; ``tick``
    ticks the clients with a request outstanding (at most every ``tick_every_ms``: a client's only
    timer is its retry, hundreds of ms; an idle client has nothing to time, and its clock is
    brought up to date when it submits); ``take_ready`` merges what the clients that did
    something want done. Ticking and draining all 512 clients every 20 ms was a fifth of the
    load generator's CPU at the peak (py-spy).
    """

    def __init__(self, node_id: str, clients: dict[str, Any], tick_every_ms: int = 100) -> None:
        self.node_id = node_id
        self.clients = clients
        self.tick_every_ms = tick_every_ms
        self._dirty: set[str] = set()
        self._active: set[str] = set()  # clients with a request outstanding (as of their last tick)
        self._now = 0
        self._last_tick = -tick_every_ms
        self.unroutable = 0

    def receive(self, sender: str, payload: bytes) -> None:
        self.unroutable += 1  # not addressed to a logical client: nobody here to take it

    def receive_for(self, dest: str, sender: str, payload: bytes) -> None:
        client = self.clients.get(dest)
        if client is None:
            self.unroutable += 1
            return
        client.receive(sender, payload)
        self._dirty.add(dest)

    def submit(self, client: str, ops: list[Op]) -> str:
        core = self.clients[client]
        core.tick(self._now)  # its retry clock starts now, not at its last tick
        self._dirty.add(client)
        self._active.add(client)
        return core.txn_id(core.submit(ops))

    def tick(self, now_ms: int) -> None:
        self._now = max(self._now, now_ms)
        if now_ms - self._last_tick < self.tick_every_ms:
            return
        self._last_tick = now_ms
        for name in list(self._active):
            client = self.clients[name]
            client.tick(now_ms)
            self._dirty.add(name)
            if not client.outstanding:
                self._active.discard(name)

    def take_ready(self):
        from dtm_ray.node import Ready

        merged = Ready()
        for name in self._dirty:
            ready = self.clients[name].take_ready()
            merged.writes += ready.writes
            merged.send_now += ready.send_now
            merged.send_after_persist += ready.send_after_persist
            merged.outputs += ready.outputs
        self._dirty.clear()
        return merged

    def status(self) -> dict:
        return {"logical_clients": len(self.clients), "unroutable": self.unroutable,
                "outstanding": sum(c.outstanding for c in self.clients.values())}


def list_append_step(rng: random.Random, client: str, n: int, participants: list[str], keys: int
                     ) -> list[Op]:
    """2-4 micro-ops on random keys; appended values are unique: ``client-n-i``."""
    ops = []
    for i in range(rng.randint(2, 4)):
        p, k = rng.choice(participants), f"list:{rng.randrange(keys)}"
        ops.append(Op.append(p, k, f"{client}-{n}-{i}") if rng.random() < 0.5 else Op.get(p, k))
    return ops


@dataclass
class Record:
    """One submitted transaction as the load generator saw it (plain data, for the driver)."""

    txn_id: str
    kind: str
    ops: list[tuple[str, str, str, Any]]  # (participant, kind, key, value)
    status: str  # "ok" committed, "fail" aborted, "info" unknown (timed out)
    reads: list[Any] | None
    reason: str | None
    start_ns: int
    end_ns: int | None
    extra: dict = field(default_factory=dict)


def op_tuple(op: Op) -> tuple[str, str, str, Any]:
    return (op.participant, op.kind, op.key, op.value)


# ---------------------------------------------------------------------------------------------
# Driver side: set up the bank, read it back, check it (tests, benchmarks, demo)

BALANCE = 100


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    """Poll an observable condition; fails with a message (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def bank_accounts_of(cluster, per_participant=3):
    return bank_accounts_in(cluster.config, per_participant)


def bank_accounts_in(config, per_participant: int) -> list[Account]:
    """The bank's accounts in a cluster of ``config``: ``per_participant`` on each kv service."""
    kv = [p for p, kind in config.participants.items() if kind == "kv"]
    return [(p, f"acct:{i}") for p in kv for i in range(per_participant)]


def check_read_share(read_share: float, accounts: int, max_ops: int) -> None:
    """A bank read reads every account in one transaction: with more accounts than a transaction
    may hold (``max_ops``) each read would be refused and the run would measure refusals, so such a
    run is refused before it starts (a typed ``ConfigError``)."""
    from dtm_ray.errors import ConfigError

    if read_share and accounts > max_ops:
        raise ConfigError(f"read_share > 0 reads all {accounts} accounts in one transaction, more than "
                          f"max_ops = {max_ops}: use fewer accounts or read_share = 0")


def bank_setup_ops(accounts: list[Account], max_ops: int, balance: int = BALANCE) -> list[list[Op]]:
    """The bank's opening balances as transactions of at most ``max_ops`` puts, each on one
    participant (one prepare and one vote per transaction, no cross-service 2PC): the op lists
    load generators submit side by side (``actors.loadrun.setup_bank``)."""
    by_participant: dict[str, list[str]] = {}
    for p, k in accounts:
        by_participant.setdefault(p, []).append(k)
    return [[Op.put(p, k, balance) for k in keys[i:i + max_ops]]
            for p, keys in by_participant.items() for i in range(0, len(keys), max_ops)]


def bank_setup_of(cluster, accounts, client="alice"):
    puts = [Op.put(p, k, BALANCE) for p, k in accounts]
    step = cluster.config.max_ops  # many accounts: several setup transactions
    for start in range(0, len(puts), step):
        r = cluster.client(client).submit(puts[start:start + step])
        assert r.committed, r
    return BALANCE * len(accounts)


def quiescent(cluster, participants):
    """Every decision applied: a client's reply comes at the commit point, before participants
    apply, so the committed data is a consistent snapshot only once nothing is prepared."""
    status = cluster.status()["participants"]
    return all(status[p].get("alive") and not status[p]["locks"] and status[p]["prepared"] == 0
               for p in participants)


def bank_final(cluster, accounts, settle_s: float = 30.0):
    participants = sorted({p for p, _ in accounts})
    wait_until(lambda: quiescent(cluster, participants), settle_s, "participants quiescent")
    states = {p: cluster.participant_state(p) for p in {p for p, _ in accounts}}
    return {(p, k): states[p].get(k) for p, k in accounts}


def check_bank_run(cluster, accounts, total, records, settle_s: float = 30.0):
    """The bank invariant on the final balances and every full read, then atomicity. ``settle_s``:
    how long the transactions still in flight (a load generator's backlog) may take to finish."""
    anomalies = bank_anomalies(cluster, accounts, total, records, settle_s)
    assert not anomalies, [str(a) for a in anomalies]
    check_atomicity_run(cluster, records)


def bank_anomalies(cluster, accounts, total, records, settle_s: float = 30.0) -> list:
    """The bank checker's findings on the final balances and every full read (empty: money held)."""
    accounts = [tuple(a) for a in accounts]
    reads = [(r["txn_id"], dict(zip(accounts, r["reads"]))) for r in records
             if r["kind"] == "read" and r["status"] == "ok"]
    return check_bank(total, bank_final(cluster, accounts, settle_s), reads)


def check_atomicity_run(cluster, records):
    """No transaction split across participants, none applied against what its client was told."""
    anomalies = atomicity_anomalies(cluster, records)
    assert not anomalies, [str(a) for a in anomalies]


def atomicity_anomalies(cluster, records) -> list:
    from dtm_ray.checks.atomicity import check_atomicity
    from dtm_ray.txn.ops import TxnResult

    results = {r["txn_id"]: TxnResult(r["status"] == "ok", "commit" if r["status"] == "ok" else "abort",
                                      r["txn_id"], r["reads"], r["reason"])
               for r in records if r["status"] != "info"}
    return check_atomicity(cluster.applied(), results)


