"""``dtm-ray demo``: a local BFT cluster under a bank-transfer load, attacked on a timeline, then
checked.

The story it tells, on a timeline proportional to ``duration_s`` (the load's length):

    0%   healthy: clients move money between accounts on two kv participants
    20%  the primary turns Byzantine and EQUIVOCATES (different pre-prepares to different backups)
    40%  it is healed (the cluster has meanwhile exposed it and changed view)
    50%  a backup CRASHES (killed: its actor is gone)
    65%  it RESTARTS from its RocksDB directory and catches up
    100% the load stops; decisions drain; the invariants are checked

At no moment are more than ``f`` replicas faulty, so every invariant must hold: money is neither
created nor destroyed and every committed read sees the right total (``checks.bank``); no
transaction is committed at one participant and aborted at another (``checks.atomicity``, from
the participants' Applied events); and the cluster commits again once the faults are healed.

Output: a live view (or plain progress lines when stdout is not a terminal), a summary table, a
verdict line, and a PNG plot of throughput with the fault markers. The exit code is 1 when an
invariant broke (safety, or liveness: no commit once the faults healed), 130 on Ctrl-C (the
cluster is shut down either way).
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError
from dtm_ray.watch import LoadCounters, current_view, one_line, render

VERDICT_OK = "verdict: invariants held"
VERDICT_BROKEN = "verdict: INVARIANTS BROKEN"
VERDICT_STALLED = "verdict: safety invariants held, but the cluster STALLED"


def verdict_line(anomalies: list[str]) -> str:
    """Safety (bank, atomicity) first; a cluster that is safe but stopped committing is told apart."""
    def listed(items: list[str]) -> str:
        return "; ".join(items[:5]) + (" ..." if len(items) > 5 else "")

    safety = [a for a in anomalies if not a.startswith("liveness:")]
    if safety:
        return f"{VERDICT_BROKEN}: {listed(safety)}"
    if anomalies:
        return f"{VERDICT_STALLED}: {listed(anomalies)}"
    return f"{VERDICT_OK} (bank, atomicity, liveness after healing)"


@dataclass
class DemoOptions:
    duration_s: float = 40.0  # the load (the timeline scales with it); startup and checks add to it
    out: str = "out/dtm-ray-demo.png"
    load_clients: int = 3
    accounts_per_participant: int = 4
    balance: int = 100
    seed: int = 1
    submit_timeout_s: float = 15.0
    live: bool | None = None  # None: a live view when stdout is a terminal, plain lines otherwise
    snapshot: str | None = None  # write a text capture of the live view in the middle of the attack


@dataclass
class FaultEvent:
    at_s: float  # seconds since the load started
    label: str


@dataclass
class DemoReport:
    exit_code: int
    verdict: str
    anomalies: list[str]
    summary: dict[str, Any]
    events: list[FaultEvent] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The load: one thread per client, recording every transaction as the checkers want it


class BankLoad:
    """Closed-loop bank transfers (and whole-bank reads) from a few clients, until ``stop``."""

    def __init__(self, cluster: Any, clients: list[str], accounts: list[tuple[str, str]],
                 options: DemoOptions, t0: float) -> None:
        self.cluster = cluster
        self.accounts = accounts
        self.options = options
        self.t0 = t0
        self.stop = threading.Event()
        self.counters = LoadCounters()
        self.records: list[dict] = []
        self.errors: list[str] = []  # a client thread that died, and why
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(name, options.seed * 1000 + i),
                                          name=f"load-{name}", daemon=True)
                         for i, name in enumerate(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout_s: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, name: str, seed: int) -> None:
        try:
            self._loop(name, seed)
        except Exception as exc:  # reported in the summary: the other clients go on
            if not self.stop.is_set():
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def _loop(self, name: str, seed: int) -> None:
        from actors import loadgen
        from dtm_ray.api import SubmitTimeout

        client = self.cluster.client(name)
        rng = random.Random(seed)
        while not self.stop.is_set():
            kind, ops = loadgen.bank_step(rng, self.accounts, read_share=0.1)
            start_ns = time.time_ns()
            try:
                result = client.submit(ops, timeout_s=self.options.submit_timeout_s)
            except SubmitTimeout:
                self._record(loadgen.Record("?", kind, [loadgen.op_tuple(o) for o in ops], "info", None,
                                            "timeout", start_ns, None))
                continue
            self._record(loadgen.Record(result.txn_id, kind, [loadgen.op_tuple(o) for o in ops],
                                        "ok" if result.committed else "fail", list(result.reads or []),
                                        result.reason, start_ns, time.time_ns()))

    def _record(self, record: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self.records.append(asdict(record))
            if record.status == "ok":
                self.counters.committed += 1
                self.counters.completions.append(now)
            elif record.status == "fail":
                self.counters.aborted += 1
            else:
                self.counters.timeouts += 1


# ---------------------------------------------------------------------------------------------
# The attack: a timeline of chaos operations, never more than f faulty replicas at once


class Attack:
    """Runs the fault timeline in its own thread (chaos calls block until they took effect)."""

    def __init__(self, cluster: Any, duration_s: float, t0: float, seed: int) -> None:
        self.cluster = cluster
        self.duration_s = duration_s
        self.t0 = t0
        self.seed = seed
        self.events: list[FaultEvent] = []
        self.phase = "healthy"
        self.error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="attack", daemon=True)
        self.victims: dict[str, int] = {}
        self.finished_at: float | None = None  # monotonic time the last step completed

    def steps(self) -> list[tuple[float, Callable[[], None]]]:
        return [(0.20, self.equivocate), (0.40, self.heal_equivocator), (0.50, self.crash_backup),
                (0.65, self.restart_backup)]

    def _run(self) -> None:
        try:
            for fraction, action in self.steps():
                if self.stop.wait(max(0.0, self.t0 + fraction * self.duration_s - time.monotonic())):
                    return
                action()
            self.phase = "all faults healed"
        except Exception as exc:  # reported in the summary; the load and the checks go on
            self.error = f"{type(exc).__name__}: {exc}"
            self.phase = f"attack failed: {self.error}"
        finally:
            self.finished_at = time.monotonic()

    def _event(self, began: float, label: str, phase: str) -> None:
        """Marked at the moment the operation began (a restart takes seconds to complete)."""
        self.events.append(FaultEvent(round(began - self.t0, 2), label))
        self.phase = phase

    def _primary_index(self) -> int:
        view, primary = current_view(self.cluster.status(timeout_s=2.0))
        return int(primary[1:]) if primary else 0

    def equivocate(self) -> None:
        began = time.monotonic()
        p = self.victims["equivocator"] = self._primary_index()
        self.cluster.chaos.byzantine(p, "equivocate", self.seed)
        self._event(began, f"R{p} equivocates", f"R{p} (the primary) equivocates")

    def heal_equivocator(self) -> None:
        began, p = time.monotonic(), self.victims["equivocator"]
        self.cluster.chaos.heal(p)
        self._event(began, f"R{p} healed", f"R{p} healed")

    def crash_backup(self) -> None:
        began, n = time.monotonic(), self.cluster.config.replica_count
        primary = self._primary_index()
        spared = {primary, self.victims.get("equivocator")}  # crash a replica not yet in the story
        b = self.victims["crashed"] = next((i for i in range(n - 1, -1, -1) if i not in spared),
                                           next(i for i in range(n) if i != primary))
        self.cluster.chaos.kill(b)
        self._event(began, f"R{b} crashes", f"R{b} (a backup) is down")

    def restart_backup(self) -> None:
        began, b = time.monotonic(), self.victims["crashed"]
        self.cluster.chaos.restart(b)
        self._event(began, f"R{b} restarts", f"R{b} restarted, catching up")


# ---------------------------------------------------------------------------------------------
# The checks


_APPLIED = re.compile(r"Applied\(participant='(?P<p>[^']*)', txn_id='(?P<t>[^']*)', pseq=(?P<s>\d+), "
                      r"commit=(?P<c>True|False), voted_yes=(?P<v>True|False|None)\)")


def applied_events(data_dir: str, participants: list[str]) -> list[Any]:
    """The participants' ``Applied`` outputs, read back from their audit logs: the offline
    reader, for a cluster that is gone or whose participants restarted (a running cluster's
    ``Cluster.applied()`` gives the same events, structured, for the current incarnations)."""
    from dtm_ray.logs import log_dir
    from dtm_ray.txn.events import Applied

    events = []
    for party in participants:
        for path in glob.glob(os.path.join(log_dir(data_dir), f"audit-{party}.jsonl")):
            with open(path) as fh:
                for line in fh:
                    match = _APPLIED.search(line)
                    if match:
                        voted = {"True": True, "False": False, "None": None}[match["v"]]
                        events.append(Applied(match["p"], match["t"], int(match["s"]), match["c"] == "True", voted))
    return events


@dataclass(frozen=True)
class _Result:  # what the atomicity checker needs of a client's result
    committed: bool
    outcome: str


def wait_quiescent(cluster: Any, participants: list[str], timeout_s: float) -> bool:
    """True once every decision is applied (nothing prepared, no locks) at every participant."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = cluster.status(timeout_s=2.0)["participants"]
        if all(status[p].get("alive") and not status[p].get("locks") and status[p].get("prepared") == 0
               for p in participants):
            return True
        time.sleep(0.25)  # polling an observable condition, not a synchronisation guess
    return False


def check_everything(cluster: Any, accounts: list[tuple[str, str]], total: int, records: list[dict],
                     healed_at_s: float | None, t0_ns: int) -> tuple[list[str], dict[str, str]]:
    """Run the checkers; returns (anomalies, one result line per check)."""
    from dtm_ray.checks.atomicity import check_atomicity
    from dtm_ray.checks.bank import check_bank

    participants = sorted(cluster.config.participants)
    kv = sorted({p for p, _ in accounts})
    results: dict[str, str] = {}
    anomalies: list[str] = []
    drained = wait_quiescent(cluster, participants, timeout_s=60.0)
    results["drained"] = "ok" if drained else "participants still hold prepared transactions after 60 s"
    if not drained:
        anomalies.append("liveness: decisions not all applied 60 s after the load stopped")

    states = {p: cluster.participant_state(p) for p in kv}
    final = {(p, k): states[p].get(k) for p, k in accounts}
    reads = [(r["txn_id"], dict(zip(accounts, r["reads"]))) for r in records
             if r["kind"] == "read" and r["status"] == "ok"]
    bank = check_bank(total, final, reads)
    anomalies += [f"bank: {a}" for a in bank]
    results["bank"] = (f"ok: total {total} conserved, {len(reads)} whole-bank reads consistent" if not bank
                       else f"{len(bank)} anomalies")

    decided = {r["txn_id"]: _Result(r["status"] == "ok", "commit" if r["status"] == "ok" else "abort")
               for r in records if r["status"] in ("ok", "fail")}
    touched = {r["txn_id"]: sorted({op[0] for op in r["ops"]}) for r in records if r["txn_id"] != "?"}
    applied = cluster.applied()  # the participants' Applied events (the demo never restarts one)
    atomicity = check_atomicity(applied, decided, touched, complete=drained)
    anomalies += [f"atomicity: {a}" for a in atomicity]
    results["atomicity"] = (f"ok: {len(applied)} applied decisions, one outcome per transaction" if not atomicity
                            else f"{len(atomicity)} anomalies")

    if healed_at_s is not None:
        after = sum(1 for r in records if r["status"] == "ok" and (r["end_ns"] - t0_ns) / 1e9 > healed_at_s)
        results["liveness"] = (f"ok: {after} commits after the last fault healed" if after
                               else "no commit after the faults healed")
        if not after:
            anomalies.append("liveness: no transaction committed after the faults healed")
    return anomalies, results


# ---------------------------------------------------------------------------------------------
# Summary and plot


def latency_ms(records: list[dict]) -> tuple[float | None, float | None]:
    lat = sorted((r["end_ns"] - r["start_ns"]) / 1e6 for r in records if r["status"] == "ok" and r["end_ns"])
    if not lat:
        return None, None
    return statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def summary_table(summary: dict[str, Any], checks: dict[str, str]) -> Table:
    table = Table(title="dtm-ray demo: summary", title_justify="left")
    table.add_column("what")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, str(value))
    for key, value in checks.items():
        table.add_row(f"check: {key}", value)
    return table


def write_plot(path: str, records: list[dict], events: list[FaultEvent], t0_ns: int, duration_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = max(1, int(duration_s + 1))
    committed, aborted = [0] * seconds, [0] * seconds
    for r in records:
        if r["end_ns"] is None:
            continue
        second = int((r["end_ns"] - t0_ns) / 1e9)
        if 0 <= second < seconds:
            (committed if r["status"] == "ok" else aborted)[second] += 1
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    xs = list(range(seconds))
    ax.step(xs, committed, where="post", label="committed txn/s", color="tab:green")
    ax.step(xs, aborted, where="post", label="aborted txn/s (guard)", color="tab:orange")
    top = max(committed + aborted + [1])
    for start, end in zip(events[0::2], events[1::2]):  # fault windows: (equivocate, heal), (crash, restart)
        ax.axvspan(start.at_s, end.at_s, color="tab:red", alpha=0.08)
    for event in events:
        ax.axvline(event.at_s, color="tab:red", linestyle="--", linewidth=1)
        ax.text(event.at_s, top * 1.02, event.label, rotation=30, fontsize=8, color="tab:red", va="bottom")
    ax.set_ylim(0, top * 1.35)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("transactions per second")
    ax.set_title("dtm-ray demo: bank transfers through a Byzantine primary and a crash")
    ax.legend(loc="lower right")
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The whole run


def check_data_dir(path: str | None) -> None:
    if path and os.path.isdir(path) and os.listdir(path):
        raise ConfigError(f"--data-dir {path!r} is not empty: the demo needs a fresh directory "
                          "(another run's state and logs there would mix into its checks)")


def run(cfg: ClusterConfig, options: DemoOptions, console: Console | None = None) -> DemoReport:
    """Run the demo; returns its report (``exit_code`` 0 when every invariant held)."""
    import dtm_ray

    console = console or Console()
    live = console.is_terminal if options.live is None else options.live
    check_data_dir(cfg.data_dir)
    if cfg.replica_count < 2:
        raise ConfigError("the demo needs at least 2 replicas (one equivocates, one is crashed)")
    clients = list(cfg.clients[:options.load_clients])
    if len(clients) < 1:
        raise ConfigError("the demo needs at least one client (ClusterConfig.clients)")
    kv = [p for p, kind in cfg.participants.items() if kind == "kv"]
    if len(kv) < 1:
        raise ConfigError("the demo needs at least one participant of kind 'kv' for the bank")
    console.print(f"[bold]dtm-ray demo[/]: n={cfg.replica_count} replicas (f={cfg.f}), participants "
                  f"{dict(cfg.participants)}, load {options.duration_s:.0f} s from {clients}")
    if cfg.address is None:  # Ray's default for a local Ray, said explicitly (and so not announced)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    started = time.monotonic()
    cluster = None
    try:
        console.print("starting the cluster (Ray and one actor per party) ...")
        cluster = dtm_ray.start(cfg)
        console.print(f"cluster up in {time.monotonic() - started:.1f} s; data in {cluster.data_dir}")
        report = _run_on(cluster, clients, kv, options, console, live)
        report.summary["wall time (s)"] = round(time.monotonic() - started, 1)
        return report
    except KeyboardInterrupt:
        console.print("interrupted: shutting the cluster down")
        return DemoReport(130, "interrupted", [], {})
    finally:
        if cluster is not None:
            cluster.shutdown()


def _run_on(cluster: Any, clients: list[str], kv: list[str], options: DemoOptions, console: Console,
            live: bool) -> DemoReport:
    from dtm_ray.txn.ops import Op

    accounts = [(p, f"acct:{i}") for p in kv for i in range(options.accounts_per_participant)]
    setup = cluster.client(clients[0]).submit([Op.put(p, k, options.balance) for p, k in accounts])
    if not setup.committed:
        raise RuntimeError(f"could not open the accounts: {setup.reason}")
    total = options.balance * len(accounts)
    console.print(f"{len(accounts)} accounts opened with {options.balance} each (total {total}); load starts")

    t0, t0_ns = time.monotonic(), time.time_ns()
    load = BankLoad(cluster, clients, accounts, options, t0)
    attack = Attack(cluster, options.duration_s, t0, options.seed)
    load.start()
    attack.thread.start()
    try:
        _show(cluster, load, attack, options, console, live, t0)
    except KeyboardInterrupt:
        attack.stop.set()
        load.stop.set()  # the threads are daemons; the cluster's shutdown ends their calls
        raise
    load.join(timeout_s=options.submit_timeout_s + 10)
    load_s = time.monotonic() - t0
    console.print(f"load stopped after {load_s:.1f} s; draining decisions and checking ...")

    records = list(load.records)
    healed_at = attack.events[-1].at_s if attack.events and not attack.error else None
    anomalies, checks = check_everything(cluster, accounts, total, records, healed_at, t0_ns)
    if attack.error:
        checks["attack"] = f"a chaos step failed: {attack.error}"
    if load.errors:
        checks["load"] = f"client threads failed: {'; '.join(load.errors)}"
    status = cluster.status(timeout_s=5.0)
    summary = _summary(records, status, load_s, cluster)
    console.print(summary_table(summary, checks))
    write_plot(options.out, records, attack.events, t0_ns, load_s)
    console.print(f"plot written to {options.out}")
    verdict = verdict_line(anomalies)
    console.print(verdict, style="bold red" if anomalies else "bold green", markup=False, highlight=False)
    return DemoReport(1 if anomalies else 0, verdict, anomalies, summary, attack.events)


def _show(cluster: Any, load: BankLoad, attack: Attack, options: DemoOptions, console: Console,
          live: bool, t0: float) -> None:
    """The live view (or plain progress lines) until the load's duration is over AND the attack
    has run to its end, with some load after the last heal (to show the cluster recovered)."""
    tail_s = max(2.0, 0.1 * options.duration_s)

    def running() -> bool:
        now = time.monotonic()
        if now < t0 + options.duration_s or attack.thread.is_alive():
            return True
        return attack.finished_at is not None and now < attack.finished_at + tail_s
    snapshot_taken = False

    def frame() -> Any:
        nonlocal snapshot_taken
        now = time.monotonic()
        status = cluster.status(timeout_s=2.0)
        phase = f"t={now - t0:5.1f}s / {options.duration_s:.0f}s  phase: {attack.phase}"
        view = render(status, load=load.counters, phase=phase, now=now)
        if options.snapshot and not snapshot_taken and "down" in attack.phase:
            _write_snapshot(options.snapshot, view)
            snapshot_taken = True
        return view, status, phase

    if live:
        with Live(frame()[0], console=console, auto_refresh=False, transient=False) as screen:
            while running():
                time.sleep(0.5)  # display refresh period
                screen.update(frame()[0], refresh=True)
        return
    next_line = t0
    while running():
        if time.monotonic() >= next_line:
            _, status, phase = frame()
            c = load.counters
            print(f"{phase} | committed {c.committed} aborted {c.aborted} timed-out {c.timeouts} | "
                  f"{c.throughput(time.monotonic()):.1f} txn/s | {one_line(status)}", flush=True)
            next_line += 3.0
        time.sleep(0.25)


def _write_snapshot(path: str, view: Any) -> None:
    recorder = Console(record=True, width=110, file=open(os.devnull, "w"))
    recorder.print(view)
    with open(path, "w") as fh:
        fh.write(recorder.export_text())


def _summary(records: list[dict], status: dict, load_s: float, cluster: Any) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    p50, p99 = latency_ms(records)
    view, primary = current_view(status)
    evidence = {r["id"]: sum((r.get("evidence") or {}).values()) for r in status["replicas"] if r.get("alive")}
    return {
        "replicas (n, f)": f"{cluster.config.replica_count}, {cluster.config.f}",
        "load (s)": round(load_s, 1),
        "transactions submitted": len(records),
        "committed": len(ok),
        "aborted (guard: balance < 0)": sum(r["status"] == "fail" for r in records),
        "timed out (outcome unknown)": sum(r["status"] == "info" for r in records),
        "throughput (committed txn/s)": round(len(ok) / load_s, 2),
        "latency p50 / p99 (ms)": "-" if p50 is None else f"{p50:.0f} / {p99:.0f}",
        "final view (primary)": f"{view} ({primary})",
        "evidence per replica": json.dumps(evidence),
        "executed seq per replica": json.dumps({r["id"]: r.get("executed_seq") for r in status["replicas"]}),
    }
