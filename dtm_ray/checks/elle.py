"""An Elle-style checker for list-append histories (Kingsbury & Alvaro, "Elle", VLDB 2020).

The workload: transactions of ``append(key, unique value)`` and ``read(key) -> list``. Because
every appended value is unique and a list keeps the order of its appends, a read reveals the
whole version history of its key up to that point, so the checker can *recover* the version
order of every key and build the dependency graph of Adya's formalism between committed
transactions:

- ``ww`` (write-write): T1 appended the version right before T2's on some key;
- ``wr`` (write-read): T2 read a list whose last element T1 appended;
- ``rw`` (read-write, anti-dependency): T1 read a list, T2 appended the next version;
- ``rt`` (real time): T1 completed before T2 was invoked (strict serializability).

A cycle is an anomaly, named by the edges it needs: ``G0`` (write cycle: ww only), ``G1c``
(circular information flow: ww + wr), ``G-single`` (exactly one rw: read skew), ``G2`` (more rw:
write skew and friends); a cycle that exists only with real-time edges gets a ``-realtime``
suffix. Non-cyclic anomalies: ``G1a`` (aborted read: a value of an aborted transaction was
read), ``G1b`` (intermediate read: a read saw some but not all of another transaction's appends
to a key), ``duplicate-append`` (a value twice in one list), ``incompatible-order`` (two reads
of a key that are not prefixes of one another), ``garbage-read`` (a value nobody appended),
``lost-append`` (a committed append missing from the key's final value) and ``non-unique-append``
(the workload reused a value: the history cannot be checked).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping

from dtm_ray.checks.report import Anomaly

OK, FAIL, INFO = "ok", "fail", "info"  # committed, aborted, unknown outcome


@dataclass(frozen=True)
class Mop:
    """A micro-operation: ``("append", key, value)`` or ``("r", key, observed list or None)``."""

    f: str
    key: Hashable
    value: Any


@dataclass(frozen=True)
class HistTxn:
    txn_id: str
    mops: tuple[Mop, ...]
    status: str  # OK, FAIL or INFO
    start: int = 0  # invocation time
    end: int | None = None  # completion time (None: never completed)


def append(key, value) -> Mop:
    return Mop("append", key, value)


def read(key, observed) -> Mop:
    return Mop("r", key, observed)


# ---------------------------------------------------------------------------------------------


def check_list_append(history: Iterable[HistTxn], final: Mapping[Hashable, list] | None = None,
                      *, realtime: bool = True) -> list[Anomaly]:
    """All anomalies of ``history``; ``final`` optionally gives each key's committed list at the
    end (for lost appends)."""
    txns = {t.txn_id: t for t in history}
    out: list[Anomaly] = []
    writer, appends = _index_appends(txns, out)
    _check_reads(txns, writer, appends, out)
    order = _version_orders(txns, final, out)
    if final is not None:
        _check_final(txns, final, writer, out)
    graph = _dependency_graph(txns, writer, order)
    out.extend(_cycles(graph, set()))
    if realtime:
        seen = {frozenset(a.txns) for a in out if a.kind in CYCLE_KINDS}
        rt_graph = _with_realtime(graph, txns)
        out.extend(a for a in _cycles(rt_graph, {"rt"}) if frozenset(a.txns) not in seen)
    return out


CYCLE_KINDS = ("G0", "G1c", "G-single", "G2")


def _committed(t: HistTxn) -> bool:
    return t.status != FAIL  # unknown outcomes may have committed: treat them as such


def _index_appends(txns, out):
    writer: dict[tuple, str] = {}
    appends: dict[tuple[str, Hashable], list] = defaultdict(list)  # (txn, key) -> values in order
    for t in txns.values():
        for m in t.mops:
            if m.f != "append":
                continue
            k = (m.key, _freeze(m.value))
            if k in writer and writer[k] != t.txn_id:
                out.append(Anomaly("non-unique-append", f"{m.key!r}: {m.value!r} appended by {writer[k]} and "
                                                        f"{t.txn_id}", (writer[k], t.txn_id)))
            writer[k] = t.txn_id
            appends[(t.txn_id, m.key)].append(_freeze(m.value))
    return writer, appends


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def _reads(t: HistTxn):
    for m in t.mops:
        if m.f == "r" and m.value is not None:
            yield m.key, [_freeze(v) for v in m.value]


def _check_reads(txns, writer, appends, out):
    for t in txns.values():
        if not _committed(t):
            continue
        for key, values in _reads(t):
            if len(set(values)) != len(values):
                out.append(Anomaly("duplicate-append", f"{t.txn_id} read {key!r} = {values}", (t.txn_id,)))
            present = set(values)
            for v in values:
                w = writer.get((key, v))
                if w is None:
                    out.append(Anomaly("garbage-read", f"{t.txn_id} read {v!r} in {key!r}, never appended",
                                       (t.txn_id,)))
                elif txns[w].status == FAIL:
                    out.append(Anomaly("G1a", f"{t.txn_id} read {v!r} in {key!r}, appended by aborted {w}",
                                       (t.txn_id, w)))
            for w in {writer.get((key, v)) for v in values} - {None, t.txn_id}:
                theirs = appends[(w, key)]
                if txns[w].status != FAIL and not set(theirs) <= present:
                    out.append(Anomaly("G1b", f"{t.txn_id} read {key!r} = {values}: an intermediate state of "
                                              f"{w}, which appended {list(theirs)}", (t.txn_id, w)))


def _version_orders(txns, final, out) -> dict[Hashable, list]:
    """Per key, the longest committed read (or the final value); every read must be its prefix."""
    longest: dict[Hashable, list] = {}
    for key, values in (final or {}).items():
        longest[key] = [_freeze(v) for v in values]
    reads: dict[Hashable, list[tuple[str, list]]] = defaultdict(list)
    for t in txns.values():
        if _committed(t):
            for key, values in _reads(t):
                reads[key].append((t.txn_id, values))
                if key not in (final or {}) and len(values) > len(longest.get(key, [])):
                    longest[key] = values
    for key, observed in reads.items():
        order = longest[key]
        for txn_id, values in observed:
            if values != order[:len(values)]:
                out.append(Anomaly("incompatible-order", f"{txn_id} read {key!r} = {values}, not a prefix of "
                                                         f"{order}", (txn_id,)))
    return longest


def _check_final(txns, final, writer, out):
    final_sets = {key: {_freeze(v) for v in values} for key, values in final.items()}
    for (key, value), w in writer.items():
        t = txns[w]
        if t.status == OK and value not in final_sets.get(key, set()):
            out.append(Anomaly("lost-append", f"{w} committed append {value!r} to {key!r}, missing from its "
                                              "final value", (w,)))
        if t.status == FAIL and value in final_sets.get(key, set()):
            out.append(Anomaly("G1a", f"aborted {w}'s append {value!r} is in {key!r}'s final value", (w,)))
    for key, values in final.items():
        frozen = [_freeze(v) for v in values]
        if len(set(frozen)) != len(frozen):
            out.append(Anomaly("duplicate-append", f"final value of {key!r} = {frozen}"))


# ---------------------------------------------------------------------------------------------
# The dependency graph: node -> {successor: set of edge types}

Graph = dict[str, dict[str, set[str]]]


def _edge(g: Graph, a: str, b: str, kind: str) -> None:
    if a != b:
        g.setdefault(a, {}).setdefault(b, set()).add(kind)


def _dependency_graph(txns, writer, order) -> Graph:
    g: Graph = {t: {} for t, h in txns.items() if _committed(h)}
    for key, versions in order.items():
        writers = [writer.get((key, v)) for v in versions]
        for a, b in zip(writers, writers[1:]):
            if a in g and b in g:
                _edge(g, a, b, "ww")
    for t in txns.values():
        if not _committed(t):
            continue
        for key, values in _reads(t):
            versions = order.get(key, [])
            visible = [v for v in values if writer.get((key, v)) != t.txn_id]  # own appends aside
            if visible:
                w = writer.get((key, visible[-1]))
                if w in g:
                    _edge(g, w, t.txn_id, "wr")
            nxt = len(visible)
            while nxt < len(versions) and writer.get((key, versions[nxt])) == t.txn_id:
                nxt += 1
            if nxt < len(versions) and versions[:len(visible)] == visible:
                w = writer.get((key, versions[nxt]))
                if w in g:
                    _edge(g, t.txn_id, w, "rw")
    return g


def _with_realtime(g: Graph, txns) -> Graph:
    """Add T1 -rt-> T2 when T1 ended before T2 started (only the edges no other rt path implies)."""
    rt: Graph = {a: {b: set(k) for b, k in succ.items()} for a, succ in g.items()}
    done = sorted((t for t in txns.values() if t.txn_id in g and t.end is not None), key=lambda t: t.end)
    ends = [t.end for t in done]
    max_start = []
    for t in done:
        max_start.append(max(t.start, max_start[-1]) if max_start else t.start)
    for t2 in txns.values():
        if t2.txn_id not in g:
            continue
        i = bisect.bisect_left(ends, t2.start)  # done[:i] ended before t2 started
        if i == 0:
            continue
        frontier = bisect.bisect_left(ends, max_start[i - 1], 0, i)
        for t1 in done[frontier:i]:
            _edge(rt, t1.txn_id, t2.txn_id, "rt")
    return rt


# ---------------------------------------------------------------------------------------------
# Cycles


def _cycles(g: Graph, extra: set[str]) -> list[Anomaly]:
    out = []
    suffix = "-realtime" if extra else ""
    for scc in _sccs(g):
        if len(scc) < 2:
            continue
        kind = _classify(g, scc)
        members = tuple(sorted(scc))
        if extra and not _needs(g, scc, extra):
            continue
        out.append(Anomaly(kind + suffix, f"cycle among {list(members)[:8]}{'...' if len(members) > 8 else ''}",
                           members))
    return out


def _needs(g: Graph, scc: set[str], extra: set[str]) -> bool:
    """Is the cycle there only because of ``extra`` edge kinds?"""
    return not any(len(s) > 1 for s in _sccs(_restrict(g, scc, lambda k: k not in extra)))


def _classify(g: Graph, scc: set[str]) -> str:
    if any(len(s) > 1 for s in _sccs(_restrict(g, scc, lambda k: k == "ww"))):
        return "G0"
    if any(len(s) > 1 for s in _sccs(_restrict(g, scc, lambda k: k in ("ww", "wr")))):
        return "G1c"
    no_rw = _restrict(g, scc, lambda k: k != "rw")
    for a in scc:
        for b, kinds in g.get(a, {}).items():
            if b in scc and "rw" in kinds and _reaches(no_rw, b, a):
                return "G-single"
    return "G2"


def _restrict(g: Graph, nodes: set[str], keep) -> Graph:
    out: Graph = {n: {} for n in nodes}
    for a in nodes:
        for b, kinds in g.get(a, {}).items():
            if b in nodes:
                kept = {k for k in kinds if keep(k)}
                if kept:
                    out[a][b] = kept
    return out


def _reaches(g: Graph, src: str, dst: str) -> bool:
    stack, seen = [src], {src}
    while stack:
        n = stack.pop()
        if n == dst:
            return True
        for m in g.get(n, {}):
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return False


def _sccs(g: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components, iterative (histories can be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in g:
        if root in index:
            continue
        work = [(root, iter(g.get(root, {})))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(g.get(nxt, {}))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.add(m)
                    if m == node:
                        break
                out.append(component)
    return out
