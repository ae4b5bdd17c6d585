"""The defence against inconsistent authenticators (the Aardvark MAC attack, NSDI'09 section 4.1).

A client request carries an authenticator: one pairwise MAC per replica. A faulty client can make
it good at the primary and bad at some backups; the primary orders it and the backups cannot
check it. Two rules close the attack, PBFT's own and one of this module:

1. **Vouching** (PBFT, section 4.2 of Castro's thesis). A backup that cannot authenticate a request
   of a PRE-PREPARE waits for f+1 distinct replicas to vouch for the batch: the primary (its
   PRE-PREPARE) and f backups (their PREPAREs for the same digest). It then prepares it too. So an
   authenticator good at the primary and at >= f backups causes no stall at all.
2. **Complaints**. It also broadcasts a signed ``AuthComplaint`` quoting the request. f+1
   complaints from distinct replicas about one request prove that its client *or the primary
   that ordered it* is faulty (one complainer is correct and really saw a bad MAC: either the
   client sent it, or the primary, which holds its own key with the client and nobody else's,
   forged the request). The consequence must be one a correct client survives, since it may be
   framed: every correct replica stops taking MAC-authenticated requests from that client and
   answers them with ``AuthRefusal`` ("authenticator refused: sign requests", alike at every
   correct replica), the client signs from then on (``ClientCore`` switches on f+1 refusals), and
   a signature convinces every replica (a signed request the primary orders and that does not
   verify is the primary's fault: ``invalid-batch``). The proof (the request and the f+1
   complaints) is recorded as ``Evidence`` against the client (``inconsistent-authenticator``).
   A slot held for a refused client's request and still not vouched for after ``retransmit_ms``
   is dead in this view (no f+1 vouchers came although they would have by now): the replica asks
   for a view change at once instead of waiting for its stall timer. That is the attack's one
   view change; after it, the client's MAC requests are refused and dropped everywhere.

**No correct replica executes a request its client did not send.** A correct replica prepares a
batch only if it authenticated each request itself (its own pairwise key with the client, which
only the client and it hold) or f+1 distinct replicas vouched for the batch. Among f+1 vouchers
one is correct; by induction on the time of vouching, the first correct replica to vouch
authenticated the request itself, so the client sent it. A batch re-proposed by a NEW-VIEW is
accepted on its prepared certificate, 2f+1 vouchers, so the same holds.

**The slot cannot stall forever.** Let the primary be correct (a faulty one is replaced by the
ordinary timers, which watch every pending request). If at least f correct backups can check
the request, they prepare and every correct backup gets f+1 vouchers. Otherwise fewer than f of
the >= 2f correct backups can, so at least f+1 correct backups cannot, and each complains: every
correct replica gets f+1 complaints (complaints are broadcast, and the first f+1 relayed once),
refuses the client, and those that hold the slot ask for a view change after ``retransmit_ms``.
2f+1 of them do (f+1 correct complainers plus, by PBFT's join rule on f+1 VIEW-CHANGEs, the
rest), and the NEW-VIEW nulls the slot unless it was prepared somewhere, in which case its
certificate carries it. A new primary re-proposes no MAC request of a refused client: it drops
them from its pending set.

**One faulty replica cannot make others refuse a client**: it takes f+1 complaints from distinct
replicas; a complaint is signed by its author, quotes the request whole, and must be about a MAC
request (a signed request cannot be unverifiable). Nor can it cause a view change alone: the
early view change needs a refused client, i.e. f+1 complaints.

Shared state it owns (``_init_auth_defence``): ``mac_refused``, ``_awaiting``, ``_complaints``,
``_open``.
It uses the intake's ``pending`` and ``_refusals``, the log's slots and the view change.
"""

from __future__ import annotations

from collections import Counter

from dtm_ray.crypto import Envelope, digest, seal_mac
from dtm_ray.errors import AuthError
from dtm_ray.pbft import quorum
from dtm_ray.pbft.log import Slot
from dtm_ray.pbft.messages import AuthComplaint, AuthRefusal, PrePrepare, Request, is_signed_request, seal
from dtm_ray.wire import decode

DEFENCE = True  # the negative controls of tests/test_aardvark.py switch it off (today's behaviour)
SIGN_REQUESTS = "authenticator refused: sign requests"
MAX_OPEN_COMPLAINTS = 128  # unproven complaints kept per complaining replica


class AuthDefence:
    def _init_auth_defence(self) -> None:
        self.mac_refused: dict[str, int] = {}  # client -> when f+1 complaints refused its MACs
        # seq -> (pre-prepare, its payload, requests we could not authenticate, since when)
        self._awaiting: dict[int, tuple[PrePrepare, bytes, tuple[bytes, ...], int]] = {}
        # request digest -> (the seq complained about, complainer -> its signed complaint)
        self._complaints: dict[bytes, tuple[int, dict[str, bytes]]] = {}
        self._open: Counter[str] = Counter()  # complainer -> its complaints not yet proven

    # -----------------------------------------------------------------------------------------
    # A PRE-PREPARE with requests this replica cannot authenticate

    def _await_vouchers(self, pp: PrePrepare, payload: bytes, unverified: tuple[bytes, ...]) -> None:
        """Hold the batch until f+1 replicas vouch for it, and complain about each request."""
        if not DEFENCE:
            return  # today's behaviour: the batch is dropped here, the slot stalls
        previous = self._awaiting.get(pp.seq)
        since = previous[3] if previous is not None and previous[0].digest == pp.digest else self.now
        self._awaiting[pp.seq] = (pp, payload, unverified, since)
        for raw in unverified:
            if decode(raw, Envelope).sender in self.mac_refused:
                continue  # proven already (and the proof passed on): nothing more to say
            if self.id not in self._complaints.get(digest(raw), (0, {}))[1]:
                complaint = seal(self.keys, AuthComplaint(pp.view, pp.seq, raw))
                self._broadcast(complaint, after_persist=False)
                self._count_complaint(self.id, pp.seq, raw, complaint)

    def _retry_awaiting(self) -> None:
        """After every step: accept what is vouched for, forget what another view replaced, and
        give up on a slot held for a refused client (see the module docstring)."""
        for seq, (pp, payload, unverified, since) in list(self._awaiting.items()):
            slot = self.log.get(seq)
            if pp.view != self.view or slot is None or slot.pp is not None:
                del self._awaiting[seq]
            elif self._vouchers(slot, pp) >= quorum.weak(self.config.f):
                del self._awaiting[seq]
                self._accept_preprepare(slot, pp, payload)
            elif self._dead(unverified, since):
                self._start_view_change(self.view + 1, "unvouched-batch")
                return

    def _vouchers(self, slot: Slot, pp: PrePrepare) -> int:
        """The primary and the backups other than us that PREPAREd this very batch."""
        primary = self.config.primary(pp.view)
        return 1 + sum(1 for r, (d, _) in slot.prepares.items() if d == pp.digest and r not in (primary, self.id))

    def _dead(self, unverified: tuple[bytes, ...], since: int) -> bool:
        for raw in unverified:
            refused = self.mac_refused.get(decode(raw, Envelope).sender)
            if refused is not None and self.now - max(refused, since) >= self.retransmit_ms:
                return True
        return False

    # -----------------------------------------------------------------------------------------
    # Complaints

    def _on_complaint(self, env: Envelope, payload: bytes) -> None:
        if env.sender == self.id:
            self.ignored += 1  # our own complaint, relayed back
            return
        if env.sender not in self.peers:
            raise AuthError(f"AuthComplaint from {env.sender!r}, not a peer replica")
        if not self.keys.verify(env.sender, env.body, env.auth):
            raise AuthError(f"bad signature on AuthComplaint from {env.sender!r}")
        complaint = decode(env.body, AuthComplaint)
        quoted = decode(complaint.request, Envelope)
        req = decode(quoted.body, Request)
        if req.client != quoted.sender or is_signed_request(self.config.replicas, self.config.auth_scheme, quoted):
            raise AuthError(f"AuthComplaint from {env.sender!r} about no MAC-authenticated request")
        self._count_complaint(env.sender, complaint.seq, complaint.request, payload)

    def _count_complaint(self, sender: str, seq: int, raw: bytes, payload: bytes) -> None:
        """Count ``sender``'s complaint about request ``raw``; f+1 distinct: refuse its client.

        Bounded: at most MAX_OPEN_COMPLAINTS unproven complaints per complainer (a faulty one can
        fill only its own share), forgotten once their slot is below the low watermark; a proof
        is forgotten once its client is refused, and complaints about a refused client are not
        kept at all."""
        client = decode(raw, Envelope).sender
        if not DEFENCE or client in self.mac_refused:
            return
        if self._open[sender] >= MAX_OPEN_COMPLAINTS:
            self._forget_old_complaints()
            if self._open[sender] >= MAX_OPEN_COMPLAINTS:
                return
        key = digest(raw)
        seq_of, votes = self._complaints.setdefault(key, (seq, {}))
        if sender in votes:
            return
        votes[sender] = payload
        self._open[sender] += 1
        if len(votes) >= self._complaints_needed():
            self._forget_complaints(key)
            self._refuse_macs_of(client, raw, votes)

    def _complaints_needed(self) -> int:
        """f+1: one of them is from a correct replica that really saw a bad MAC."""
        return quorum.weak(self.config.f)

    def _forget_complaints(self, key: bytes) -> None:
        for complainer in self._complaints.pop(key)[1]:
            self._open[complainer] -= 1

    def _forget_old_complaints(self) -> None:
        for key in [k for k, (seq, _) in self._complaints.items() if seq <= self.log.low]:
            self._forget_complaints(key)

    def _refuse_macs_of(self, client: str, raw: bytes, complaints: dict[str, bytes]) -> None:
        """f+1 complaints: the client (or the primary that ordered its request) is faulty. Record
        the proof, pass it on once (so every correct replica has it), drop the client's MAC
        requests and tell it to sign."""
        self.mac_refused[client] = self.now
        self._evidence(client, "inconsistent-authenticator", (raw, *complaints.values()))
        for author, complaint in complaints.items():
            for r in self.peers:
                if r != author:
                    self._out.send(r, complaint, after_persist=False)
        for key, sealed in [(k, p) for k, p in self.pending.items() if k[0] == client]:
            if not is_signed_request(self.config.replicas, self.config.auth_scheme, decode(sealed, Envelope)):
                self._forget_pending(key)
                self.waiting_requests.pop(key, None)
                self._refuse_authenticator(client, key[1])

    def _recover_refusal(self, accused: str, record) -> None:
        """After a restart: the persisted proof still refuses the client's MACs (the evidence is
        recorded once per client, when its MACs are first refused)."""
        if record.kind == "inconsistent-authenticator":
            self.mac_refused.setdefault(accused, 0)

    # -----------------------------------------------------------------------------------------
    # Intake: a refused client's MAC requests

    def _mac_refused(self, client: str, env: Envelope) -> bool:
        return client in self.mac_refused and not is_signed_request(
            self.config.replicas, self.config.auth_scheme, env)

    def _refuse_authenticator(self, client: str, request_id: int) -> None:
        self._reject(client, SIGN_REQUESTS)
        if client in self.keys.mac_keys and self._refusals.allow(client, self.now):
            self._out.send(client, seal_mac(self.keys, client, AuthRefusal(self.view, client, request_id)))
