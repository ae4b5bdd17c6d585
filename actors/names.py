"""How parties are found in Ray: one named actor per party, in the cluster's namespace.

A load generator hosts many logical clients in one actor: a client named ``"lg0..c17"`` lives in
the actor of party ``"lg0"`` (``MUX``, a double dot, is legal in a party name and used by nothing
else). Messages for it are routed there with their destination (``deliver_routed``).
"""

from __future__ import annotations

PREFIX = "dtm:"
CHAOS = "dtm-chaos"
MUX = ".."


def actor_party(party: str) -> str:
    """The party whose actor hosts ``party``: itself, or its load generator."""
    return party.split(MUX, 1)[0] if MUX in party else party


def actor_name(party: str) -> str:
    return PREFIX + actor_party(party)
