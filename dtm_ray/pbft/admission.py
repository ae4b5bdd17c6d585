"""Admission control at a replica: a bounded queue, an explicit BUSY, no forwarding storm.

Overload must make latency grow with a bounded queue, never make the cluster collapse. Three
rules, each decided here and applied by ``intake``:

1. **A bound.** At most ``max_waiting_requests`` client requests wait at a replica: taken in and
   not answered yet, whether still to be ordered (``pending``) or executed and waiting for the
   App's reply (a transaction waits for its DECIDE: ``app.open_requests``). Beyond it, a new
   request is not kept: its client gets a MAC'd ``Busy`` (so nothing is dropped silently) and
   backs off (``dtm_ray.pbft.client``). Counting the App's open requests matters: ordering is
   cheap, and a bound on unordered requests alone would let every request through to wait for
   its votes, where the vote timeouts abort them once the queue is longer than the timeout.

2. **A backup keeps less than the primary.** A backup keeps a request only while it waits for
   fewer than ``limit - slack``; the primary up to ``limit``. A request a backup keeps starts its
   view-change timers, and one the correct primary refused as busy could make the backup blame
   the primary for censorship once batches have room again; refusing earlier at backups makes
   that rarer, not impossible (the sets differ: the primary also holds what backups refused).
   What holds: ``pending`` <= ``limit`` everywhere and pending + open <= ``limit`` at the primary;
   at a backup the total can pass the bound for a while (requests it kept that the primary
   refused, plus the open requests the primary admitted: measured up to 1.4x at 4,000 clients).
   The client's busy back-off is short (``dtm_ray.pbft.client.BUSY_MAX_FACTOR``) and its resend
   reaches the primary again. (A faulty primary claiming BUSY for a victim gains nothing: the
   backups keep the request, their timers run.)

3. **Forward once per interval.** A backup forwards a request it keeps to the primary when it
   first sees it and again only if ``interval_ms`` passed since: a client's retransmission to
   every replica, network duplicates or a flood of copies do not each become a forward.

Work is O(1) per request; the tables are bounded by the replica's pending requests (``forget``
is called when one leaves) and by the declared clients (the BUSY token buckets).
"""

from __future__ import annotations

from dtm_ray.limits import TokenBucket

BACKUP_SLACK_FRACTION = 8  # a backup stops keeping requests 1/8 of the bound below the primary
BUSY_PER_S, BUSY_BURST = 10, 4  # BUSY replies per client: a client flooding copies gets few back


class Admission:
    def __init__(self, limit: int, clients: int) -> None:
        self.limit = limit
        self.slack = limit // BACKUP_SLACK_FRACTION
        self._busy = TokenBucket(BUSY_PER_S, BUSY_BURST, max_keys=max(1_000, clients + 1))
        self._forwarded_at: dict[tuple[str, int], int] = {}  # pending key -> when last forwarded
        self.high_water = 0  # the most requests waiting here at once
        self.refused_busy = 0  # requests not kept: the bound was reached
        self.busy_sent = 0  # BUSY replies sent (at most BUSY_BURST at once per client)
        self.forwarded = 0
        self.forwards_suppressed = 0

    def room(self, waiting: int, is_primary: bool) -> bool:
        """Whether a replica with ``waiting`` requests waiting may keep one more."""
        return waiting < (self.limit if is_primary else self.limit - self.slack)

    def admitted(self, waiting: int) -> None:
        """One more request is kept: ``waiting`` now wait here."""
        self.high_water = max(self.high_water, waiting)

    def refuse(self, client: str, now_ms: int) -> bool:
        """A request of ``client`` is refused as busy: whether to send it a BUSY now."""
        self.refused_busy += 1
        if self._busy.allow(client, now_ms):
            self.busy_sent += 1
            return True
        return False

    def may_forward(self, key: tuple[str, int], now_ms: int, interval_ms: int) -> bool:
        """Whether a backup forwards this request to the primary now (and counts it)."""
        last = self._forwarded_at.get(key)
        if last is not None and now_ms - last < interval_ms:
            self.forwards_suppressed += 1
            return False
        self._forwarded_at[key] = now_ms
        self.forwarded += 1
        return True

    def forget(self, key: tuple[str, int]) -> None:
        """The request left the pending set (executed, or dropped by state transfer)."""
        self._forwarded_at.pop(key, None)

    def status(self, waiting: int) -> dict:
        return {"waiting": waiting, "limit": self.limit, "high_water": self.high_water,
                "refused_busy": self.refused_busy, "busy_sent": self.busy_sent,
                "forwarded": self.forwarded, "forwards_suppressed": self.forwards_suppressed}
