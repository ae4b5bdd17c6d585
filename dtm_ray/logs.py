"""Logging for the actors (loguru): who said it, in which view, at which sequence number.

Every line carries ``role``, ``id`` (the party), ``view`` and ``seq`` (``-`` where they mean
nothing). Sinks, per process (one actor = one process):

- human-readable lines on stderr at ``log_level`` (Ray copies them to its worker logs, and to the
  driver's terminal when ``log_to_driver`` is on);
- with ``log_json``, every line as JSON to ``<data_dir>/logs/<party>.jsonl``;
- always, the **audit trail**: records bound with ``txn=<id>`` go to
  ``<data_dir>/logs/audit-<party>.jsonl``, so ``audit(log_dir, txn_id)`` (``dtm-ray audit``) can
  put one transaction's life back together across all actors, in time order.

The audit trail is off the hot loop: a host hands each round of outputs to ``outputs``, which
writes ONE record for all the transaction steps nobody would see on stderr (bound with
``audit=[[txn, view, seq, message], ...]``; ``audit()`` unfolds it into the same lines as before),
instead of one loguru record (a frame, a clock read, a JSON dump) per step per transaction. A step
at a level the stderr sink shows is still logged on its own, as before.

Rejected and Evidence outputs are rate-limited (``REPORTS``, a ``limits.Throttle``): a flood of
garbage writes a bounded number of lines, each saying how many similar ones it stands for.

This module is imported by actors only; the pure cores never log (they report outputs).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any

from loguru import logger

from dtm_ray.limits import Throttle

HUMAN = ("<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
         "<cyan>{extra[role]}:{extra[id]}</cyan> v={extra[view]} s={extra[seq]} | {message}")


def log_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "logs")


def setup(spec: dict):
    """Configure this process's sinks for the party in ``spec``; returns its bound logger."""
    cfg = spec["config"]
    party, role = spec["party"], spec["role"]
    logger.remove()
    logger.configure(extra={"role": role, "id": party, "view": "-", "seq": "-"})
    logger.add(sys.stderr, level=cfg["log_level"], format=HUMAN, colorize=False)
    directory = log_dir(os.path.dirname(spec["path"]))
    os.makedirs(directory, exist_ok=True)
    if cfg["log_json"]:
        logger.add(os.path.join(directory, f"{party}.jsonl"), level=cfg["log_level"], serialize=True)
    logger.add(os.path.join(directory, f"audit-{party}.jsonl"), level="TRACE", serialize=True,
               filter=is_audit_record)
    global _SHOWN_FROM
    _SHOWN_FROM = logger.level(cfg["log_level"]).no
    return logger.bind(role=role, id=party)


def is_audit_record(record: dict) -> bool:
    return "txn" in record["extra"] or "audit" in record["extra"]


# the lowest level a human sink of this process shows (``setup``); below it, steps are batched
_SHOWN_FROM = 0


# a transaction's steps that every replica reports: in the audit trail, but below INFO on stderr
_EVERY_REPLICA = frozenset({"Ordered", "PreparesSent", "Decided", "Final"})

# Rejected/Evidence come as fast as a peer can send garbage: per (kind, sender or accused), the
# first is logged at once, then one line per period with the number suppressed in between, so a
# flood cannot fill the disk. Everything is counted: ``reports_summary()`` (for a host's status).
REPORT_PERIOD_MS = 10_000
REPORTS = Throttle(period_ms=REPORT_PERIOD_MS)  # one per process (one actor = one process)


def reports_summary() -> dict[str, int]:
    """Rejected/Evidence outputs seen by this process, per ``kind:sender`` (logged or not)."""
    return REPORTS.summary()


def output(log, item: Any, now_ms: int | None = None) -> None:
    """Log one output a core reported (an event, a result), audit-tagged when it names a txn.
    ``now_ms`` (default: this process's monotonic clock) paces the Rejected/Evidence lines."""
    name = type(item).__name__
    view = getattr(item, "view", "-")
    seq = getattr(item, "seq", "-")
    bound = log.bind(view=view, seq=seq)
    txn = getattr(item, "txn_id", None)
    if txn is not None:
        # evidence naming a txn is bounded at its source (once per participant and txn)
        level = "DEBUG" if name in _EVERY_REPLICA else "WARNING" if name == "Evidence" else "INFO"
        bound.bind(txn=str(txn)).log(level, "{} {}", name, short(item))
        return
    if name in ("Evidence", "Rejected"):
        who = getattr(item, "sender", None) or getattr(item, "accused", "?")
        now = int(time.monotonic() * 1000) if now_ms is None else now_ms
        suppressed = REPORTS.report(name, str(who), now)
        if suppressed is not None:
            more = f" (+{suppressed} similar suppressed)" if suppressed else ""
            bound.warning("{} {}{}", name, short(item), more)
    elif name in ("ViewChanged", "StateTransferred", "CheckpointStable"):
        bound.info("{} {}", name, short(item))
    elif name == "Executed":
        for client, request_id in getattr(item, "requests", ()):
            bound.bind(txn=f"{client}:{request_id}").debug("executed at seq {}", seq)
        bound.debug("{} {}", name, short(item))
    else:
        bound.debug("{} {}", name, short(item))


_LEVEL_NO = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARNING": 30}


def outputs(log, items: list[Any], now_ms: int | None = None) -> None:
    """``output`` for a round of outputs, with the audit steps nobody sees on stderr written as one
    record (see the module's docstring)."""
    batch: list[list] = []
    for item in items:
        name = type(item).__name__
        txn = getattr(item, "txn_id", None)
        if txn is not None:
            level = "DEBUG" if name in _EVERY_REPLICA else "WARNING" if name == "Evidence" else "INFO"
            if _LEVEL_NO[level] < _SHOWN_FROM:
                batch.append([str(txn), getattr(item, "view", "-"), getattr(item, "seq", "-"),
                              f"{name} {short(item)}"])
                continue
        elif name == "Executed" and _LEVEL_NO["DEBUG"] < _SHOWN_FROM:
            seq = getattr(item, "seq", "-")
            batch.extend([f"{client}:{request_id}", getattr(item, "view", "-"), seq, f"executed at seq {seq}"]
                         for client, request_id in getattr(item, "requests", ()))
            continue  # its own line is DEBUG: shown nowhere
        elif name not in ("Evidence", "Rejected", "ViewChanged", "StateTransferred", "CheckpointStable") \
                and _LEVEL_NO["DEBUG"] < _SHOWN_FROM:
            continue  # a DEBUG line no sink shows: not even formatted
        output(log, item, now_ms)
    if batch:
        log.bind(audit=batch).trace("{} audit steps", len(batch))


def short(item: Any) -> str:
    """``repr(item)``, cut to 300 characters (log lines stay one readable line)."""
    text = repr(item)
    return text if len(text) <= 300 else text[:297] + "..."


def audit(directory: str, txn_id: str) -> list[dict]:
    """Every audit record about ``txn_id`` in ``directory``, from all parties, in time order."""
    records = []
    for path in glob.glob(os.path.join(directory, "audit-*.jsonl")):
        with open(path) as fh:
            for line in fh:
                try:
                    rec = json.loads(line)["record"]
                except (ValueError, KeyError):
                    continue  # a line cut by a crash
                extra = rec["extra"]
                if extra.get("txn") == txn_id:
                    records.append({"time": rec["time"]["timestamp"], "party": extra.get("id"),
                                    "role": extra.get("role"), "view": extra.get("view"),
                                    "seq": extra.get("seq"), "message": rec["message"]})
                for txn, view, seq, message in extra.get("audit", ()):  # one record, many steps
                    if txn == txn_id:
                        records.append({"time": rec["time"]["timestamp"], "party": extra.get("id"),
                                        "role": extra.get("role"), "view": view, "seq": seq,
                                        "message": message})
    return sorted(records, key=lambda r: r["time"])
