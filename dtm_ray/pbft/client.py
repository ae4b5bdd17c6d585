"""The client side of PBFT, sans-I/O.

A client sends each request to ``f+1`` replicas, the primary it believes in among them (so a
faulty primary alone cannot silently drop it: the backups forward it and start their timers),
resends it to every replica after ``client_retry_ms``, then after twice as long each time
(``dtm_ray.retry``: a fixed period floods a slow cluster) until it is answered, and accepts a result
once ``f+1`` distinct replicas sent matching MAC'd replies (one of them is correct). It learns
the current view from the replies.

Requests carry a MAC authenticator under ``auth_scheme="hmac"`` (the default). Once f+1
replicas answer "authenticator refused: sign requests" (``AuthRefusal``: f+1 complaints made the
cluster refuse this client's MACs, because this client or a faulty primary in its name sent an
inconsistent authenticator, see ``dtm_ray.pbft.authdefence``), the client signs its current
request and every later one with Ed25519, which convinces every replica.

Back-pressure: a replica whose admission bound is reached answers ``Busy`` instead of keeping
the request (``dtm_ray.pbft.admission``). Once f+1 replicas (one is correct) or the primary of
the view it believes in said so, the client stops resending and waits a bounded, exponentially
growing, jittered time (``BUSY_MAX_FACTOR``; the jitter comes from the client's own seeded
``rng``, so a crowd refused together does not come back together), then sends the request again
to its first targets. A faulty replica alone cannot slow it down; a faulty primary can, by at
most the backoff per attempt, while the backups, which kept the request, time it.

Requests of one client are sent one at a time, in ``request_id`` order: a replica executes a
client's request only if its id is above the last one executed for that client, so pipelining
could let a later request overtake (and make stale) an earlier one. ``submit`` queues; run many
clients for concurrency.
"""

from __future__ import annotations

import random
from collections import deque

from dtm_ray.crypto import KeyRing, open_envelope
from dtm_ray.errors import AuthError, RemoteProtocolError
from dtm_ray.node import Outbox, Ready
from dtm_ray.pbft import quorum
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.events import ClientResult, Rejected
from dtm_ray.pbft.messages import AuthRefusal, Busy, Reply, Request, seal_request
from dtm_ray.retry import Backoff
from dtm_ray.wire import decode


BUSY_MAX_FACTOR = 4  # the longest busy backoff, in client_retry_ms (before the jitter of 0.5..1.5): longer
# ones leave the cluster idle while refused clients still sleep (measured: 77 % of the peak at 8, 88 % at 4)


class ClientCore:
    def __init__(self, client_id: str, config: PbftConfig, keys: KeyRing, first_request_id: int = 1,
                 rng: random.Random | None = None) -> None:
        self.node_id = self.id = client_id
        self.config = config
        self.keys = keys
        self.view = 0  # the highest view f+1 replicas reported
        self.now = 0
        self._out = Outbox()
        self._next_id = first_request_id
        self._queue: deque[tuple[int, bytes]] = deque()
        self._current: tuple[int, bytes] | None = None  # (request_id, sealed request)
        self._current_op = b""  # the operation of _current (resealed signed on AuthRefusal)
        self._retry = Backoff(config.client_retry_ms)
        self._replies: dict[str, tuple[bytes, int]] = {}  # replica -> (result, view) for _current
        self._refused_by: set[str] = set()  # replicas that refused _current's authenticator
        self.signing = config.auth_scheme == "ed25519"  # sign requests (or MAC them)
        self.rejected = 0
        self._rng = rng if rng is not None else random.Random(client_id)  # the busy backoff's jitter
        self._busy_from: set[str] = set()  # replicas that answered BUSY to _current's latest send
        self._busy_streak = 0  # BUSY backoffs of _current so far: each one waits twice as long
        self._resume_at: int | None = None  # backing off: send _current again at this time
        self.busy_backoffs = 0  # backoffs in all (status and benchmarks)

    # -- API -----------------------------------------------------------------------------------
    def submit(self, operation: bytes) -> int:
        """Queue ``operation``; returns its request id. Its ``ClientResult`` arrives in
        ``take_ready().outputs``."""
        request_id = self._next_id
        self._next_id += 1
        self._queue.append((request_id, operation))
        self._send_next()
        return request_id

    @property
    def outstanding(self) -> int:
        return len(self._queue) + (self._current is not None)

    # -- the Node contract ---------------------------------------------------------------------
    def receive(self, sender: str, payload: bytes) -> None:
        try:
            env = open_envelope(payload)
            if env.sender not in self.config.replicas:
                raise AuthError(f"reply from {env.sender!r}, not a replica")
            if not self.keys.check_mac(env.sender, env.body, env.auth):
                raise AuthError(f"bad MAC from {env.sender!r}")
            reply = decode(env.body, (Reply, AuthRefusal, Busy))
        except RemoteProtocolError as exc:
            self.rejected += 1
            self._out.output(Rejected(self.id, sender, str(exc)))
            return
        if self._current is None or reply.client != self.id or reply.request_id != self._current[0]:
            return  # a late or duplicate reply
        if isinstance(reply, AuthRefusal):
            self._refused_by.add(env.sender)
            self._maybe_sign()
            return
        if isinstance(reply, Busy):
            self._busy_from.add(env.sender)
            self._maybe_back_off()
            return
        self._replies[env.sender] = (reply.result, reply.view)
        self._maybe_accept()

    def tick(self, now_ms: int) -> None:
        self.now = max(self.now, now_ms)
        if self._resume_at is not None:
            if self.now >= self._resume_at:
                self._resume_at = None
                self._send_current(self._first_targets())  # as a first send: the replicas are alive
            return
        if self._current is not None and self._retry.due(self._current[0], self.now):
            self._retry.sent(self._current[0], self.now)
            for r in self.config.replicas:  # the primary may be faulty: everybody gets it now
                self._out.send(r, self._current[1], after_persist=False)

    def take_ready(self) -> Ready:
        return self._out.take()

    # -- internals -----------------------------------------------------------------------------
    def _send_next(self) -> None:
        if self._current is not None or not self._queue:
            return
        request_id, operation = self._queue.popleft()
        self._current_op = operation
        self._busy_streak, self._resume_at = 0, None
        self._seal_and_send(request_id, self._first_targets())

    def _seal_and_send(self, request_id: int, targets) -> None:
        scheme = "ed25519" if self.signing else self.config.auth_scheme
        sealed = seal_request(self.keys, self.config.replicas, scheme, Request(self.id, request_id, self._current_op))
        self._current, self._replies, self._refused_by = (request_id, sealed), {}, set()
        self._send_current(targets)

    def _send_current(self, targets) -> None:
        """Send ``_current`` to ``targets``; the resend timer starts over from this send."""
        self._busy_from = set()
        self._retry = Backoff(self.config.client_retry_ms)
        self._retry.sent(self._current[0], self.now)
        for r in targets:
            self._out.send(r, self._current[1], after_persist=False)

    def _maybe_sign(self) -> None:
        """f+1 replicas (one correct) refused our MACs: sign this request and the later ones."""
        if len(self._refused_by) >= quorum.weak(self.config.f) and not self.signing:
            self.signing = True
            self._seal_and_send(self._current[0], self.config.replicas)

    def _maybe_back_off(self) -> None:
        """f+1 replicas, or the primary, are busy: wait before sending ``_current`` again."""
        if self._resume_at is not None:
            return
        primary = self.config.primary(self.view)
        if primary not in self._busy_from and len(self._busy_from) < quorum.weak(self.config.f):
            return
        wait = self.config.client_retry_ms * min(2 ** self._busy_streak, BUSY_MAX_FACTOR)
        self._busy_streak += 1
        self.busy_backoffs += 1
        self._resume_at = self.now + int(wait * (0.5 + self._rng.random()))

    def _first_targets(self) -> list[str]:
        """The primary of the view we believe in and the f replicas after it."""
        n, start = self.config.n, self.view % self.config.n
        return [self.config.replicas[(start + i) % n] for i in range(quorum.weak(self.config.f))]

    def _maybe_accept(self) -> None:
        results: dict[bytes, list[int]] = {}
        for result, view in self._replies.values():
            results.setdefault(result, []).append(view)
        for result, views in results.items():
            if len(views) >= quorum.weak(self.config.f):
                request_id = self._current[0]
                # f+1 replicas, one correct, were in at least the (f+1)-th highest view reported
                self.view = max(self.view, sorted(views, reverse=True)[quorum.weak(self.config.f) - 1])
                self._current, self._resume_at, self._busy_streak = None, None, 0
                self._out.output(ClientResult(self.id, request_id, result, self.view))
                self._send_next()
                return
