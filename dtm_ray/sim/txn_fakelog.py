"""A tiny synchronous stand-in for the PBFT log, for unit tests of the transaction layer.

``FakeLog`` executes client requests and DECIDE proposals on n ``CoordinatorApp``s in one order
(as a correct PBFT log would), and delivers every message between replicas and participants in
FIFO order, synchronously. Tests can drop or rewrite messages (``intercept``), pick which
proposals get ordered, advance the clock and restart participants. Nothing here is random or
concurrent: it tests the protocol rules, the simulator tests the protocol under faults.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from dtm_ray.crypto import KeyRing, generate_keys, open_envelope
from dtm_ray.pbft.app import Verdict
from dtm_ray.storage import MemoryStorage
from dtm_ray.txn.config import TxnConfig
from dtm_ray.txn.coordinator import CoordinatorApp
from dtm_ray.txn.messages import TxnRequest
from dtm_ray.txn.ops import Op, TxnResult, txn_id_of
from dtm_ray.txn.participant import Participant
from dtm_ray.wire import decode, encode

Intercept = Callable[[str, str, bytes], Iterable[bytes]]  # (sender, dest, payload) -> payloads


def small_txn_config(f: int = 1, participants: dict[str, str] | None = None, **overrides) -> TxnConfig:
    replicas = tuple(f"R{i}" for i in range(3 * f + 1))
    participants = participants or {"db-0": "kv", "db-1": "kv", "mq-0": "queue"}
    return TxnConfig(replicas, f, participants, **{"vote_timeout_ms": 1000, "resend_ms": 100, **overrides})


class FakeLog:
    def __init__(self, config: TxnConfig, *, clients: tuple[str, ...] = ("alice",), seed: int = 0,
                 participant_class: type = Participant) -> None:
        self.config = config
        self.keys: dict[str, KeyRing] = generate_keys(
            list(config.replicas) + list(config.participants) + list(clients), seed)
        self.apps = {r: CoordinatorApp(r, config, self.keys[r]) for r in config.replicas}
        self.participant_class = participant_class
        self.storages = {p: MemoryStorage() for p in config.participants}
        self.participants = {p: self._build(p) for p in config.participants}
        self.now = 0
        self.seq = 0
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.intercept: Intercept | None = None
        self.replies: dict[str, dict[str, bytes]] = {}  # txn_id -> replica -> reply bytes
        self.outputs: list = []
        self.next_request: dict[str, int] = {}
        self.verdicts: list[dict[str, Verdict]] = []
        self._collect()

    def _build(self, name: str) -> Participant:
        p = self.participant_class(name, self.config.participants[name], self.config,
                                   self.keys[name], self.storages[name])
        return p

    # -- ordering --------------------------------------------------------------------------------
    def submit(self, client: str, ops: list[Op]) -> str:
        request_id = self.next_request.get(client, 0) + 1
        self.next_request[client] = request_id
        self.order_request(client, request_id, encode(TxnRequest(tuple(ops))))
        return txn_id_of(client, request_id)

    def order_request(self, client: str, request_id: int, operation: bytes) -> None:
        self.seq += 1
        for replica, app in self.apps.items():
            self._keep_replies(replica, app.execute(self.seq, client, request_id, operation))
        self._collect()

    def order_proposal(self, proposal: bytes) -> dict[str, Verdict]:
        """Validate on every replica; order it if all accept. Returns the verdicts."""
        verdicts = {r: app.validate_proposal(proposal) for r, app in self.apps.items()}
        self.verdicts.append(verdicts)
        if all(v is Verdict.ACCEPT for v in verdicts.values()):
            self.seq += 1
            for replica, app in self.apps.items():
                self._keep_replies(replica, app.execute_proposal(self.seq, proposal))
            self._collect()
        return verdicts

    def order_due(self, primary: str | None = None) -> int:
        """Order every proposal the primary considers due; returns how many were ordered."""
        ordered = 0
        for proposal in self.apps[primary or self.config.replicas[0]].proposals():
            if all(v is Verdict.ACCEPT for v in self.order_proposal(proposal).values()):
                ordered += 1
        return ordered

    def _keep_replies(self, replica: str, replies) -> None:
        for client, request_id, result in replies:
            self.replies.setdefault(txn_id_of(client, request_id), {})[replica] = result

    def result(self, txn_id: str) -> TxnResult | None:
        """The reply every replica gave (they must all agree)."""
        replies = self.replies.get(txn_id)
        if not replies:
            return None
        assert len(set(replies.values())) == 1, f"replicas disagree on {txn_id}: {replies}"
        return decode(next(iter(replies.values())), TxnResult)

    # -- messages and time -------------------------------------------------------------------------
    def _collect(self) -> None:
        for replica, app in self.apps.items():
            for dest, payload in app.take_messages():
                self.queue.append((replica, dest, payload))
        for name, participant in self.participants.items():
            ready = participant.take_ready()
            if ready.writes:
                self.storages[name].write(ready.writes)
            for dest, payload in ready.send_now + ready.send_after_persist:
                self.queue.append((name, dest, payload))
            self.outputs.extend(ready.outputs)

    def deliver(self) -> int:
        """Deliver every queued message (and what they cause); returns how many."""
        count = 0
        while self.queue:
            sender, dest, payload = self.queue.popleft()
            payloads = [payload] if self.intercept is None else list(self.intercept(sender, dest, payload))
            for p in payloads:
                count += 1
                if dest in self.apps:
                    self.apps[dest].receive(open_envelope(p))
                else:
                    self.participants[dest].receive(sender, p)
            self._collect()
        return count

    def deliver_one(self, *, step_ms: int = 0) -> bool:
        """Deliver one queued message, then let every replica take a step as PBFT would (ask
        for its proposals, tick); returns False when nothing was queued."""
        if not self.queue:
            return False
        sender, dest, payload = self.queue.popleft()
        for p in ([payload] if self.intercept is None else list(self.intercept(sender, dest, payload))):
            if dest in self.apps:
                self.apps[dest].receive(open_envelope(p))
            else:
                self.participants[dest].receive(sender, p)
        self.now += step_ms
        for app in self.apps.values():
            app.proposals()
            app.tick(self.now)
        self._collect()
        return True

    def tick(self, ms: int) -> None:
        self.now += ms
        for app in self.apps.values():
            app.tick(self.now)
        for participant in self.participants.values():
            participant.tick(self.now)
        self._collect()

    def settle(self, rounds: int = 20) -> None:
        """Deliver, order what is due, repeat until nothing moves."""
        for _ in range(rounds):
            moved = self.deliver() + self.order_due()
            if not moved:
                return

    def restart_participant(self, name: str) -> None:
        self.participants[name] = self._build(name)
        self._collect()

    def state(self, name: str):
        return self.participants[name].state()
