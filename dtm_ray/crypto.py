"""Keys, MACs, signatures and the authenticated envelope every message travels in.

Who holds what. The cluster builder (``generate_keys``) makes, for every party, an Ed25519 key
pair and, for every pair of parties, a pairwise HMAC-SHA256 key. Each party's ``KeyRing`` holds
its own signing key, everybody's public keys, and only the pairwise keys of pairs it belongs to.
A Byzantine replica can therefore sign and MAC as itself, and nothing more.

Which authentication where (measured on the development machine, see ``benchmarks/crypto_cost``:
Ed25519 sign ~60 us, verify ~130-170 us, HMAC-SHA256 ~3 us):

- **Replica-to-replica protocol messages are signed (Ed25519).** PREPAREs, COMMITs, CHECKPOINTs
  and VIEW-CHANGEs end up inside certificates (a prepared certificate inside a VIEW-CHANGE, a
  stable-checkpoint proof inside a state transfer) that a third replica must be able to verify;
  MACs cannot give that. The cost is per *slot*, not per request: a slot carries a batch of many
  requests, so at a few dozen slots per second the signatures are a small share of the CPU.
- **Client requests** carry a PBFT authenticator by default (``scheme="hmac"``: one pairwise MAC
  per replica, ~3 us each against ~130 us per Ed25519 verify, times n replicas, per
  transaction). Its known weakness, a faulty client whose MAC verifies at some replicas only
  (Aardvark, NSDI'09), is closed by ``dtm_ray.pbft.authdefence``: f+1 vouchers, signed
  complaints, and a client refused its MACs signs its requests from then on.
  ``scheme="ed25519"`` signs every request (verifiable by every backup, ~40x dearer).
- **Point-to-point messages nobody else must verify** (replies to clients, decisions to
  participants, acks, state-transfer chunks checked against a certified digest) carry a pairwise
  MAC over sender, receiver and body, so a message cannot be reflected back or redirected.
- **Participant votes are signed**: they are the evidence a DECIDE carries, checked by every
  replica. A participant signs one vote batch per flush, not one vote per transaction.

A single secret shared by all replicas is never used: one faulty replica could forge the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import Counter
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dtm_ray.errors import AuthError, LocalError
from dtm_ray.wire import Message, decode, encode

CONTEXT = b"dtm-ray/1\x00"
MAC_LEN = 32
SIG_LEN = 64


def digest(data: bytes) -> bytes:
    """The one hash of the project (SHA-256)."""
    return hashlib.sha256(data).digest()


class Envelope(Message, tag=1):
    """An authenticated message: ``body`` is the canonical encoding of the inner message.

    ``auth`` is a signature, a pairwise MAC, or an authenticator (one MAC per replica,
    concatenated in replica order), depending on the message kind; the receiver knows which.
    """

    sender: str
    body: bytes
    auth: bytes


# How many signatures and MACs this process made and checked (cost per transaction in benchmarks;
# one party per actor process, so the process's count is the party's). ``mac`` counts every HMAC
# computed, checks included: MACs made = mac - mac_checked.
CRYPTO_OPS: Counter = Counter()


@dataclass
class KeyRing:
    """Everything one party knows about keys. Built by ``generate_keys``; never shared whole."""

    me: str
    signing_key: bytes  # raw 32-byte Ed25519 private key of ``me``
    public_keys: dict[str, bytes]  # party -> raw 32-byte Ed25519 public key
    mac_keys: dict[str, bytes]  # peer -> pairwise key shared by ``me`` and that peer only
    _sk: Ed25519PrivateKey | None = field(default=None, repr=False, compare=False)
    _pk: dict[str, Ed25519PublicKey] = field(default_factory=dict, repr=False, compare=False)

    # -- signatures ---------------------------------------------------------------------------
    def sign(self, body: bytes) -> bytes:
        if self._sk is None:
            self._sk = Ed25519PrivateKey.from_private_bytes(self.signing_key)
        CRYPTO_OPS["sign"] += 1
        return self._sk.sign(CONTEXT + body)

    def verify(self, sender: str, body: bytes, signature: bytes) -> bool:
        CRYPTO_OPS["verify"] += 1
        pk = self._public(sender)
        if pk is None or len(signature) != SIG_LEN:
            return False
        try:
            pk.verify(signature, CONTEXT + body)
            return True
        except InvalidSignature:
            return False

    def _public(self, party: str) -> Ed25519PublicKey | None:
        pk = self._pk.get(party)
        if pk is None:
            raw = self.public_keys.get(party)
            if raw is None:
                return None
            pk = self._pk[party] = Ed25519PublicKey.from_public_bytes(raw)
        return pk

    # -- pairwise MACs ------------------------------------------------------------------------
    def mac(self, peer: str, body: bytes, *, sender: str | None = None) -> bytes:
        """MAC of a message from ``sender`` (default: me) to ``peer`` or from ``peer`` to me."""
        key = self.mac_keys.get(peer)
        if key is None:
            raise LocalError(f"{self.me} shares no MAC key with {peer}")
        src, dst = (self.me, peer) if sender in (None, self.me) else (peer, self.me)
        CRYPTO_OPS["mac"] += 1
        return hmac.digest(key, CONTEXT + src.encode() + b"\x00" + dst.encode() + b"\x00" + body, "sha256")

    def check_mac(self, peer: str, body: bytes, mac: bytes) -> bool:
        """Did ``peer`` send ``body`` to me?"""
        CRYPTO_OPS["mac_checked"] += 1
        if peer not in self.mac_keys or len(mac) != MAC_LEN:
            return False
        return hmac.compare_digest(self.mac(peer, body, sender=peer), mac)

    # -- PBFT authenticators (one MAC per replica) --------------------------------------------
    def authenticator(self, replicas: list[str], body: bytes) -> bytes:
        return b"".join(self.mac(r, body) for r in replicas)

    def check_authenticator(self, sender: str, body: bytes, auth: bytes, my_index: int) -> bool:
        part = auth[my_index * MAC_LEN : (my_index + 1) * MAC_LEN]
        return self.check_mac(sender, body, part)

    # -- shipping a key ring to the one actor that owns it --------------------------------------
    def to_dict(self) -> dict:
        return {"me": self.me, "signing_key": self.signing_key,
                "public_keys": dict(self.public_keys), "mac_keys": dict(self.mac_keys)}

    @classmethod
    def from_dict(cls, d: dict) -> "KeyRing":
        """A ring as shipped; with a ``"pool"`` entry (``{generator: clients}``, a replica's ring),
        it also knows the load generators' logical clients (``dtm_ray.poolkeys``)."""
        pool = d.get("pool")
        if not pool:
            return cls(d["me"], d["signing_key"], dict(d["public_keys"]), dict(d["mac_keys"]))
        from dtm_ray.poolkeys import PoolMacKeys, PoolPublicKeys

        return cls(d["me"], d["signing_key"], PoolPublicKeys(d["public_keys"], pool),
                   PoolMacKeys(d["mac_keys"], pool))

    def with_party(self, party: str, public_key: bytes, mac_key: bytes | None) -> "KeyRing":
        """A copy that also knows ``party`` (a client added after start)."""
        pub = dict(self.public_keys, **{party: public_key})
        macs = dict(self.mac_keys, **({party: mac_key} if mac_key is not None else {}))
        return KeyRing(self.me, self.signing_key, pub, macs)


def generate_keys(parties: list[str], seed: int | None = None) -> dict[str, KeyRing]:
    """Key rings for ``parties``: reproducible from ``seed`` (simulator), random otherwise."""
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    secret = {p: rng.getrandbits(256).to_bytes(32, "big") for p in parties}
    public = {p: _public_bytes(secret[p]) for p in parties}
    pairwise: dict[str, dict[str, bytes]] = {p: {} for p in parties}
    for i, a in enumerate(parties):
        for b in parties[i + 1 :]:
            k = rng.getrandbits(256).to_bytes(32, "big")
            pairwise[a][b] = pairwise[b][a] = k
    return {p: KeyRing(p, secret[p], dict(public), pairwise[p]) for p in parties}


def _public_bytes(secret: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


# ---------------------------------------------------------------------------------------------
# Sealing and opening envelopes


def signed_bytes(msg: object, body: bytes) -> bytes:
    """What a signature over ``msg`` (encoded as ``body``) covers: the body itself, or the smaller
    message a kind names with ``signed_part`` (a PRE-PREPARE signs its header, the batch is bound
    to it by its digest: PBFT's own layout, so that a certificate can quote the header alone)."""
    part = getattr(msg, "signed_part", None)
    return body if part is None else encode(part())


def seal_signed(keys: KeyRing, msg: object) -> bytes:
    body = encode(msg)
    return encode(Envelope(keys.me, body, keys.sign(signed_bytes(msg, body))))


def seal_mac(keys: KeyRing, dest: str, msg: object) -> bytes:
    body = encode(msg)
    return encode(Envelope(keys.me, body, keys.mac(dest, body)))


def seal_authenticated(keys: KeyRing, replicas: list[str], msg: object) -> bytes:
    body = encode(msg)
    return encode(Envelope(keys.me, body, keys.authenticator(replicas, body)))


def open_envelope(payload: bytes) -> Envelope:
    """Decode the outer envelope only (raises ``DecodeError``); authenticate with the helpers below."""
    return decode(payload, Envelope)


def open_signed(keys: KeyRing, env: Envelope, expected: type | tuple[type, ...]):
    msg = decode(env.body, expected)
    if not keys.verify(env.sender, signed_bytes(msg, env.body), env.auth):
        raise AuthError(f"bad signature from {env.sender!r}")
    return msg


def open_mac(keys: KeyRing, env: Envelope, expected: type | tuple[type, ...]):
    if not keys.check_mac(env.sender, env.body, env.auth):
        raise AuthError(f"bad MAC from {env.sender!r}")
    return decode(env.body, expected)
