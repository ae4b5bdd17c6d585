"""The load pool's derived keys: a pool client authenticates as itself at every replica, and
nobody (another client, another generator, a replica) can authenticate as it; undeclared names
get no key and are no declared client."""

from __future__ import annotations

import pytest

from dtm_ray.config import ClusterConfig
from dtm_ray.crypto import KeyRing, generate_keys, open_envelope, open_mac, seal_mac
from dtm_ray.errors import AuthError, ConfigError
from dtm_ray.pbft.messages import BadAuthenticator, Reply, Request, open_request, seal_request
from dtm_ray.poolkeys import client_keyring_dict, generator_of, pool_split

CFG = ClusterConfig(f=1, load_pool_clients=5, load_pool_generators=2)
REPLICAS = CFG.replicas


@pytest.fixture(scope="module")
def rings():
    return {p: r.to_dict() for p, r in generate_keys(CFG.parties, seed=7).items()}


def replica(rings, r: str) -> KeyRing:
    return KeyRing.from_dict({**rings[r], "pool": CFG.load_pool})  # as ``Cluster.spec`` ships it


def pool_client(rings, name: str) -> KeyRing:
    gen = name.split("..")[0]
    return KeyRing.from_dict(client_keyring_dict(rings[gen], name, list(REPLICAS)))


def request(keys: KeyRing, scheme: str = "hmac", client: str | None = None) -> bytes:
    return seal_request(keys, REPLICAS, scheme, Request(client or keys.me, 1, b"ops"))


def test_the_pool_is_split_over_its_generators_and_declared_to_replicas_only_by_name():
    assert CFG.load_pool == {"gen0": 3, "gen1": 2}
    assert pool_split(0, 2) == {} and ClusterConfig(load_pool_clients=0).load_pool == {}
    assert CFG.parties[-2:] == ["gen0", "gen1"]  # two parties with keys, not five
    pbft = CFG.pbft_config()
    assert {"gen0..c2", "gen1..c1", "alice"} <= pbft.clients
    for name in ("gen0..c3", "gen1..c2", "gen0", "gen2..c0", "gen0..c01", "x..gen0..c1"):
        assert not pbft.may_submit(name), name
        assert generator_of(CFG.load_pool, name) is None, name


def test_a_pool_clients_authenticator_verifies_at_every_replica(rings):
    for name in ("gen0..c1", "gen1..c0"):
        client = pool_client(rings, name)
        for scheme in ("hmac", "ed25519"):  # ed25519: signed with its generator's key
            payload = request(client, scheme)
            for r in REPLICAS:
                req = open_request(replica(rings, r), REPLICAS, scheme, open_envelope(payload))
                assert req.client == name


def test_replies_to_a_pool_client_are_macd_with_its_derived_key(rings):
    client = pool_client(rings, "gen1..c0")
    reply = seal_mac(replica(rings, "R2"), "gen1..c0", Reply(0, "gen1..c0", 1, b"r"))
    assert open_mac(client, open_envelope(reply), Reply).request_id == 1
    other = pool_client(rings, "gen1..c1")
    with pytest.raises(AuthError):
        open_mac(other, open_envelope(reply), Reply)  # another client's key does not verify it


def test_another_clients_name_with_the_same_macs_is_refused(rings):
    env = open_envelope(request(pool_client(rings, "gen0..c1")))
    renamed = env.__class__("gen0..c2", env.body.replace(b"gen0..c1", b"gen0..c2"), env.auth)
    # and what gen0..c1 can make for gen0..c2 with its own keys: its keys are its own
    a = pool_client(rings, "gen0..c1")
    as_b = KeyRing("gen0..c2", a.signing_key, dict(a.public_keys), dict(a.mac_keys))
    for forged in (renamed, open_envelope(request(as_b))):
        for r in REPLICAS:
            with pytest.raises(BadAuthenticator):
                open_request(replica(rings, r), REPLICAS, "hmac", forged)


def test_another_generator_or_a_replica_cannot_make_a_pool_clients_macs(rings):
    victim = "gen0..c0"
    # gen1 derives "gen0..c0"'s keys from its own roots: wrong at every replica
    impostor = KeyRing.from_dict(client_keyring_dict(rings["gen1"], victim, list(REPLICAS)))
    # a faulty R0 makes the whole authenticator with what it can derive (its own MAC is right)
    r0 = replica(rings, "R0")
    by_r0 = r0.mac_keys[victim]
    forged_ring = KeyRing(victim, rings["R0"]["signing_key"], {}, {r: by_r0 for r in REPLICAS})
    for keys in (impostor, forged_ring):
        env = open_envelope(request(keys))
        for r in REPLICAS[1:]:
            with pytest.raises(BadAuthenticator):
                open_request(replica(rings, r), REPLICAS, "hmac", env)
    # nor sign for it: a pool client's signature is checked with its generator's public key
    signed_by_gen1 = open_envelope(request(pool_client(rings, "gen1..c0"), "ed25519"))
    body = signed_by_gen1.body.replace(b"gen1..c0", b"gen0..c0")
    with pytest.raises(AuthError):
        open_request(r0, REPLICAS, "ed25519", signed_by_gen1.__class__(victim, body, signed_by_gen1.auth))


def test_undeclared_names_derive_no_key_and_the_cache_holds_only_the_pool(rings):
    r0 = replica(rings, "R0")
    for name in ("gen0..c3", "gen0..c01", "gen7..c0", "alice..c0", "nobody"):
        assert name not in r0.mac_keys and r0.mac_keys.get(name) is None, name
        assert name not in r0.public_keys
        with pytest.raises(KeyError):
            r0.mac_keys[name]
    before = len(r0.mac_keys)
    assert "gen0..c2" in r0.mac_keys and len(r0.mac_keys) == before + 1  # derived once, kept
    assert r0.public_keys["gen0..c2"] == rings["gen0"]["public_keys"]["gen0"]


def test_the_generator_names_are_reserved_while_the_pool_exists():
    with pytest.raises(ConfigError, match="load generators"):
        ClusterConfig(clients=("alice", "gen0"))
    ClusterConfig(clients=("alice", "gen0"), load_pool_clients=0)  # no pool: the name is free
    with pytest.raises(ConfigError, match="load_pool_generators"):
        ClusterConfig(load_pool_generators=0)
    with pytest.raises(ConfigError, match="load_pool_clients"):
        ClusterConfig(load_pool_clients=-1)
