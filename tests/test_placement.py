"""The placement supervisor's promise (``actors.placement``), without Ray: a replica on a lost node
is re-created on a live one, the move is visible before the replacement exists, and a failed
re-creation is retried until the replica answers."""

from __future__ import annotations

import itertools

import pytest

from actors.placement import Move, Supervisor


class World:
    """The chaos actor's side: specs, killed parties, a plan file, a clock, and a ``recreate``
    that fails as often as told."""

    def __init__(self, nodes: dict[str, tuple[str, str]], failures: int = 0) -> None:
        self.specs = {party: {"party": party, "role": role, "node": node}
                      for party, (role, node) in nodes.items()}
        self.dead: set[str] = set()
        self.saved: list[list[dict]] = []  # every plan written, as status() would show it
        self.created: list[tuple[str, str]] = []  # (party, node) each recreate started
        self.failures = failures
        self.ticks = itertools.count(1000)
        self.supervisor = Supervisor(self.specs, self.dead, self.recreate, self.save,
                                     lambda: float(next(self.ticks)))

    def save(self) -> None:
        self.saved.append([m.to_plain() for m in self.supervisor.moves])

    def recreate(self, party: str) -> None:
        # the replacement starts existing here: the move must already be on disk
        assert any(m["party"] == party and m["to"] == self.specs[party]["node"] for m in self.saved[-1]), \
            f"{party} is being re-created before its move was recorded"
        self.created.append((party, self.specs[party]["node"]))
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the new actor did not answer in time")


NODES = {"R0": ("replica", "a"), "R1": ("replica", "b"), "R2": ("replica", "c"), "R3": ("replica", "a"),
         "db-0": ("participant", "b"), "alice": ("client", "b")}


def test_a_replica_on_a_lost_node_is_moved_to_the_least_loaded_live_node_and_recorded_first():
    world = World(NODES)
    assert world.supervisor.supervise_once({"a", "c"}) == ["R1"]
    assert world.specs["R1"]["node"] == "c"  # c holds one party, a two
    assert world.created == [("R1", "c")]
    [move] = world.saved[-1]
    assert (move["party"], move["from"], move["to"], move["attempts"], move["error"]) == ("R1", "b", "c", 1, None)
    assert move["answered_at"] is not None and move["at"] < move["answered_at"]
    assert world.supervisor.supervise_once({"a", "c"}) == []  # done: nothing more to do
    assert world.created == [("R1", "c")]


def test_participants_clients_killed_replicas_and_healthy_nodes_are_left_alone():
    world = World(NODES)
    world.dead.add("R0")
    assert world.supervisor.supervise_once({"b", "c"}) == ["R3"]  # R0 was killed by the operator
    assert world.supervisor.supervise_once({"a", "c"}) == ["R1"]  # db-0 and alice stay on b
    assert world.specs["db-0"]["node"] == world.specs["alice"]["node"] == "b"
    assert world.supervisor.supervise_once({"a", "b", "c"}) == []
    assert world.supervisor.supervise_once(set()) == []  # no view of the cluster: no decision


def test_two_lost_replicas_are_spread_over_the_live_nodes():
    world = World({"R0": ("replica", "a"), "R1": ("replica", "a"), "R2": ("replica", "b"),
                   "R3": ("replica", "c")})
    assert world.supervisor.supervise_once({"b", "c"}) == ["R0", "R1"]
    assert (world.specs["R0"]["node"], world.specs["R1"]["node"]) == ("b", "c")


@pytest.mark.parametrize("failures", [1, 3])
def test_a_failed_re_creation_is_visible_and_retried_until_the_replica_answers(failures):
    world = World(NODES, failures=failures)
    for attempt in range(1, failures + 1):
        assert world.supervisor.supervise_once({"a", "c"}) == []
        [move] = world.saved[-1]
        assert move["to"] == "c" and move["answered_at"] is None and move["attempts"] == attempt
        assert move["error"].startswith("TimeoutError")
    assert world.supervisor.supervise_once({"a", "c"}) == ["R1"]
    [move] = world.saved[-1]  # one move, finished on its last attempt
    assert move["answered_at"] is not None and move["attempts"] == failures + 1 and move["error"] is None
    assert world.created == [("R1", "c")] * (failures + 1)


def test_a_target_lost_before_the_replica_answered_gets_a_new_move():
    world = World(NODES, failures=1)
    assert world.supervisor.supervise_once({"a", "c"}) == []  # R1 to c, failed
    assert world.supervisor.supervise_once({"a"}) == ["R1", "R2"]  # c is gone too
    moves = world.saved[-1]
    assert [(m["party"], m["from"], m["to"]) for m in moves] == [("R1", "b", "c"), ("R1", "c", "a"),
                                                               ("R2", "c", "a")]
    assert moves[0]["answered_at"] is None and moves[1]["answered_at"] is not None


def test_unanswered_moves_read_back_from_the_plan_are_finished():
    world = World(NODES, failures=1)
    assert world.supervisor.supervise_once({"a", "c"}) == []
    persisted = world.saved[-1]
    # a restarted chaos actor: the specs as persisted (R1 already pointed at c), the moves read back
    again = World(NODES)
    again.specs["R1"]["node"] = "c"
    again.saved.append(persisted)
    again.supervisor.moves = [Move.from_plain(m) for m in persisted]
    assert again.supervisor.supervise_once({"a", "c"}) == ["R1"]
    assert again.created == [("R1", "c")]


def test_an_operator_restart_completes_a_pending_move():
    world = World(NODES, failures=1)
    world.supervisor.supervise_once({"a", "c"})
    world.supervisor.answered("R1")  # the chaos actor's restart(R1) re-created it meanwhile
    assert world.supervisor.supervise_once({"a", "c"}) == []
    assert world.created == [("R1", "c")]
