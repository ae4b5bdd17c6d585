"""Finding peers by name, and noticing when a handle went stale, without awaiting every call.

A host keeps one Ray handle per peer actor (``names.actor_name``). A handle goes stale when chaos
re-creates the peer under its name; a peer may also be gone for a while. What notices:

- a call whose completion reports an error (the peer died, or our handle points at a dead actor):
  the handle is dropped and looked up again on the next send (``forget``);
- a peer we kept sending to but have not heard from for ``REFRESH_MS``: its handle is looked up
  again (``refresh_silent``), cheap (one GCS lookup per silent peer every few seconds);
- a peer not found is not looked up again for ``RETRY_LOOKUP_MS`` (messages to it meanwhile are
  dropped and counted: the protocol retransmits), so a dead peer does not cost a GCS call per turn.
"""

from __future__ import annotations

from typing import Any, Callable

from actors import names

REFRESH_MS = 5_000
RETRY_LOOKUP_MS = 500


class Peers:
    def __init__(self, namespace: str, lookup: Callable[[str, str], Any] | None = None) -> None:
        self.namespace = namespace
        self._lookup = lookup or _ray_lookup
        self._handles: dict[str, Any] = {}
        self._missing_since: dict[str, int] = {}
        self._sent_ms: dict[str, int] = {}  # last call to the actor
        self._heard_ms: dict[str, int] = {}  # last call from the actor (or since its handle is new)
        self.lookups = 0

    def handle(self, actor: str, now_ms: int) -> Any:
        handle = self._handles.get(actor)
        if handle is not None:
            return handle
        missing = self._missing_since.get(actor)
        if missing is not None and now_ms - missing < RETRY_LOOKUP_MS:
            return None
        self.lookups += 1
        handle = self._lookup(names.actor_name(actor), self.namespace)
        if handle is None:
            self._missing_since[actor] = now_ms
            return None
        self._missing_since.pop(actor, None)
        self._handles[actor] = handle
        self._heard_ms[actor] = now_ms
        return handle

    def set(self, actor: str, handle: Any) -> None:
        """A handle given directly (tests, or a caller that already holds one)."""
        self._handles[actor] = handle

    def forget(self, actor: str) -> None:
        self._handles.pop(actor, None)

    def sent(self, actor: str, now_ms: int) -> None:
        self._sent_ms[actor] = now_ms

    def heard(self, actor: str, now_ms: int) -> None:
        self._heard_ms[actor] = now_ms

    def refresh_silent(self, now_ms: int) -> list[str]:
        """Drop the handles of peers sent to lately but silent for REFRESH_MS; returns them."""
        stale = [a for a in self._handles
                 if now_ms - self._sent_ms.get(a, -REFRESH_MS) < REFRESH_MS
                 and now_ms - self._heard_ms.get(a, now_ms) >= REFRESH_MS]
        for actor in stale:
            self._handles.pop(actor, None)
            self._heard_ms[actor] = now_ms  # a fresh handle gets a fresh grace period
        return stale


def _ray_lookup(name: str, namespace: str) -> Any:
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
