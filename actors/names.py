"""How parties are found in Ray: one named actor per party, in the cluster's namespace."""

from __future__ import annotations

PREFIX = "dtm:"
CHAOS = "dtm-chaos"


def actor_name(party: str) -> str:
    return PREFIX + party
