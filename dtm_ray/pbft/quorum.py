"""Quorum math, pure and on its own (as etcd-raft's ``quorum/``).

With ``n >= 3f+1`` replicas, any two sets of ``2f+1`` intersect in at least ``f+1`` replicas,
hence in at least one correct replica: that is why prepared certificates, commits, stable
checkpoints and new views need ``strong(f)`` matching votes. ``weak(f) = f+1`` votes contain at
least one correct replica: enough for a client to trust a reply or for a replica to join a view
change that others ask for.

The replica looks these functions up on this module at call time, so a test can replace
``strong`` (e.g. by ``f+1``) to show that the simulator's checkers catch a broken quorum.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


def strong(f: int) -> int:
    """2f+1."""
    return 2 * f + 1


def weak(f: int) -> int:
    """f+1."""
    return f + 1


def matching(votes: Iterable[tuple[str, Hashable]], size: int) -> Hashable | None:
    """The value that at least ``size`` distinct voters voted for, or None.

    ``votes`` is ``(voter, value)`` pairs; a voter counts once per value however often it
    repeats itself. If several values reach ``size`` (impossible with correct quorums unless
    more than f voters lie) the smallest one is returned, so the answer is deterministic."""
    voters: dict[Hashable, set[str]] = {}
    for voter, value in votes:
        voters.setdefault(value, set()).add(voter)
    winners = [value for value, who in voters.items() if len(who) >= size]
    return min(winners) if winners else None


def count_distinct(voters: Iterable[str]) -> int:
    return len(set(voters))
