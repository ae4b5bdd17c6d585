"""Which actor call came from whom: a per-channel token, so inbound budgets cannot be spent by a liar.

A Ray actor call says who sent it only because the caller says so (``deliver(sender, ...)``): a
faulty party can call ``deliver("R2", ...)`` at R1. Budgets keyed by that claim would let it spend
R2's budget at R1 and cut the link between two correct replicas. So every call also carries a
token only its true sender can make: ``HMAC(k_SD, "dtm-ray channel" | S | D)`` with the pairwise
MAC key S and D already share (``KeyRing.mac_keys``). It is fixed per ordered pair (no per-call
cost: computed once), and a third party never sees it: Ray hands a call only to its destination,
and a faulty destination can only misuse the token against itself.

Calls without a valid token (a party with no key for this one, e.g. a load generator's actor, or
a liar) are still delivered -- the core authenticates every message itself -- but they are charged
to one shared ``UNAUTHENTICATED`` budget, never to the party they claim to be.
"""

from __future__ import annotations

import hmac

UNAUTHENTICATED = "<unauthenticated>"
TOKEN_LEN = 16


def token(key: bytes, sender: str, dest: str) -> bytes:
    body = b"dtm-ray channel\x00" + sender.encode() + b"\x00" + dest.encode()
    return hmac.digest(key, body, "sha256")[:TOKEN_LEN]


class Channels:
    """One party's tokens: the one it attaches to each call, and the one it expects from each peer."""

    def __init__(self, me: str, mac_keys: dict[str, bytes] | None) -> None:
        keys = {p: k for p, k in (mac_keys or {}).items() if isinstance(k, bytes) and k}
        self._outgoing = {peer: token(key, me, peer) for peer, key in keys.items()}
        self._incoming = {peer: token(key, peer, me) for peer, key in keys.items()}

    def outgoing(self, dest: str) -> bytes:
        return self._outgoing.get(dest, b"")

    def core_sender(self, sender: str, claimed_token: object) -> str:
        """The deliverer the core is told of: ``sender`` when the call proves it, or when
        ``sender`` is a party this one shares no key with (a load generator's actor: the core
        authenticates its clients' messages themselves); else ``UNAUTHENTICATED``. A core may
        hold what arrives on a proven channel against its deliverer (a replica replaces a primary
        whose own channel carries garbage), so no liar may borrow a correct party's name."""
        if sender not in self._incoming:
            return sender
        return self.budget_key(sender, claimed_token)

    def budget_key(self, sender: str, claimed_token: object) -> str:
        """``sender`` if the call proves it came from ``sender``, else the shared unauthenticated key."""
        expected = self._incoming.get(sender)
        if expected is not None and isinstance(claimed_token, bytes) and hmac.compare_digest(expected, claimed_token):
            return sender
        return UNAUTHENTICATED
