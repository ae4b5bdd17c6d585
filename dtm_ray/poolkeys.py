"""Keys for a pool of thousands of logical load clients, without all-pairs keys for each.

A load generator ``G`` (``gen0``, ``gen1``, ...) is an ordinary party of ``generate_keys``: it has
an Ed25519 key pair and a pairwise MAC key ``K(G, R)`` with every replica ``R``. The logical
clients it hosts are named ``G..c<i>`` (``0 <= i < count``: ``ClusterConfig.load_pool_clients``
split over the generators) and get their keys by derivation instead of generation:

- **MAC key of client c with replica R**: ``HMAC-SHA256(K(G, R), "dtm-ray pool client" | c)``.
  The generator derives it for each of its clients and each replica when it starts; replica ``R``
  derives it on first use from the one root it shares with ``G``. Nobody else's ring grows: the
  key file holds two more parties, not thousands.
- **Signatures** (a client whose MACs were refused by ``dtm_ray.pbft.authdefence`` must sign, and
  ``auth_scheme="ed25519"`` signs every request): a pool client signs with its generator's key,
  and a replica verifies ``G..c<i>``'s signature with ``G``'s public key. No key pair per client.

Why this is sound (the same guarantees as all-pairs keys, with the generator as the trust unit):

1. *A replica cannot forge a client's MAC for another replica*: replica ``R`` knows ``K(G, R)``
   only, so it can derive the keys of pairs ``(c, R)`` and no ``(c, R')``. Hence one faulty
   replica still cannot make a request look authentic elsewhere, nor forge another replica's
   reply to a client (the client's f+1 matching replies still mean one correct replica).
2. *A client cannot forge another generator's clients*: their keys are HMACs (a PRF) under roots
   shared only by that generator and the replicas. Clients of *one* generator live in one process
   and share its secrets: they can act for each other, exactly as the generator itself could. The
   generator is the party; its logical clients are its request streams (each with its own request
   ids, replay table entry and pending-request quota at the replicas).
3. *Undeclared names stay refused*: only the canonical names ``G..c<i>`` of a declared generator
   with ``i < count`` derive a key or a public key, and only those names are declared clients
   (``ClusterConfig.pbft_config``), so replicas keep refusing everyone else and a flood of made-up
   names cannot grow a replica's key cache (it holds at most the pool).
4. *Signatures stay bound to the client*: a request's body names its client and the replica checks
   it against the envelope's sender, so ``G``'s signature over ``c1``'s request is no signature
   over ``c2``'s.

The derived-key mappings are dicts (``KeyRing.mac_keys`` and ``public_keys`` keep their type for
every reader) that answer ``in``, ``[]`` and ``get`` for pool names too, deriving on first use.
"""

from __future__ import annotations

import hmac
import re
from typing import Mapping

MUX = ".."  # actors.names.MUX: a client named "G..c<i>" lives in the actor of party G
DERIVE_LABEL = b"dtm-ray pool client\x00"
_POOL_CLIENT = re.compile(r"^(?P<gen>[A-Za-z0-9_.:-]+?)\.\.c(?P<i>0|[1-9][0-9]*)$")


def generator_names(generators: int) -> list[str]:
    return [f"gen{g}" for g in range(generators)]


def pool_split(clients: int, generators: int) -> dict[str, int]:
    """How many logical clients each generator hosts: ``clients`` spread as evenly as possible."""
    if generators <= 0 or clients <= 0:
        return {}
    base, extra = divmod(clients, generators)
    return {name: base + (g < extra) for g, name in enumerate(generator_names(generators))}


def pool_client_names(generator: str, count: int) -> list[str]:
    return [f"{generator}{MUX}c{i}" for i in range(count)]


def generator_of(pool: Mapping[str, int], name: str) -> str | None:
    """The generator hosting pool client ``name``, or None if ``name`` is no client of the pool
    (not canonical, an unknown generator, or an index beyond its count)."""
    if MUX not in name:
        return None
    m = _POOL_CLIENT.match(name)
    if m is None:
        return None
    gen = m.group("gen")
    count = pool.get(gen)
    return gen if count is not None and int(m.group("i")) < count else None


def derive_mac_key(root: bytes, client: str) -> bytes:
    """The MAC key of pool client ``client`` with the replica whose key with its generator is ``root``."""
    return hmac.digest(root, DERIVE_LABEL + client.encode(), "sha256")


def client_keyring_dict(generator_ring: Mapping, client: str, replicas: list[str]) -> dict:
    """What logical client ``client`` of this generator holds: its generator's signing key, the
    replicas' public keys (and its own: its generator's), and one derived MAC key per replica."""
    me = generator_ring["me"]
    public = generator_ring["public_keys"]
    return {"me": client, "signing_key": generator_ring["signing_key"],
            "public_keys": {**{r: public[r] for r in replicas}, client: public[me]},
            "mac_keys": {r: derive_mac_key(generator_ring["mac_keys"][r], client) for r in replicas}}


class PoolMacKeys(dict):
    """``peer -> pairwise key``: the stored keys, and a pool client's derived on first use."""

    def __init__(self, stored: Mapping[str, bytes], pool: Mapping[str, int]) -> None:
        super().__init__(stored)
        self._pool = dict(pool)

    def _derive(self, peer: object) -> bytes | None:
        if not isinstance(peer, str):
            return None
        gen = generator_of(self._pool, peer)
        root = dict.get(self, gen) if gen is not None else None
        if root is None:
            return None
        key = self[peer] = derive_mac_key(root, peer)  # bounded: at most the pool's size
        return key

    def __missing__(self, peer: str) -> bytes:
        key = self._derive(peer)
        if key is None:
            raise KeyError(peer)
        return key

    def __contains__(self, peer: object) -> bool:
        return dict.__contains__(self, peer) or self._derive(peer) is not None

    def get(self, peer: str, default=None):
        if dict.__contains__(self, peer):
            return dict.__getitem__(self, peer)
        key = self._derive(peer)
        return default if key is None else key


class PoolPublicKeys(dict):
    """``party -> Ed25519 public key``: a pool client's is its generator's."""

    def __init__(self, stored: Mapping[str, bytes], pool: Mapping[str, int]) -> None:
        super().__init__(stored)
        self._pool = dict(pool)

    def _generator_key(self, party: object) -> bytes | None:
        gen = generator_of(self._pool, party) if isinstance(party, str) else None
        return dict.get(self, gen) if gen is not None else None

    def __missing__(self, party: str) -> bytes:
        key = self._generator_key(party)
        if key is None:
            raise KeyError(party)
        return key

    def __contains__(self, party: object) -> bool:
        return dict.__contains__(self, party) or self._generator_key(party) is not None

    def get(self, party: str, default=None):
        if dict.__contains__(self, party):
            return dict.__getitem__(self, party)
        key = self._generator_key(party)
        return default if key is None else key
