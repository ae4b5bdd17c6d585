"""The PBFT properties, checked on what the nodes reported (``Observed`` outputs), after a run.

Each checker is a pure function of the recorded outputs (and of what the test knows: which
replicas are correct, which requests were really submitted) and returns a list of
``Violation``s: empty means the property held. They know nothing about the simulator's insides,
so the Ray tests and benchmarks can feed them outputs collected from actors just the same.

- ``agreement``: no two correct replicas execute different batch digests at one sequence number
  (across restarts too: a replica replaying its log after a crash must replay the same batches).
- ``validity``: every request a correct replica executes was submitted by its client (Byzantine
  replicas cannot forge a client's authentication, so nothing else may ever execute).
- ``exactly_once``: a request is ordered at one sequence number only, and executed at most once
  in each life of each correct replica.
- ``bounded_log``: after garbage collection at stable checkpoints, the entries a replica keeps in
  memory stay below a bound.
- ``liveness``: every submitted request got its result, within a bound after the faults healed.
- ``counter_results``: with the counter workload (each client increments its own key once per
  request), the k-th answered request of a client reads exactly k: the client-visible face of
  exactly-once and agreement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from dtm_ray.pbft.events import CheckpointStable, ClientResult, Evidence, Executed
from dtm_ray.sim.simulation import Observed

Request = tuple[str, int]  # (client, request_id)


@dataclass(frozen=True, slots=True)
class Violation:
    prop: str
    detail: str

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


def _of(outputs: Iterable[Observed], kind: type, parties: set[str] | None = None):
    for o in outputs:
        if isinstance(o.output, kind) and (parties is None or o.party in parties):
            yield o


def agreement(outputs: list[Observed], correct: set[str]) -> list[Violation]:
    first: dict[int, tuple[bytes, str]] = {}  # seq -> (digest, who executed it first)
    out = []
    for o in _of(outputs, Executed, correct):
        ex: Executed = o.output
        seen = first.setdefault(ex.seq, (ex.digest, o.party))
        if seen[0] != ex.digest:
            out.append(Violation("agreement", f"seq {ex.seq}: {seen[1]} executed {seen[0].hex()[:12]}, "
                                              f"{o.party} executed {ex.digest.hex()[:12]} at t={o.time_ms}ms"))
    return out


def validity(outputs: list[Observed], correct: set[str], submitted: set[Request]) -> list[Violation]:
    out = []
    for o in _of(outputs, Executed, correct):
        for req in o.output.requests:
            if tuple(req) not in submitted:
                out.append(Violation("validity", f"{o.party} executed {req} at seq {o.output.seq}, never submitted"))
    return out


def exactly_once(outputs: list[Observed], correct: set[str]) -> list[Violation]:
    seqs_of: dict[Request, set[int]] = defaultdict(set)
    per_life: dict[tuple[str, int], dict[Request, int]] = defaultdict(dict)
    out = []
    for o in _of(outputs, Executed, correct):
        for req in map(tuple, o.output.requests):
            seqs_of[req].add(o.output.seq)
            life = per_life[(o.party, o.incarnation)]
            if req in life and life[req] != o.output.seq:
                out.append(Violation("exactly-once", f"{o.party} (life {o.incarnation}) executed {req} at seq "
                                                     f"{life[req]} and again at seq {o.output.seq}"))
            life[req] = o.output.seq
    for req, seqs in seqs_of.items():
        if len(seqs) > 1:
            out.append(Violation("exactly-once", f"{req} ordered at several seqs {sorted(seqs)}"))
    return out


def bounded_log(outputs: list[Observed], correct: set[str], bound: int,
                statuses: dict[str, dict] | None = None) -> list[Violation]:
    """``statuses``: replica -> ``status()`` at the end of the run (its ``log_entries``, if any)."""
    out = []
    for o in _of(outputs, CheckpointStable, correct):
        if o.output.log_entries > bound:
            out.append(Violation("bounded-log", f"{o.party} kept {o.output.log_entries} log entries after the "
                                                f"stable checkpoint {o.output.seq} (bound {bound})"))
    for replica, status in (statuses or {}).items():
        entries = status.get("log_entries")
        if replica in correct and isinstance(entries, int) and entries > bound:
            out.append(Violation("bounded-log", f"{replica} ends with {entries} log entries (bound {bound})"))
    return out


def liveness(outputs: list[Observed], submitted: set[Request], healed_at_ms: int, bound_ms: int,
             now_ms: int) -> list[Violation]:
    answered = {(o.output.client, o.output.request_id): o.time_ms for o in _of(outputs, ClientResult)}
    deadline = healed_at_ms + bound_ms
    missing = sorted(r for r in submitted if r not in answered)
    late = sorted(r for r, t in answered.items() if r in submitted and t > deadline)
    out = []
    if missing:
        out.append(Violation("liveness", f"{len(missing)} requests never answered (by t={now_ms}ms, healed at "
                                         f"t={healed_at_ms}ms): {missing[:8]}"))
    if late:
        out.append(Violation("liveness", f"{len(late)} requests answered after t={deadline}ms: {late[:8]}"))
    return out


def counter_results(outputs: list[Observed], decode_value: Callable[[bytes], Any]) -> list[Violation]:
    """Each client's k-th result (in request order) must read k (see the module docstring)."""
    by_client: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for o in _of(outputs, ClientResult):
        by_client[o.output.client].append((o.output.request_id, decode_value(o.output.result)))
    out = []
    for client, results in by_client.items():
        results.sort()
        for k, (rid, value) in enumerate(results, start=1):
            if value != k:
                out.append(Violation("exactly-once", f"{client}'s request {rid} (its #{k}) read counter {value!r}"))
                break
        rids = [rid for rid, _ in results]
        if len(rids) != len(set(rids)):
            out.append(Violation("exactly-once", f"{client} accepted a result twice for one request"))
    return out


def evidence(outputs: list[Observed], kind: str | None = None) -> list[Evidence]:
    """All evidence recorded (optionally of one kind), for tests that expect some."""
    return [o.output for o in _of(outputs, Evidence) if kind is None or o.output.kind == kind]
