"""``dtm-ray demo``: a local BFT cluster under a bank-transfer load, attacked on a timeline, then
checked.

The story it tells, on a timeline proportional to ``duration_s`` (the load's length):

    0%   healthy: ~256 clients move money between thousands of accounts on two kv participants
    20%  the primary turns Byzantine and EQUIVOCATES (different pre-prepares to different backups)
    40%  it is healed (the cluster has meanwhile exposed it and changed view)
    50%  a backup CRASHES (killed: its actor is gone)
    65%  it RESTARTS from its RocksDB directory and catches up
    100% the load stops; decisions drain; the invariants are checked

The load is one load-generator actor (``actors.loadgen_actor``) whose logical clients are
declared in the cluster's configuration; its records, returned when the load ends, feed the
checks, the summary (txn/s overall and per phase of the attack) and the plot.

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

import dataclasses
import glob
import json
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError
from dtm_ray.watch import current_view, one_line, render

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
    load_clients: int = 256  # logical clients of the one load generator (closed loop)
    accounts_per_participant: int = 2000  # many accounts: little contention, a setup of ~63 transactions
    balance: int = 100
    seed: int = 1
    submit_timeout_s: float = 30.0  # rides out a view change (a timed-out logical client is retired)
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
# The load: one load-generator actor driving many logical clients (``actors.loadgen_actor``)


GENERATOR = "lg0"  # the load generator's party id; its logical clients are "lg0..c<i>"


def load_client_names(count: int) -> list[str]:
    """As ``actors.loadgen_actor.client_names``, without importing Ray: Ray reads its auth mode
    when imported, and ``run`` sets that mode only just before it starts the cluster."""
    from actors.names import MUX

    return [f"{GENERATOR}{MUX}c{i}" for i in range(count)]


def with_load_clients(cfg: ClusterConfig, count: int) -> ClusterConfig:
    """The configuration with the generator's logical clients declared after the configured ones
    (replicas accept declared clients only, so they must be known before the cluster starts)."""
    return dataclasses.replace(cfg, clients=(*cfg.clients, *load_client_names(count)))


def bank_accounts(kv: list[str], per_participant: int) -> list[tuple[str, str]]:
    return [(p, f"acct:{i}") for p in kv for i in range(per_participant)]


def open_accounts(client: Any, accounts: list[tuple[str, str]], balance: int, max_ops: int) -> int:
    """Put ``balance`` in every account, ``max_ops`` puts per transaction; returns the total."""
    from dtm_ray.txn.ops import Op

    puts = [Op.put(p, k, balance) for p, k in accounts]
    for start in range(0, len(puts), max_ops):
        result = client.submit(puts[start:start + max_ops])
        if not result.committed:
            raise RuntimeError(f"could not open the accounts: {result.reason}")
    return balance * len(accounts)


def read_share_for(accounts: list[tuple[str, str]], max_ops: int) -> float:
    """Whole-bank reads (snapshots the bank checker sums) only while the bank fits in one
    transaction; a bigger bank is checked on its final balances."""
    return 0.1 if len(accounts) <= max_ops else 0.0


class GeneratorLoad:
    """Closed-loop bank transfers from ``clients`` logical clients of one load-generator actor;
    its records (start/end timestamps, as the checkers want them) come back when it finishes."""

    def __init__(self, cluster: Any, clients: int, accounts: list[tuple[str, str]], options: DemoOptions,
                 read_share: float) -> None:
        self.cluster = cluster
        self.clients = clients
        self.accounts = accounts
        self.options = options
        self.read_share = read_share
        self.actor: Any = None
        self.ref: Any = None

    def start_actor(self) -> None:
        # as benchmarks.bench_ray.start_generators on main (copied: that module is being reshaped)
        import ray

        from actors.loadgen_actor import LoadGenActor, client_ring
        from actors.names import actor_name

        cfg = self.cluster.config
        spec = {"party": GENERATOR, "namespace": self.cluster.namespace, "config": cfg.to_dict(),
                "keys": {c: client_ring(self.cluster._keyrings[c], list(cfg.replicas))
                         for c in load_client_names(self.clients)}}
        self.actor = ray.remote(LoadGenActor).options(name=actor_name(GENERATOR), namespace=self.cluster.namespace,
                                                      num_cpus=0, max_concurrency=10_000).remote(spec)
        ray.get(self.actor.ping.remote(), timeout=120)

    def start(self) -> None:
        # a client whose transaction times out is retired by the generator: the timeout is long
        # enough to ride out a view change, so that the load after the attack is the full load
        params = {"accounts": [list(a) for a in self.accounts], "read_share": self.read_share}
        self.ref = self.actor.run.remote("bank", duration_s=self.options.duration_s, concurrency=self.clients,
                                         seed=self.options.seed, timeout_s=self.options.submit_timeout_s,
                                         params=params)

    def done(self) -> bool:
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self, timeout_s: float) -> dict:
        import ray

        return ray.get(self.ref, timeout=timeout_s)

    def outstanding(self) -> int | None:
        """Transactions in flight at the generator (None when it did not answer in time)."""
        import ray

        try:
            return ray.get(self.actor.status.remote(), timeout=2.0).get("outstanding")
        except Exception:  # a busy generator: the live view says so rather than stalling
            return None

    def kill(self) -> None:
        import ray

        if self.actor is not None and ray.is_initialized():
            ray.kill(self.actor, no_restart=True)


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
    snapshots = (f"{len(reads)} whole-bank reads consistent" if reads
                 else "no whole-bank reads (the bank is larger than one transaction)")
    results["bank"] = f"ok: total {total} conserved, {snapshots}" if not bank else f"{len(bank)} anomalies"

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


def write_plot(path: str, records: list[dict], events: list[FaultEvent], t0_ns: int, duration_s: float,
               phases: list[PhaseRate] | None = None, clients: int | None = None) -> None:
    """Committed (and aborted) txn/s per second, the fault windows, and each phase's mean rate."""
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
    for phase in phases or []:  # the mean of each phase, as the summary gives it
        ax.hlines(phase.per_s, phase.start_s, phase.end_s, color="black", linestyle=":", linewidth=1.2)
        ax.text((phase.start_s + phase.end_s) / 2, phase.per_s, f"{phase.per_s:.0f}/s", fontsize=8,
                ha="center", va="bottom")
    ax.set_ylim(0, top * 1.35)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("transactions per second")
    who = f" from {clients} clients" if clients else ""
    ax.set_title(f"dtm-ray demo: bank transfers{who} through a Byzantine primary and a crash\n"
                 "(dotted: each phase's mean committed txn/s)", fontsize=10)
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
    if options.load_clients < 1:
        raise ConfigError(f"the demo needs at least one load client, got {options.load_clients}")
    if options.accounts_per_participant < 2:
        raise ConfigError(f"the bank needs at least 2 accounts per participant, got {options.accounts_per_participant}")
    if len(cfg.clients) < 1:
        raise ConfigError("the demo needs a client to open the accounts (ClusterConfig.clients)")
    kv = [p for p, kind in cfg.participants.items() if kind == "kv"]
    if len(kv) < 1:
        raise ConfigError("the demo needs at least one participant of kind 'kv' for the bank")
    cfg = with_load_clients(cfg, options.load_clients)
    console.print(f"[bold]dtm-ray demo[/]: n={cfg.replica_count} replicas (f={cfg.f}), participants "
                  f"{dict(cfg.participants)}, load {options.duration_s:.0f} s from {options.load_clients} "
                  f"logical clients of one load generator")
    if cfg.address is None:  # Ray's default for a local Ray, said explicitly (and so not announced)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    started = time.monotonic()
    cluster = None
    load = None
    try:
        console.print("starting the cluster (Ray and one actor per party) ...")
        cluster = dtm_ray.start(cfg)
        console.print(f"cluster up in {time.monotonic() - started:.1f} s; data in {cluster.data_dir}")
        accounts = bank_accounts(kv, options.accounts_per_participant)
        load = GeneratorLoad(cluster, options.load_clients, accounts, options, read_share_for(accounts, cfg.max_ops))
        report = _run_on(cluster, load, options, console, live)
        report.summary["wall time (s)"] = round(time.monotonic() - started, 1)
        return report
    except KeyboardInterrupt:
        console.print("interrupted: shutting the cluster down")
        return DemoReport(130, "interrupted", [], {})
    finally:
        if load is not None:
            load.kill()
        if cluster is not None:
            cluster.shutdown()


def _run_on(cluster: Any, load: GeneratorLoad, options: DemoOptions, console: Console, live: bool) -> DemoReport:
    accounts = load.accounts
    setup_started = time.monotonic()
    total = open_accounts(cluster.client(cluster.config.clients[0]), accounts, options.balance,
                          cluster.config.max_ops)
    load.start_actor()
    console.print(f"{len(accounts)} accounts opened with {options.balance} each (total {total}) in "
                  f"{time.monotonic() - setup_started:.1f} s; load starts")

    t0, t0_ns = time.monotonic(), time.time_ns()
    load.start()
    attack = Attack(cluster, options.duration_s, t0, options.seed)
    attack.thread.start()
    try:
        _show(cluster, load, attack, options, console, live, t0)
        run = load.result(timeout_s=options.submit_timeout_s + 60)
    except KeyboardInterrupt:
        attack.stop.set()  # the generator is killed with the cluster
        raise
    load_s = time.monotonic() - t0
    console.print(f"load stopped after {load_s:.1f} s; draining decisions and checking ...")

    records = run["records"]
    healed_at = attack.events[-1].at_s if attack.events and not attack.error else None
    anomalies, checks = check_everything(cluster, accounts, total, records, healed_at, t0_ns)
    if attack.error:
        checks["attack"] = f"a chaos step failed: {attack.error}"
    if run["clients_lost"]:
        checks["load"] = (f"{run['clients_lost']} of {load.clients} logical clients retired after a "
                          f"{options.submit_timeout_s:.0f} s timeout")
    status = cluster.status(timeout_s=5.0)
    phases = phase_rates(records, attack.events, t0_ns, load_s)
    summary = _summary(records, status, load_s, cluster, load, phases)
    console.print(summary_table(summary, checks))
    write_plot(options.out, records, attack.events, t0_ns, load_s, phases=phases, clients=load.clients)
    console.print(f"plot written to {options.out}")
    verdict = verdict_line(anomalies)
    console.print(verdict, style="bold red" if anomalies else "bold green", markup=False, highlight=False)
    return DemoReport(1 if anomalies else 0, verdict, anomalies, summary, attack.events)


def _show(cluster: Any, load: GeneratorLoad, attack: Attack, options: DemoOptions, console: Console,
          live: bool, t0: float) -> None:
    """The live view (or plain progress lines) until the generator has finished its load AND the
    attack has run to its end. The generator's records come at the end: meanwhile the progress is
    the participants' applied commits (``cluster.status()``) and the generator's transactions in
    flight."""
    progress = CommitProgress()

    def running() -> bool:
        return not load.done() or attack.thread.is_alive()
    snapshot_taken = False

    def frame() -> Any:
        nonlocal snapshot_taken
        now = time.monotonic()
        status = cluster.status(timeout_s=2.0)
        phase = f"t={now - t0:5.1f}s / {options.duration_s:.0f}s  phase: {attack.phase}"
        line = progress.line(status, load.outstanding(), now)
        view = Group(render(status, phase=phase, now=now), Text(line))
        if options.snapshot and not snapshot_taken and "down" in attack.phase:
            _write_snapshot(options.snapshot, view)
            snapshot_taken = True
        return view, status, phase, line

    if live:
        with Live(frame()[0], console=console, auto_refresh=False, transient=False) as screen:
            while running():
                time.sleep(0.5)  # display refresh period
                screen.update(frame()[0], refresh=True)
        return
    next_line = t0
    while running():
        if time.monotonic() >= next_line:
            _, status, phase, line = frame()
            print(f"{phase} | {line} | {one_line(status)}", flush=True)
            next_line += 3.0
        time.sleep(0.25)  # polling the generator's end and the display period, not a synchronisation


class CommitProgress:
    """The load's progress while it runs, from what the cluster reports: commits applied at the
    kv participants (a transfer between two participants counts at each), and their rate over the
    last few frames."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: list[tuple[float, int]] = []

    def line(self, status: dict, outstanding: int | None, now: float) -> str:
        kv = {name: p for name, p in status.get("participants", {}).items() if p.get("kind") == "kv"}
        applied = sum(p.get("committed") or 0 for p in kv.values())
        # the window's samples, and the last one before it as the baseline (a frame can be late)
        older = [sample for sample in self.samples if now - sample[0] > self.window_s][-1:]
        self.samples = older + [(t, n) for t, n in self.samples if now - t <= self.window_s] + [(now, applied)]
        (t_first, n_first), rate = self.samples[0], 0.0
        if now > t_first:
            rate = (applied - n_first) / (now - t_first)
        in_flight = "?" if outstanding is None else str(outstanding)
        return (f"commits applied at {'+'.join(sorted(kv))}: {applied} ({rate:.0f}/s) | "
                f"in flight at the load generator: {in_flight}")


def _write_snapshot(path: str, view: Any) -> None:
    recorder = Console(record=True, width=110, file=open(os.devnull, "w"))
    recorder.print(view)
    with open(path, "w") as fh:
        fh.write(recorder.export_text())


@dataclass
class PhaseRate:
    name: str
    start_s: float
    end_s: float
    committed: int

    @property
    def per_s(self) -> float:
        return self.committed / (self.end_s - self.start_s) if self.end_s > self.start_s else 0.0


def phase_rates(records: list[dict], events: list[FaultEvent], t0_ns: int, load_s: float) -> list[PhaseRate]:
    """Committed transactions per phase of the attack (a phase runs from one fault event to the
    next; a transaction counts in the phase where its commit reached the client)."""
    names = ["healthy"] + [event.label for event in events]
    bounds = [0.0] + [event.at_s for event in events] + [max(load_s, events[-1].at_s if events else 0.0)]
    phases = [PhaseRate(name, bounds[i], bounds[i + 1], 0) for i, name in enumerate(names)]
    for r in records:
        if r["status"] != "ok" or r["end_ns"] is None:
            continue
        at = (r["end_ns"] - t0_ns) / 1e9
        for phase in phases:
            if phase.start_s <= at < phase.end_s or (phase is phases[-1] and at >= phase.end_s):
                phase.committed += 1
                break
    return phases


def _summary(records: list[dict], status: dict, load_s: float, cluster: Any, load: GeneratorLoad,
             phases: list[PhaseRate]) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    p50, p99 = latency_ms(records)
    view, primary = current_view(status)
    evidence = {r["id"]: sum((r.get("evidence") or {}).values()) for r in status["replicas"] if r.get("alive")}
    participants = len({p for p, _ in load.accounts})
    summary = {
        "replicas (n, f)": f"{cluster.config.replica_count}, {cluster.config.f}",
        "load": (f"{load.clients} logical clients (1 load generator), "
                 f"{len(load.accounts) // participants} accounts x {participants} participants"),
        "load (s)": round(load_s, 1),
        "transactions submitted": len(records),
        "committed": len(ok),
        "aborted (guard: balance < 0)": sum(r["status"] == "fail" for r in records),
        "timed out (outcome unknown)": sum(r["status"] == "info" for r in records),
        "throughput (committed txn/s)": round(len(ok) / load_s, 2),
    }
    for i, phase in enumerate(phases):
        summary[f"  phase {i}: {phase.name}"] = f"{phase.per_s:.0f} txn/s ({phase.start_s:.0f}-{phase.end_s:.0f} s)"
    summary.update({
        "latency p50 / p99 (ms)": "-" if p50 is None else f"{p50:.0f} / {p99:.0f}",
        "final view (primary)": f"{view} ({primary})",
        "evidence per replica": json.dumps(evidence),
        "executed seq per replica": json.dumps({r["id"]: r.get("executed_seq") for r in status["replicas"]}),
    })
    return summary
