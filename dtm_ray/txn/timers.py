"""Timers keyed by deadline, so a tick costs what expires, not what is waiting.

The coordinator waits on three things per transaction: its vote timeout, the resend of its
PREPAREs until voted, the resend of its decision until acknowledged. Asking every waiting
transaction "are you due?" on every tick costs O(pending) per tick, which at 4,000 clients is
most of the CPU. Here a deadline goes into a heap once; a tick pops what expired. Cancelling is
lazy: a cancelled (or rescheduled) key stays in the heap until its old deadline comes and is
then skipped, because its generation no longer matches. The heap is rebuilt when stale entries
outnumber live ones, so its size stays within twice the live keys.

``ResendTimers`` adds the exponential backoff of ``dtm_ray.retry.Backoff`` (same rule: the
first resend after ``base_ms``, each next one twice as late, up to ``base_ms * max_factor``).
"""

from __future__ import annotations

import heapq
from typing import Generic, Hashable, Iterator, TypeVar

from dtm_ray.retry import MAX_FACTOR

K = TypeVar("K", bound=Hashable)


class DeadlineHeap(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, K]] = []  # (deadline, generation, key)
        self._live: dict[K, int] = {}  # key -> its current generation
        self._generation = 0
        self.visits = 0  # heap entries popped: the work ticks did (for the flat-cost test)

    def schedule(self, key: K, deadline: int) -> None:
        """Fire ``key`` once at ``deadline`` (replacing an earlier schedule of it)."""
        self._generation += 1
        self._live[key] = self._generation
        heapq.heappush(self._heap, (deadline, self._generation, key))
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._compact()

    def cancel(self, key: K) -> None:
        self._live.pop(key, None)

    def expired(self, now: int) -> Iterator[K]:
        """Pop and yield every live key whose deadline is at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, generation, key = heapq.heappop(heap)
            self.visits += 1
            if self._live.get(key) == generation:
                del self._live[key]
                yield key

    def keep_only(self, keys) -> None:
        keep = set(keys)
        self._live = {k: g for k, g in self._live.items() if k in keep}
        self._compact()

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
        heapq.heapify(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def __len__(self) -> int:
        return len(self._live)


class ResendTimers(Generic[K]):
    """When to resend each unanswered key, with exponential backoff."""

    def __init__(self, base_ms: int, max_factor: int = MAX_FACTOR) -> None:
        self.base_ms = base_ms
        self.cap_ms = base_ms * max_factor
        self._wait: dict[K, int] = {}
        self._heap: DeadlineHeap[K] = DeadlineHeap()

    def sent(self, key: K, now_ms: int) -> None:
        """``key`` left now: resend it after ``base_ms``, or twice the previous wait."""
        wait = self._wait.get(key)
        wait = self.base_ms if wait is None else min(wait * 2, self.cap_ms)
        self._wait[key] = wait
        self._heap.schedule(key, now_ms + wait)

    def due(self, now_ms: int) -> list[K]:
        """The keys whose wait has passed (each is reported once per ``sent``)."""
        return list(self._heap.expired(now_ms))

    def forget(self, key: K) -> None:
        """Answered: no more resends, and a later send starts from ``base_ms`` again."""
        self._wait.pop(key, None)
        self._heap.cancel(key)

    def keep_only(self, keys) -> None:
        keep = set(keys)
        self._wait = {k: w for k, w in self._wait.items() if k in keep}
        self._heap.keep_only(keep)

    @property
    def visits(self) -> int:
        return self._heap.visits

    def __contains__(self, key: object) -> bool:
        return key in self._wait

    def __len__(self) -> int:
        return len(self._wait)
