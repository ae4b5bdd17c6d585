"""A live picture of a cluster: per-replica view, executed sequence number, health and evidence;
the participants' locks and in-doubt transactions; and, in the demo, the load's counters.

Everything here renders a ``cluster.status()`` dict (plain data), so it works on a cluster this
process started, one it attached to with ``dtm_ray.connect()``, in a terminal or a notebook:

    from dtm_ray.watch import watch
    watch(cluster)                      # refreshes every second until Ctrl-C (or duration_s)

``one_line(status)`` is the at-a-glance summary used by ``repr`` and by the plain progress lines
the demo prints when its output is not a terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


# ---------------------------------------------------------------------------------------------
# Reading a status dict


def replica_health(replica: dict) -> str:
    """One word (or two) for a replica's condition, worst first."""
    if not replica.get("alive"):
        # Cluster.status marks a party that failed ("error") or merely did not answer in time
        return "down" if replica.get("error") else "no answer"
    if replica.get("byzantine"):
        return f"byzantine:{replica['byzantine']}"
    if replica.get("view_changing"):
        return "view-change"
    target = replica.get("state_transfer_target") or 0
    if target > (replica.get("executed_seq") or 0):
        return "catching-up"
    return "ok"


def evidence_total(replica: dict) -> int:
    evidence = replica.get("evidence") or {}
    return sum(evidence.values()) if isinstance(evidence, dict) else int(evidence)


def current_view(status: dict) -> tuple[int, str | None]:
    """The highest view a live replica is in, and its primary (what the cluster converges to)."""
    live = [r for r in status.get("replicas", []) if r.get("alive") and "view" in r]
    if not live:
        return -1, None
    top = max(live, key=lambda r: r["view"])
    return top["view"], top.get("primary")


def one_line(status: dict) -> str:
    replicas = status.get("replicas", [])
    up = sum(1 for r in replicas if r.get("alive"))
    view, primary = current_view(status)
    executed = max((r.get("executed_seq", 0) for r in replicas if r.get("alive")), default=0)
    evidence = sum(evidence_total(r) for r in replicas if r.get("alive"))
    unusual = [f"{r['id']}={replica_health(r)}" for r in replicas if replica_health(r) != "ok"]
    text = (f"view {view} (primary {primary}), executed seq {executed}, {up}/{len(replicas)} replicas up, "
            f"evidence {evidence}")
    return text + (f", {' '.join(unusual)}" if unusual else "")


# ---------------------------------------------------------------------------------------------
# Rendering


_HEALTH_STYLE = {"ok": "green", "down": "bold red", "no answer": "red", "view-change": "yellow",
                 "catching-up": "cyan"}


def replica_table(status: dict) -> Table:
    table = Table(title="replicas", title_justify="left", expand=False)
    for column, justify in (("id", "left"), ("view", "right"), ("primary", "left"),
                            ("executed", "right"), ("checkpoint", "right"), ("status", "left"),
                            ("evidence", "right"), ("rejected", "right")):
        table.add_column(column, justify=justify)
    for r in status.get("replicas", []):
        health = replica_health(r)
        style = _HEALTH_STYLE.get(health, "bold magenta")
        if not r.get("alive"):
            table.add_row(r.get("id", "?"), "-", "-", "-", "-", Text(health, style=style), "-", "-")
            continue
        rejected = r.get("rejected") or {}
        table.add_row(r["id"], str(r.get("view", "?")), str(r.get("primary", "?")),
                      str(r.get("executed_seq", "?")), str(r.get("stable_checkpoint", "?")),
                      Text(health, style=style), str(evidence_total(r)),
                      str(sum(rejected.values()) if isinstance(rejected, dict) else rejected))
    return table


def participant_table(status: dict) -> Table:
    table = Table(title="participants", title_justify="left", expand=False)
    for column in ("name", "kind", "committed", "aborted", "prepared", "in doubt", "locks", "status"):
        table.add_column(column, justify="left" if column in ("name", "kind", "status") else "right")
    for name, p in (status.get("participants") or {}).items():
        if not p.get("alive"):
            table.add_row(name, "-", "-", "-", "-", "-", "-",
                          Text("down" if p.get("error") else "no answer", style="bold red"))
            continue
        health = f"byzantine:{p['byzantine']}" if p.get("byzantine") else "ok"
        table.add_row(name, str(p.get("kind", "?")), str(p.get("committed", "?")), str(p.get("aborted", "?")),
                      str(p.get("prepared", "?")), str(p.get("in_doubt", "?")), str(p.get("locks", "?")),
                      Text(health, style="green" if health == "ok" else "bold magenta"))
    return table


@dataclass
class LoadCounters:
    """What the demo's load has seen so far (the driver's own count: client-accepted results)."""

    committed: int = 0
    aborted: int = 0
    timeouts: int = 0
    completions: list[float] = field(default_factory=list)  # monotonic times of committed results

    def throughput(self, now: float, window_s: float = 5.0) -> float:
        recent = [t for t in self.completions[-2000:] if now - t <= window_s]
        return len(recent) / window_s


def load_line(load: LoadCounters, now: float) -> Text:
    return Text.assemble(("committed ", "bold"), (str(load.committed), "green"),
                         ("  aborted ", "bold"), (str(load.aborted), "yellow"),
                         ("  timed out ", "bold"), (str(load.timeouts), "red" if load.timeouts else "default"),
                         ("  throughput ", "bold"), f"{load.throughput(now):.1f} txn/s (last 5 s)")


def render(status: dict, *, load: LoadCounters | None = None, phase: str | None = None,
           now: float | None = None) -> Group:
    parts: list[Any] = []
    if phase:
        parts.append(Text(phase, style="bold"))
    parts.append(replica_table(status))
    parts.append(participant_table(status))
    if load is not None:
        parts.append(load_line(load, now if now is not None else time.monotonic()))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------
# The live view


def watch(cluster: Any, *, refresh_s: float = 1.0, duration_s: float | None = None,
          console: Console | None = None) -> None:
    """Show ``cluster.status()`` live until Ctrl-C (or ``duration_s``); a notebook renders it too."""
    console = console or Console()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        with Live(render(cluster.status(timeout_s=refresh_s)), console=console, auto_refresh=False) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(refresh_s)  # the refresh period of a display, not synchronisation
                live.update(render(cluster.status(timeout_s=refresh_s)), refresh=True)
    except KeyboardInterrupt:
        pass
