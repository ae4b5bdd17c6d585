"""The ``dtm-ray`` command line.

    dtm-ray demo [--duration S] [--f F] [--n N] [--data-dir DIR] [--out PLOT.png]
    dtm-ray start [--name NAME] [config flags]     a long-running cluster (a detached daemon)
    dtm-ray status [--json] [--watch]
    dtm-ray chaos crash|kill|restart|wipe|heal TARGET
    dtm-ray chaos byzantine TARGET BEHAVIOUR [--seed N]
    dtm-ray chaos partition 0,1 2,3 | heal-network | plan
    dtm-ray submit '[["add", "db-0", "acct:1", -5], ["add", "db-1", "acct:2", 5]]'
    dtm-ray audit TXN_ID
    dtm-ray bench [NAME [ARGS...]]
    dtm-ray stop

**Configuration precedence** (later wins): ClusterConfig's defaults < the file given with
``--config FILE.yaml|.toml`` < environment variables ``DTM_RAY_<PARAMETER>`` (e.g.
``DTM_RAY_BATCH_SIZE=50``; values parsed as YAML scalars) < command-line flags (``--batch-size 50``).
Every ClusterConfig parameter has a flag; ``policies`` only from a file.

Every error is one line on stderr and a non-zero exit: 2 for a bad command line, 1 for anything
else (a bad configuration value, no running cluster, a failed operation), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError, LocalError

PROG = "dtm-ray"
ENV_PREFIX = "DTM_RAY_"
DEMO_VIEW_CHANGE_TIMEOUT_MS = 2000
CHAOS_OPS = ("crash", "kill", "restart", "wipe", "byzantine", "heal", "partition", "heal-network", "plan")

_CONFIG_HELP = {
    "f": "Byzantine replicas tolerated (n defaults to 3f+1)",
    "n": "replicas (must be >= 3f+1)",
    "participants": "services, NAME=KIND,... with KIND kv or queue (default db-0=kv,db-1=kv,mq-0=queue)",
    "clients": "client names, comma-separated (default alice,bob,carol,dave)",
    "data_dir": "one RocksDB directory per party below it (default: a fresh temporary directory)",
    "address": "join a running Ray ('auto' or host:port) instead of starting a local one",
    "placement": "spread (replicas on distinct Ray nodes) or pack",
    "batch_size": "requests per PBFT batch",
    "batch_wait_ms": "how long the primary waits to fill a batch",
    "checkpoint_interval": "sequence numbers between checkpoints",
    "watermark_window": "log window (>= 2 * checkpoint interval)",
    "view_change_timeout_ms": "a backup suspects the primary after this",
    "client_retry_ms": "a client resends to all replicas after this",
    "max_request_bytes": "largest accepted request",
    "auth_scheme": "ed25519 or hmac",
    "vote_timeout_ms": "a transaction aborts if a participant has not voted by then",
    "resend_ms": "prepares and decisions are resent this often until acknowledged",
    "max_ops": "operations per transaction",
    "tick_ms": "how often each actor ticks and flushes (the flush interval)",
    "submit_timeout_s": "a client gives up waiting after this",
    "log_level": "TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL",
    "log_json": "also write JSON-lines logs under DATA_DIR/logs",
    "key_seed": "reproducible keys (tests only)",
    "load_pool_clients": "logical load clients for run_load(concurrency=...), keys derived (0: none)",
    "load_pool_generators": "load-generator actors hosting them",
}


class CliError(LocalError):
    """A command-line problem found after parsing (reported as one line, exit 1)."""


# ---------------------------------------------------------------------------------------------
# Parsing


class Parser(argparse.ArgumentParser):
    """argparse, but an error is ONE line (with where to find help), never the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _participants(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, kind = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=KIND (KIND: kv or queue)")
        out[name.strip()] = kind.strip()
    return out


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _field_type(field: dataclasses.Field) -> Any:
    if field.name == "participants":
        return _participants
    if field.name == "clients":
        return _names
    annotation = str(field.type)
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ClusterConfig parameter (policies: file only), all defaulting to 'not given'."""
    group = parser.add_argument_group("cluster configuration (defaults < --config file < DTM_RAY_* env < flags)")
    group.add_argument("--config", metavar="FILE", help="a .yaml/.yml/.toml file of ClusterConfig parameters")
    for field in dataclasses.fields(ClusterConfig):
        if field.name == "policies":
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = _CONFIG_HELP.get(field.name, f"ClusterConfig.{field.name}")
        if field.type in ("bool", bool):
            group.add_argument(flag, dest=f"cfg_{field.name}", action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f"cfg_{field.name}", type=_field_type(field), default=None,
                               metavar=field.name.upper(), help=help_text)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="A distributed transaction manager with a Byzantine-fault-"
                    "tolerant (PBFT) coordinator, on Ray.",
                    epilog="Configuration precedence: defaults < --config file < DTM_RAY_<PARAM> "
                    "environment variables < flags.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    demo = commands.add_parser("demo", help="a local cluster under load and attack, checked at the end",
                               description="Defaults of the demo itself: --log-level WARNING, "
                               f"--view-change-timeout-ms {DEMO_VIEW_CHANGE_TIMEOUT_MS}.")
    demo.add_argument("--duration", type=float, default=40.0, metavar="SECONDS",
                      help="length of the load; the fault timeline scales with it (default 40)")
    demo.add_argument("--out", default="out/dtm-ray-demo.png", metavar="PLOT.png",
                      help="where to write the throughput plot (default out/dtm-ray-demo.png)")
    demo.add_argument("--load-clients", type=int, default=256, metavar="K",
                      help="logical clients of the load generator (default 256)")
    demo.add_argument("--accounts", type=int, default=2000, metavar="K",
                      help="bank accounts per kv participant (default 2000)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the workload and the attack (default 1)")
    demo.add_argument("--plain", action="store_true", help="plain progress lines instead of the live view")
    demo.add_argument("--snapshot", metavar="FILE", help="save a text capture of the live view during the attack")
    add_config_flags(demo)

    start = commands.add_parser("start", help="start a long-running cluster (a detached daemon)")
    _add_name(start)
    start.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    add_config_flags(start)

    status = commands.add_parser("status", help="the state of a running cluster")
    _add_name(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--watch", action="store_true", help="a live view until Ctrl-C")

    chaos = commands.add_parser("chaos", help="inject a fault into a running cluster",
                                description="Targets are replica indices (2 = R2) or party names (db-0, alice).")
    _add_name(chaos)
    ops = chaos.add_subparsers(dest="op", metavar="OP", parser_class=Parser)
    ops.required = True
    for op, text in (("crash", "kill the actor; Ray restarts it and it recovers from its disk"),
                     ("kill", "kill the actor for good (until restart)"),
                     ("restart", "create a killed party again from its directory"),
                     ("wipe", "kill it and start it again with an empty disk (state transfer)"),
                     ("heal", "remove a Byzantine behaviour")):
        ops.add_parser(op, help=text).add_argument("target")
    byz = ops.add_parser("byzantine", help="make a party Byzantine (see `dtm-ray chaos byzantine --help`)",
                         description=f"Behaviours: {', '.join(_catalogue())}.")
    byz.add_argument("target")
    byz.add_argument("behaviour", metavar="BEHAVIOUR", help=f"one of: {', '.join(_catalogue())}")
    byz.add_argument("--seed", type=int, default=0)
    part = ops.add_parser("partition", help="split parties into groups that cannot talk, e.g. 0,1 2,3")
    part.add_argument("groups", nargs="+", type=_names, metavar="GROUP")
    ops.add_parser("heal-network", help="reconnect everybody")
    ops.add_parser("plan", help="the faults in force")

    submit = commands.add_parser("submit", help="submit one transaction given as JSON",
                                 description='Ops as JSON: [["add", "db-0", "acct:1", -5, {"min": 0}], '
                                 '["get", "db-1", "acct:2"], ["enqueue", "mq-0", {"x": 1}]] or objects '
                                 '{"op": "add", "participant": "db-0", "key": "acct:1", "value": -5, "min": 0}.')
    _add_name(submit)
    submit.add_argument("ops", metavar="JSON")
    submit.add_argument("--client", default=None, help="the client submitting (default: the first configured)")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS")

    audit = commands.add_parser("audit", help="one transaction's life across every party, in time order")
    audit.add_argument("txn_id", metavar="TXN_ID", help="e.g. alice:12")
    _add_name(audit)
    audit.add_argument("--data-dir", default=None, help="read the logs there (default: the running cluster's)")

    bench = commands.add_parser("bench", help="run a benchmark from benchmarks/ (JSON on stdout)")
    bench.add_argument("benchmark", nargs="?", help="its name; omit to list them")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")

    stop = commands.add_parser("stop", help="stop the cluster `dtm-ray start` runs")
    _add_name(stop)
    return parser


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="default", help="which long-running cluster (default: default)")


def _catalogue() -> list[str]:
    from dtm_ray.faults import CATALOGUE

    return sorted(CATALOGUE)


# ---------------------------------------------------------------------------------------------
# Configuration: defaults < file < environment < flags


def resolve_config(args: argparse.Namespace, environ: dict[str, str] | None = None,
                   **defaults: Any) -> ClusterConfig:
    """The ClusterConfig the command line asks for; ``defaults`` are the command's own defaults
    (below the file). Invalid values raise ConfigError naming the parameter."""
    import yaml

    environ = os.environ if environ is None else environ
    values: dict[str, Any] = dict(defaults)
    if getattr(args, "config", None):
        if not os.path.exists(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        values.update(_file_values(args.config))
    names = [f.name for f in dataclasses.fields(ClusterConfig)]
    for name in names:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            try:
                values[name] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid value for {name}") from None
            if name == "clients" and isinstance(values[name], str):
                values[name] = _names(values[name])
            if name == "participants" and isinstance(values[name], str):
                try:
                    values[name] = _participants(values[name])
                except argparse.ArgumentTypeError as exc:
                    raise ConfigError(f"{ENV_PREFIX}PARTICIPANTS: {exc}") from None
    for name in names:
        flag = getattr(args, f"cfg_{name}", None)
        if flag is not None:
            values[name] = flag
    return ClusterConfig.from_dict(values)


def _file_values(path: str) -> dict[str, Any]:
    """The parameters the file sets (validated by ClusterConfig.from_file first)."""
    ClusterConfig.from_file(path)  # every error, with its parameter named
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".toml"):
        import tomllib

        data = tomllib.loads(raw.decode())
    else:
        import yaml

        data = yaml.safe_load(raw) or {}
    if set(data) == {"dtm"}:
        data = data["dtm"]
    return dict(data)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_demo(args: argparse.Namespace) -> int:
    from dtm_ray import demo

    if args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.load_clients < 1:
        raise ConfigError(f"--load-clients must be >= 1, got {args.load_clients}")
    if args.accounts < 2:
        raise ConfigError(f"--accounts must be >= 2, got {args.accounts}")
    # the demo's own defaults (below a file, the environment and flags): quiet actor logs, and a
    # view-change timer that a loaded laptop's latency does not trip without a fault (n = 7 stalls
    # in cascading view changes at 500 ms on a busy 2-core machine)
    cfg = resolve_config(args, log_level="WARNING", view_change_timeout_ms=DEMO_VIEW_CHANGE_TIMEOUT_MS)
    options = demo.DemoOptions(duration_s=args.duration, out=args.out, load_clients=args.load_clients,
                               accounts_per_participant=args.accounts, seed=args.seed,
                               live=False if args.plain else None, snapshot=args.snapshot)
    report = demo.run(cfg, options)
    return report.exit_code


def cmd_start(args: argparse.Namespace) -> int:
    from dtm_ray import session

    cfg = resolve_config(args)
    if args.foreground:
        print(f"starting cluster {args.name!r} in the foreground (Ctrl-C stops it)", flush=True)
        session.serve(args.name, cfg)
        return 0
    print(f"starting cluster {args.name!r} (n={cfg.replica_count}, f={cfg.f}) ...", flush=True)
    info = session.start_daemon(cfg, args.name)
    attach = "dtm_ray.connect()" if args.name == "default" else f"dtm_ray.connect({args.name!r})"
    print(f"cluster {args.name!r} running: pid {info['pid']}, Ray at {info['address']}, data in "
          f"{info['data_dir']}\nattach from Python with `import dtm_ray; c = {attach}`; "
          f"stop with `dtm-ray stop{'' if args.name == 'default' else ' --name ' + args.name}`")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from dtm_ray import session

    info = session.stop_daemon(args.name)
    print(f"cluster {args.name!r} stopped (pid {info['pid']}); its data stays in {info['data_dir']}")
    return 0


def _attach(args: argparse.Namespace):
    from dtm_ray import session

    return session.connect(args.name)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dtm_ray import watch

    cluster = _attach(args)
    try:
        if args.watch:
            watch.watch(cluster)
            return 0
        status = cluster.status()
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
            return 0
        console = Console()
        console.print(f"cluster {args.name!r}: {watch.one_line(status)}")
        console.print(watch.replica_table(status))
        console.print(watch.participant_table(status))
        plan = status.get("chaos") or {}
        if any(plan.values()):
            console.print(f"faults in force: {json.dumps(plan)}")
        return 0
    finally:
        cluster.shutdown()


def _target(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def cmd_chaos(args: argparse.Namespace) -> int:
    if args.op == "byzantine" and args.behaviour not in _catalogue():
        raise ConfigError(f"unknown Byzantine behaviour {args.behaviour!r}; known: {', '.join(_catalogue())}")
    cluster = _attach(args)
    try:
        chaos = cluster.chaos
        if args.op == "byzantine":
            result = chaos.byzantine(_target(args.target), args.behaviour, args.seed)
            print(f"{result} now behaves as {args.behaviour!r}")
        elif args.op == "partition":
            groups = chaos.partition(*[[_target(t) for t in group] for group in args.groups])
            print(f"partitioned: {' | '.join(','.join(g) for g in groups)}")
        elif args.op == "heal-network":
            chaos.heal_network()
            print("network healed")
        elif args.op == "plan":
            print(json.dumps(chaos.plan()))
        else:
            party = getattr(chaos, args.op)(_target(args.target))
            print(f"{args.op}: {party} done")
        return 0
    finally:
        cluster.shutdown()


def parse_ops(text: str) -> list[Any]:
    """Ops from JSON: a list of ``[kind, participant, *args, {min/max}]`` arrays or objects."""
    from dtm_ray.txn.ops import Op

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"the transaction is not valid JSON: {exc}") from None
    if isinstance(data, dict) or (isinstance(data, list) and data and isinstance(data[0], str)):
        data = [data]  # one op given on its own
    if not isinstance(data, list) or not data:
        raise CliError("the transaction must be a non-empty JSON list of ops")
    return [_op(Op, item, i) for i, item in enumerate(data)]


def _op(Op: Any, item: Any, index: int) -> Any:
    kinds = {"get": ("key",), "put": ("key", "value"), "add": ("key", "value"), "append": ("key", "value"),
             "delete": ("key",), "enqueue": ("value",), "dequeue": ()}
    if isinstance(item, list) and len(item) >= 2 and isinstance(item[0], str):
        guards = item[-1] if isinstance(item[-1], dict) and item[0] == "add" else {}
        positional = item[2:-1] if guards else item[2:]
        kind, participant = item[0], item[1]
        fields = dict(zip(kinds.get(kind, ()), positional), **guards)
        if kind in kinds and len(positional) != len(kinds[kind]):
            raise CliError(f"op {index}: {kind} takes {['participant', *kinds[kind]]}, got {item[1:]}")
    elif isinstance(item, dict) and isinstance(item.get("op"), str):
        kind, participant = item["op"], item.get("participant")
        fields = {k: v for k, v in item.items() if k not in ("op", "participant")}
    else:
        raise CliError(f"op {index}: expected [kind, participant, ...] or an object with 'op', got {item!r}")
    if kind not in kinds:
        raise CliError(f"op {index}: unknown op {kind!r}; ops: {', '.join(kinds)}")
    allowed = set(kinds[kind]) | ({"min", "max"} if kind == "add" else set())
    extra = sorted(set(fields) - allowed)
    if extra:
        raise CliError(f"op {index}: {kind} does not take {extra}")
    if kind == "add":
        return Op.add(participant, fields.get("key"), fields.get("value"), min=fields.get("min"), max=fields.get("max"))
    if kind in ("enqueue",):
        return Op.enqueue(participant, fields.get("value"))
    if kind == "dequeue":
        return Op.dequeue(participant)
    return getattr(Op, kind)(participant, *(fields.get(name) for name in kinds[kind]))


def cmd_submit(args: argparse.Namespace) -> int:
    ops = parse_ops(args.ops)
    cluster = _attach(args)
    try:
        client = cluster.client(args.client or cluster.config.clients[0])
        result = client.submit(ops, timeout_s=args.timeout)
        print(json.dumps({"txn_id": result.txn_id, "committed": result.committed, "outcome": result.outcome,
                          "reads": result.reads, "reason": result.reason}, default=repr))
        return 0 if result.committed else 3
    finally:
        cluster.shutdown()


def cmd_audit(args: argparse.Namespace) -> int:
    from dtm_ray import logs, session

    data_dir = args.data_dir or session.read_session(args.name)["data_dir"]
    directory = logs.log_dir(data_dir)
    if not os.path.isdir(directory):
        raise CliError(f"no logs in {data_dir!r} (expected {directory})")
    records = logs.audit(directory, args.txn_id)
    if not records:
        raise CliError(f"no record of transaction {args.txn_id!r} in {directory} (ids look like alice:12)")
    import datetime

    for r in records:
        when = datetime.datetime.fromtimestamp(r["time"], datetime.timezone.utc).strftime("%H:%M:%S.%f")
        print(f"{when} {r['role']}:{r['party']} v={r['view']} s={r['seq']} | {r['message']}")
    return 0


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    directory = benchmarks_dir()
    available = sorted(p.stem for p in directory.glob("*.py") if p.stem != "__init__") if directory.is_dir() else []
    if not available:
        raise CliError("benchmarks are not available in this installation: run `dtm-ray bench` from a clone "
                       "installed with `pip install -e .`")
    if args.benchmark is None:
        print("benchmarks (run `dtm-ray bench NAME [ARGS]`; each prints JSON):")
        for name in available:
            print(f"  {name:20s} {_first_doc_line(directory / (name + '.py'))}")
        return 0
    if args.benchmark not in available:
        raise CliError(f"unknown benchmark {args.benchmark!r}; available: {', '.join(available)}")
    return subprocess.call([sys.executable, "-m", f"benchmarks.{args.benchmark}", *args.args],
                           cwd=directory.parent)


def _first_doc_line(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except SyntaxError:
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


COMMANDS = {"demo": cmd_demo, "start": cmd_start, "stop": cmd_stop, "status": cmd_status, "chaos": cmd_chaos,
            "submit": cmd_submit, "audit": cmd_audit, "bench": cmd_bench}


# ---------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except LocalError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, not a traceback (DTM_RAY_DEBUG=1 shows it)
        if os.environ.get("DTM_RAY_DEBUG"):
            raise
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (ValueError, LocalError)):  # an operation refused remotely: say why
            print(f"{PROG} {args.command}: error: {_describe(cause)}", file=sys.stderr)
        else:
            print(f"{PROG} {args.command}: error: {_describe(exc)} (DTM_RAY_DEBUG=1 shows the traceback)",
                  file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    """An exception as one line; a Ray task error is described by its cause."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    if isinstance(exc, (ValueError, LocalError)):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
