"""The PBFT messages (wire kinds 10..39) and how each one is authenticated.

Every message travels inside a ``crypto.Envelope``. Which authentication, and why:

- replica-to-replica protocol messages (PRE-PREPARE, PREPARE, COMMIT, CHECKPOINT, VIEW-CHANGE,
  NEW-VIEW) are **signed**: they end up inside certificates that a third replica must verify;
- client REQUESTs carry an **authenticator** (one pairwise MAC per replica, ``auth_scheme="hmac"``,
  the default) or are **signed** (``auth_scheme="ed25519"``, and under ``hmac`` by a client whose
  MACs were refused: ``authdefence``); a backup forwards the client's envelope to the primary
  unchanged, so the primary checks the client's own authentication;
- AUTH-COMPLAINTs are **signed** (f+1 of them are the proof against a client), AUTH-REFUSALs
  are **MAC'd** to the client;
- REPLYs and state transfer (STATE-REQUEST / STATE-REPLY) are **MAC'd** point to point: nobody
  else needs to verify them (a snapshot is checked against a certified digest, not its sender).

Certificates are tuples of the sealed envelopes themselves (``bytes``), so anybody holding them can
re-verify every signature. Records that a replica persists (``dtm_ray.pbft.persist``) are also
messages of this module, so storage goes through the same strict decoder as the network.
"""

from __future__ import annotations

from dtm_ray.crypto import MAC_LEN, SIG_LEN, Envelope, KeyRing, digest, open_signed, seal_authenticated, seal_signed
from dtm_ray.errors import AuthError
from dtm_ray.wire import Message, decode, encode

# ---------------------------------------------------------------------------------------------
# Client <-> replicas


class Request(Message, tag=10):
    client: str
    request_id: int  # strictly increasing per client
    operation: bytes  # opaque to PBFT; the App decodes it


class Reply(Message, tag=11):
    view: int  # the view the replica was in when it executed (clients track the primary with it)
    client: str
    request_id: int
    result: bytes


# ---------------------------------------------------------------------------------------------
# Normal case


class PrePrepare(Message, tag=12):
    """The primary's proposal of a batch for ``seq``. Its signature covers the header alone
    (``signed_part``): the batch is bound to it by ``digest``, as in PBFT, where the requests
    travel beside the signed ``<PRE-PREPARE, v, n, d>``. A certificate then quotes the header
    (``quote_preprepare``, ~150 bytes) instead of a batch of up to ``max_batch_bytes``, so a
    VIEW-CHANGE or NEW-VIEW stays small whatever the batches hold; the batches themselves are
    fetched by seq and digest when a replica lacks one. A batch that does not match its digest is
    not the primary's statement (anybody could have attached it), so it is refused, not evidence."""

    view: int
    seq: int
    digest: bytes  # batch_digest(requests, proposals)
    requests: tuple[bytes, ...]  # sealed client Request envelopes, verifiable by every backup
    proposals: tuple[bytes, ...]  # App proposals (e.g. DECIDE), checked with validate_proposal

    def signed_part(self) -> "PrePrepareHeader":
        return PrePrepareHeader(self.view, self.seq, self.digest)


class PrePrepareHeader(Message, tag=28):
    """What a primary signs for a PRE-PREPARE; quoted alone in certificates and NEW-VIEWs."""

    view: int
    seq: int
    digest: bytes


class Prepare(Message, tag=13):
    view: int
    seq: int
    digest: bytes


class Commit(Message, tag=14):
    view: int
    seq: int
    digest: bytes


class Checkpoint(Message, tag=15):
    seq: int
    state_digest: bytes  # state_digest(app snapshot, client table) after executing seq


# ---------------------------------------------------------------------------------------------
# View change


class PreparedProof(Message, tag=16):
    """A prepared certificate: the primary's signed PRE-PREPARE header (``quote_preprepare``) and
    2f signed matching PREPAREs from distinct backups. Its size does not depend on the batch."""

    preprepare: bytes
    prepares: tuple[bytes, ...]


class ViewChange(Message, tag=17):
    new_view: int
    stable_seq: int  # the sender's stable checkpoint
    checkpoint_proof: tuple[bytes, ...]  # 2f+1 signed CHECKPOINTs for stable_seq (empty at 0)
    prepared: tuple[PreparedProof, ...]  # one per seq above stable_seq prepared in any view


class NewView(Message, tag=18):
    view: int
    view_changes: tuple[bytes, ...]  # 2f+1 signed VIEW-CHANGEs for ``view``
    preprepares: tuple[bytes, ...]  # signed PRE-PREPARE headers of ``view`` for every seq re-proposed


# ---------------------------------------------------------------------------------------------
# State transfer


class StateRequest(Message, tag=19):
    seq: int  # the lowest stable checkpoint the requester would accept


class StateReply(Message, tag=20):
    seq: int
    state: bytes  # encode(ReplicaState) at seq
    proof: tuple[bytes, ...]  # 2f+1 signed CHECKPOINTs of seq whose digest is digest(state)


# ---------------------------------------------------------------------------------------------
# The checkpointed state and the batch a digest covers


class ClientRecord(Message, tag=21):
    client: str
    request_id: int  # last executed request of this client
    result: bytes | None  # its reply, once the App produced it (replies can be deferred)


class ReplicaState(Message, tag=22):
    """What a checkpoint certifies: the App snapshot and the client table (replay protection)."""

    seq: int
    app: bytes
    clients: tuple[ClientRecord, ...]  # sorted by client


class Batch(Message, tag=23):
    requests: tuple[bytes, ...]
    proposals: tuple[bytes, ...]


def batch_digest(requests: tuple[bytes, ...], proposals: tuple[bytes, ...]) -> bytes:
    """The digest a PRE-PREPARE, PREPARE and COMMIT agree on."""
    return digest(encode(Batch(tuple(requests), tuple(proposals))))


NULL_DIGEST = batch_digest((), ())  # the null batch that fills gaps in a NEW-VIEW


def state_digest(state_bytes: bytes) -> bytes:
    return digest(state_bytes)


# ---------------------------------------------------------------------------------------------
# Sealing and opening


REPLICA_MESSAGES = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView)


def seal(keys: KeyRing, msg: object) -> bytes:
    """A signed envelope (replica protocol messages; a PRE-PREPARE signs its header)."""
    return seal_signed(keys, msg)


def quote_preprepare(payload: bytes, pp: PrePrepare | None = None) -> bytes:
    """The signed header of a sealed PRE-PREPARE, as its own envelope: the same signature, so it
    verifies as a ``PrePrepareHeader`` signed by the primary. ``pp``: the already decoded body,
    which spares decoding (and re-encoding, the canonical check) a batch of up to a megabyte.
    Raises ``DecodeError``."""
    env = decode(payload, Envelope)
    header = (pp if pp is not None else decode(env.body, PrePrepare)).signed_part()
    return encode(Envelope(env.sender, encode(header), env.auth))


def assemble_preprepare(quote: bytes, requests: tuple[bytes, ...], proposals: tuple[bytes, ...]
                        ) -> tuple[PrePrepare, bytes]:
    """The full PRE-PREPARE of a quoted header and a batch with its digest: the header's
    signature covers it, so it verifies at anyone exactly as the primary's own would."""
    env = decode(quote, Envelope)
    h = decode(env.body, PrePrepareHeader)
    if batch_digest(requests, proposals) != h.digest:
        raise AuthError(f"batch does not match the digest of seq {h.seq}")
    pp = PrePrepare(h.view, h.seq, h.digest, tuple(requests), tuple(proposals))
    return pp, encode(Envelope(env.sender, encode(pp), env.auth))


def header_view(quote: bytes) -> PrePrepareHeader:
    """The header of an already verified quote."""
    return decode(decode(quote, Envelope).body, PrePrepareHeader)


def open_certified(keys: KeyRing, payload: bytes, expected: type, signer: str | None = None):
    """Open a signed envelope found inside a certificate; returns ``(sender, message)``.

    Raises ``RemoteProtocolError`` (``DecodeError``/``AuthError``) on anything wrong, including a
    signer other than ``signer`` when one is required."""
    env = decode(payload, Envelope)
    if signer is not None and env.sender != signer:
        raise AuthError(f"expected a message signed by {signer!r}, got {env.sender!r}")
    return env.sender, open_signed(keys, env, expected)


def seal_request(keys: KeyRing, replicas: tuple[str, ...], scheme: str, req: Request) -> bytes:
    """A client request, signed or with a per-replica authenticator."""
    if scheme == "hmac":
        return seal_authenticated(keys, list(replicas), req)
    return seal_signed(keys, req)


class BadAuthenticator(AuthError):
    """This replica's MAC in a request's authenticator is wrong. Not provable to anybody else: the
    client may have made it bad for this replica only (the Aardvark attack), or a faulty primary
    may have forged the request with the one MAC it can make (``dtm_ray.pbft.authdefence``)."""


def is_signed_request(replicas: tuple[str, ...], scheme: str, env: Envelope) -> bool:
    """Under ``hmac`` a client still signs once its MACs were refused: a signature is told from an
    authenticator by its length (n MACs; n = 2 would be ambiguous and is refused by the config)."""
    return scheme != "hmac" or len(env.auth) == SIG_LEN


def open_request(keys: KeyRing, replicas: tuple[str, ...], scheme: str, env: Envelope) -> Request:
    """Authenticate and decode a client request envelope for replica ``keys.me``. Raises
    ``BadAuthenticator`` when only this replica's MAC is wrong, ``AuthError`` or ``DecodeError``
    when the request is invalid on its face (a bad signature, a malformed authenticator)."""
    if is_signed_request(replicas, scheme, env):
        req = open_signed(keys, env, Request)
    else:
        if len(env.auth) != MAC_LEN * len(replicas):
            raise AuthError(f"authenticator of {len(env.auth)} bytes from {env.sender!r}")
        if not keys.check_authenticator(env.sender, env.body, env.auth, replicas.index(keys.me)):
            raise BadAuthenticator(f"bad authenticator from {env.sender!r}")
        req = decode(env.body, Request)
    if req.client != env.sender:
        raise AuthError(f"request of {req.client!r} sealed by {env.sender!r}")
    return req


class StableRecord(Message, tag=24):
    """A replica's stable checkpoint as persisted: the state and its proof."""

    seq: int
    state: bytes  # encode(ReplicaState)
    proof: tuple[bytes, ...]


class EvidenceRecord(Message, tag=26):
    """A proof of misbehaviour as persisted (``persist.EVIDENCE_PREFIX``): who, what, the proof."""

    accused: str
    kind: str
    proof: tuple[bytes, ...]


class SlotRequest(Message, tag=25):
    """MAC'd: "I am stuck at ``seq`` (no PRE-PREPARE or no quorum): send me what you have"."""

    seq: int


class Status(Message, tag=27):
    """MAC'd, sent by an idle replica now and then (PBFT's status messages, section 5.2): where it
    stands, so that a replica that fell behind while the cluster went quiet learns it (from f+1
    of them) and peers can send it what it lacks."""

    view: int
    executed: int  # the last executed seq
    stable_seq: int  # the stable checkpoint


# ---------------------------------------------------------------------------------------------
# The defence against inconsistent authenticators (``dtm_ray.pbft.authdefence``)


class AuthComplaint(Message, tag=38):
    """Signed by a backup: "the request ``request`` (a client's sealed envelope, quoted whole) in
    the PRE-PREPARE of (``view``, ``seq``) does not carry a valid MAC for me". f+1 of them from
    distinct replicas prove that the client or the primary of ``view`` is faulty."""

    view: int
    seq: int
    request: bytes


class AuthRefusal(Message, tag=39):
    """MAC'd to a client: "authenticator refused: sign requests". Every correct replica sends it
    alike once f+1 complaints refused the client's MACs; the client accepts it from f+1."""

    view: int
    client: str
    request_id: int


class Busy(Message, tag=29):
    """MAC'd to a client: "too many requests wait here: retry later" (``intake``'s admission
    bound). Advisory, never ordered: the client backs off once f+1 replicas (or the primary) said
    it, and a faulty replica alone can only make its own copy of the request wait."""

    view: int
    client: str
    request_id: int
