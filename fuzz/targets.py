"""The fuzz targets, plain functions of one ``bytes`` input, shared by atheris and hypothesis.

``decoder(data)``: the strict decoder must return a registered message or raise ``DecodeError``,
nothing else. ``handler(role)(data)``: the input either is raw bytes or selects a genuine message
captured from a small simulated cluster plus a hostile variant of it
(``dtm_ray.sim.hostile.VARIANTS``); the party it was addressed to must not raise, must persist
nothing, must report a ``Rejected`` output or count it, and must keep its status.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable

from actors.channel import UNAUTHENTICATED
from dtm_ray.errors import DecodeError, RemoteProtocolError
from dtm_ray.crypto import Envelope
from dtm_ray.sim.hostile import VARIANTS, Recorder, hostile_variant
from dtm_ray.sim.txn_world import BankWorkload, TxnWorld, build_txn_world
from dtm_ray.wire import decode

ROLES = ("replica", "participant", "client")


def decoder(data: bytes) -> None:
    for expected in (None, Envelope):
        try:
            decode(data, expected) if expected else decode(data)
        except DecodeError:
            pass


class Cluster:
    """A small cluster after a few transactions, paused, and the traffic it carried."""

    def __init__(self, seed: int = 7) -> None:
        self.world: TxnWorld = build_txn_world(seed, clients=2, verify_cache=False)
        seen: list[tuple[str, str, bytes]] = []
        for party in self.world.sim.parties:
            self.world.sim.set_behaviour(party, Recorder(party, seen), "recorder")
        self.world.start(BankWorkload(list(self.world.participants), random.Random(seed)), 2)
        self.world.sim.run_until(self.world.done, 5_000)
        self.world.sim.run_for(300)
        w = self.world
        self.role = {**{r: "replica" for r in w.replicas}, **{p: "participant" for p in w.participants},
                     **{c: "client" for c in w.clients}}
        self.traffic = {role: [t for t in seen if self.role[t[1]] == role] for role in ROLES}

    def fingerprint(self, party: str) -> tuple:
        node = self.world.sim.node(party)
        if self.role[party] == "client":
            status = {"outstanding": node.core.outstanding, "current": node.core._current}
        else:
            status = {k: v for k, v in node.status().items() if k not in ("rejected", "ignored")}
            if self.role[party] == "replica":
                status["app"] = {k: v for k, v in node.app.status().items() if k != "rejected"}
        return repr(status), tuple(self.world.sim.parties[party].storage.items())

    def counted(self, party: str) -> int:
        node = self.world.sim.node(party)
        if self.role[party] == "client":
            return node.core.rejected
        if self.role[party] == "replica":
            return sum(node.status()["rejected"].values()) + node.ignored  # includes the App's rejections
        return node.status()["rejected"]

    def hostile(self, role: str, data: bytes) -> tuple[str, str, bytes]:
        """(claimed sender, destination, hostile bytes) chosen by ``data``."""
        if len(data) < 4 or data[0] % 4 == 0:  # raw bytes to a party of that role
            dest = sorted(p for p, r in self.role.items() if r == role)[data[1] % 2 if len(data) > 1 else 0]
            return "fuzzer", dest, data[1:]
        src, dest, payload = self.traffic[role][int.from_bytes(data[1:3], "big") % len(self.traffic[role])]
        rng = random.Random(data[4:])
        author = decode(payload, Envelope).sender  # a replica forwards a client's own request
        others = [p for p in self.world.keys if p not in (src, dest, author)]
        variant = VARIANTS[data[3] % len(VARIANTS)]
        return src, dest, hostile_variant(variant, rng, payload, target_kind=role,
                                          impostor=self.world.keys[rng.choice(others)],
                                          client=self.world.keys[next(c for c in self.world.clients if c not in (src, author))],
                                          oversized=False)


@lru_cache(maxsize=1)
def cluster() -> Cluster:
    return Cluster()


def deliverer(claimed: str) -> str:
    """Who a core is told handed it hostile bytes: not the party the bytes claim, since a host
    names a keyed deliverer only when its call proves it (``actors.channel``). Bytes that truly
    come on a party's own channel are that party's doing: a replica replaces a primary for them
    (``tests/test_refused_primary.py``), so they are not "changes nothing" input."""
    return UNAUTHENTICATED if claimed != "fuzzer" else claimed


def handler(role: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        c = cluster()
        src, dest, payload = c.hostile(role, data)
        node = c.world.sim.node(dest)
        before, count = c.fingerprint(dest), c.counted(dest)
        try:
            node.receive(deliverer(src), payload)
        except RemoteProtocolError as exc:  # a typed error must still never escape receive
            raise AssertionError(f"{role} {dest} let {type(exc).__name__} escape: {exc}") from exc
        ready = node.take_ready()
        assert not ready.writes, f"{dest} persisted hostile input from {src}"
        assert c.fingerprint(dest) == before, f"{dest} changed its state on hostile input from {src}"
        assert c.counted(dest) > count, f"{dest} neither rejected nor counted hostile input from {src}"
    return target


def run_atheris(target: Callable[[bytes], None]) -> None:
    """Entry point of ``python -m fuzz.<name> [libFuzzer flags]``."""
    import sys

    import atheris

    if target is not decoder:
        cluster()  # built once, before fuzzing
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
