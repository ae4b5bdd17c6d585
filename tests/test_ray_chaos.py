"""Each chaos operation during load, on real Ray actors: crashes of a backup, of the primary (view
change), of a participant (in-doubt resolution), a wiped replica (state transfer), every named
Byzantine behaviour, an operator's own callable, a partition. After each: the load completed with
every outcome known, the bank invariant holds, and the cluster still commits; a Byzantine
behaviour must also leave the trace it is expected to leave (``EFFECTS``)."""

from __future__ import annotations

import os
import threading

import pytest

import dtm_ray
from dtm_ray import ClusterConfig, Op
from dtm_ray.faults import CATALOGUE
from dtm_ray.txn.byzantine import PARTICIPANT_CATALOGUE
from tests.ray_helpers import bank_accounts, bank_final, bank_load, bank_setup, check_bank_run, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

CLIENTS = ["alice", "bob"]


@pytest.fixture(scope="module")
def bank(ray_session, tmp_path_factory):
    cfg = ClusterConfig(f=1, data_dir=str(tmp_path_factory.mktemp("chaos")), key_seed=11,
                        view_change_timeout_ms=400, log_level="WARNING")
    with dtm_ray.start(cfg) as cluster:
        accounts = bank_accounts(cluster, per_participant=4)
        total = bank_setup(cluster, accounts)
        yield cluster, accounts, total


class Load:
    """Bank load from CLIENTS in a background thread while the test injects a fault."""

    def __init__(self, bank, count, seed):
        cluster, accounts, _ = bank
        self.records = None
        self.thread = threading.Thread(target=self._run, args=(cluster, accounts, count, seed))
        self.thread.start()

    def _run(self, cluster, accounts, count, seed):
        self.records = bank_load(cluster, accounts, CLIENTS, count, seed)

    def join(self):
        self.thread.join(timeout=150)
        assert self.records is not None, "the load did not finish"
        return self.records


def finish(bank, load, seed):
    """The load completed with no unknown outcome, the invariant holds, and a fresh transfer commits."""
    records = settled(bank, load, seed)
    assert_commits(bank, seed)
    return records


def settled(bank, load, seed):
    """The load completed, every outcome known, at least one transfer committed (progress), and
    the bank invariant holds."""
    cluster, accounts, total = bank
    records = load.join()
    assert all(r["status"] != "info" for r in records), (seed, [r for r in records if r["status"] == "info"])
    assert any(r["status"] == "ok" for r in records), (seed, records)
    check_bank_run(cluster, accounts, total, records)
    return records


def assert_commits(bank, seed):
    """A transfer out of the richest account (no guard can refuse it) commits."""
    cluster, accounts, total = bank
    balances = bank_final(cluster, accounts)
    rich = max(accounts, key=lambda a: balances[a])
    other = next(a for a in accounts if a != rich)
    r = cluster.client("carol").submit([Op.add(*rich, -1, min=0), Op.add(*other, 1)])
    assert r.committed, f"seed={seed}: {r}"
    check_bank_run(cluster, accounts, total, [])


def executed(cluster, i):
    return cluster.status()["replicas"][i].get("executed_seq", -1)


def test_crash_and_restart_a_backup(bank):
    cluster = bank[0]
    load = Load(bank, 6, seed=1)
    cluster.chaos.crash(2)
    finish(bank, load, 1)
    wait_until(lambda: executed(cluster, 2) == executed(cluster, 0), timeout_s=60, what="R2 caught up")


def test_a_backup_that_missed_traffic_catches_up_while_the_cluster_is_idle(bank):
    """No traffic after its restart: it learns that it is behind from its peers' STATUS messages
    (sent while idle) and fetches what it missed."""
    cluster = bank[0]
    before = executed(cluster, 3)
    cluster.chaos.kill(3)
    finish(bank, Load(bank, 6, seed=5), 5)  # commits without R3
    target = executed(cluster, 0)
    assert target > before
    cluster.chaos.restart(3)
    try:
        wait_until(lambda: executed(cluster, 3) == executed(cluster, 0) >= target, timeout_s=60,
                   what="R3 caught up with an idle cluster")
    except AssertionError as exc:
        st = cluster.status()["replicas"]
        picture = [{k: r.get(k) for k in ("id", "alive", "view", "view_changing", "executed_seq", "stable_checkpoint",
                                          "state_target", "held", "log_entries", "next_slot")} for r in st]
        hosts = [{k: v for k, v in r.get("host", {}).items() if k.startswith(("calls", "dropped", "handle", "rate", "core", "loop", "buffered", "inflight"))}
                 for r in st]
        raise AssertionError(f"{exc}: {picture} {hosts}") from None


def test_crash_the_primary_forces_a_view_change(bank):
    cluster = bank[0]
    view = max(r["view"] for r in cluster.status()["replicas"])
    primary = view % 4
    load = Load(bank, 6, seed=2)
    cluster.chaos.kill(primary)
    wait_until(lambda: min(r.get("view", -1) for j, r in enumerate(cluster.status()["replicas"])
                           if j != primary) > view, what="a view change")
    cluster.chaos.restart(primary)
    finish(bank, load, 2)


def test_crash_a_participant_resolves_in_doubt(bank):
    cluster = bank[0]
    load = Load(bank, 6, seed=3)
    cluster.chaos.crash("db-1")
    finish(bank, load, 3)
    wait_until(lambda: cluster.status()["participants"]["db-1"].get("in_doubt") == 0, what="no in-doubt")


def test_wiped_replica_recovers_by_state_transfer(bank):
    cluster = bank[0]
    load = Load(bank, 8, seed=4)
    cluster.chaos.wipe(3)
    finish(bank, load, 4)
    more = Load(bank, 6, seed=41)  # keep the log moving so a checkpoint past the wipe is stable
    more.join()
    wait_until(lambda: executed(cluster, 3) > 0 and executed(cluster, 3) >= executed(cluster, 1) - 16,
               timeout_s=60, what="R3 recovered by state transfer")


# What a behaviour on the primary must leave behind, besides progress and the invariants. An
# empty entry: nothing a correct party can see. `delay` and `selective` (a half of its peers is
# still a quorum with the primary) slow the primary without stopping it; `forge-decision` and
# `wrong-result` lie with its own valid MAC to participants and clients, who act only on f+1
# matching messages, so the lie changes nothing (the atomicity and bank checks show that).
def rejected(before, after, accused):
    """Correct replicas rejected messages claiming to be from it (bad MAC, garbage, wrong view)."""
    return _grew(before, after, accused, "rejected")


def evidence(before, after, accused):
    """Provable misbehaviour recorded against it, with its proof, at a correct replica."""
    return _grew(before, after, accused, "evidence")


def replaced(before, after, accused):
    """A stalling primary is replaced: every correct replica moved to a later view led by another."""
    view = max(r["view"] for r in before["replicas"])
    correct = [r for r in after["replicas"] if r["id"] != accused]
    return all(r.get("view", -1) > view and r.get("primary") != accused for r in correct)


def _grew(before, after, accused, field):
    was = {r["id"]: r.get(field, {}).get(accused, 0) for r in before["replicas"]}
    return any(r.get(field, {}).get(accused, 0) > was[r["id"]] for r in after["replicas"] if r["id"] != accused)


# A primary whose own channel (its calls prove who made them: ``actors.channel``) carries garbage
# or messages under a signature not its own is replaced at once (``corrupt-auth``, ``flood``).
# An equivocating primary is always caught (a backup shown the other batch gets the pre-prepare
# the others accepted, relayed as proof), but not always replaced: when a single backup was shown
# the alternative, the other 2f+1 commit, and a checkpoint moves the slot out of their window
# before the relayed proof reaches them, so only that backup asks for a view change (PBFT moves
# on f+1). Safety holds either way; the backup rejoins at the next view change.
EFFECTS = {
    "corrupt-auth": (rejected, replaced), "delay": (), "equivocate": (evidence,), "flood": (rejected, replaced),
    "forge-decision": (), "forge-votes": (evidence, replaced), "future-view": (rejected,),
    "mute": (replaced,), "replay": (rejected,), "selective": (), "stale-view": (rejected, replaced),
    "wrong-digest": (rejected, replaced), "wrong-result": (),
}
REPLICA_BEHAVIOURS = sorted(set(CATALOGUE) - set(PARTICIPANT_CATALOGUE))


def test_every_replica_behaviour_has_its_expected_effects():
    assert sorted(EFFECTS) == REPLICA_BEHAVIOURS


@pytest.mark.parametrize("behaviour", REPLICA_BEHAVIOURS)
def test_each_named_byzantine_behaviour_on_one_replica(bank, behaviour):
    cluster = bank[0]
    seed = sorted(CATALOGUE).index(behaviour) + 100
    before = cluster.status()
    victim = max(r["view"] for r in before["replicas"]) % 4  # the primary: the worst case
    accused = f"R{victim}"
    cluster.chaos.byzantine(victim, behaviour, seed)
    try:
        settled(bank, Load(bank, 4, seed=seed), seed)
        for effect in EFFECTS[behaviour]:
            wait_until(lambda: effect(before, cluster.status(), accused), timeout_s=30,
                       what=f"{behaviour} on {accused}: {effect.__name__} (seed={seed})")
    finally:
        cluster.chaos.heal(victim)
    assert_commits(bank, seed)


def test_participant_equivocating_votes_cannot_split_a_transaction(bank):
    """It can abort its own transactions, never split one; its conflicting signed votes are
    evidence against it, and the others' transactions keep committing."""
    cluster = bank[0]
    before = cluster.status()
    cluster.chaos.byzantine("db-0", "equivocate-vote", 7)
    try:
        settled(bank, Load(bank, 4, seed=7), 7)
        wait_until(lambda: evidence(before, cluster.status(), "db-0"), timeout_s=30,
                   what="evidence against the equivocating db-0")
    finally:
        cluster.chaos.heal("db-0")
    assert_commits(bank, 7)


def test_operator_callable_attack_shipped_with_cloudpickle(bank, tmp_path):
    cluster = bank[0]
    trace = str(tmp_path / "dropped-by-R1")

    def drop_all_to_r2(dest, payload):  # written in a shell; runs inside R1's actor
        if dest == "R2":
            with open(trace, "a") as out:
                out.write(f"{os.getpid()}\n")
            return []
        return [(dest, payload)]

    cluster.chaos.byzantine(1, drop_all_to_r2)
    try:
        assert cluster.status()["replicas"][1]["byzantine"] == "custom"
        finish(bank, Load(bank, 4, seed=8), 8)
        r1 = cluster.status()["replicas"][1]["pid"]
    finally:
        cluster.chaos.heal(1)
    droppers = open(trace).read().split() if os.path.exists(trace) else []
    assert droppers and set(droppers) == {str(r1)}, (droppers, r1)  # it ran, in R1's process
    assert str(os.getpid()) not in droppers


def test_partition_of_one_replica_then_heal(bank):
    cluster = bank[0]
    view = max(r["view"] for r in cluster.status()["replicas"])
    isolated = (view + 1) % 4  # a backup: the other three still form a quorum
    cluster.chaos.partition([j for j in range(4) if j != isolated], [isolated])
    finish(bank, Load(bank, 4, seed=9), 9)
    cluster.chaos.heal_network()
    finish(bank, Load(bank, 4, seed=10), 10)
    wait_until(lambda: executed(cluster, isolated) >= executed(cluster, (isolated + 1) % 4) - 16,
               timeout_s=60, what="the isolated replica caught up")
