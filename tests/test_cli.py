"""The command line without a cluster: every error path is ONE line on stderr and a non-zero exit
(never a traceback), configuration precedence is defaults < file < environment < flags, and the
transaction JSON of ``dtm-ray submit`` becomes the right ops."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dtm_ray import cli
from dtm_ray.txn.ops import Op


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """No test sees (or leaves) a real ~/.dtm-ray session, nor DTM_RAY_* settings of the caller."""
    monkeypatch.setenv("DTM_RAY_HOME", str(tmp_path / "home"))
    for key in list(os.environ):
        if key.startswith(cli.ENV_PREFIX) and key[len(cli.ENV_PREFIX):].lower() in _FIELDS:
            monkeypatch.delenv(key)


_FIELDS = {"f", "n", "participants", "clients", "data_dir", "address", "placement", "batch_size", "batch_wait_ms",
           "checkpoint_interval", "watermark_window", "view_change_timeout_ms", "client_retry_ms",
           "max_request_bytes", "auth_scheme", "vote_timeout_ms", "resend_ms", "max_ops", "policies", "tick_ms",
           "submit_timeout_s", "log_level", "log_json", "key_seed"}


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, code, expected", [
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["demo", "--n", "x"], 2, "argument --n: invalid int value: 'x'"),
    (["demo", "--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (["demo", "--duration", "-3"], 1, "--duration must be > 0"),
    (["demo", "--f", "1", "--n", "3"], 1, "n must be >= 3f+1 = 4"),
    (["demo", "--auth-scheme", "rsa"], 1, "auth_scheme must be one of ['ed25519', 'hmac'], got 'rsa'"),
    (["demo", "--participants", "db-0=sql"], 1, "unknown kind 'sql'; allowed: ['kv', 'queue']"),
    (["demo", "--participants", "db-0"], 2, "is not NAME=KIND"),
    (["demo", "--log-level", "chatty"], 1, "log_level must be one of"),
    (["demo", "--config", "/nonexistent/dtm.yaml"], 1, "no such file"),
    (["chaos", "byzantine", "0", "bogus"], 1, "unknown Byzantine behaviour 'bogus'; known: corrupt-auth"),
    (["chaos", "explode", "0"], 2, "invalid choice: 'explode'"),
    (["status"], 1, "no running cluster named 'default'"),
    (["status", "--name", "lab"], 1, "no running cluster named 'lab'"),
    (["stop"], 1, "no running cluster named 'default'"),
    (["start", "--name", "../etc"], 1, "cluster name '../etc' must be letters"),
    (["chaos", "crash", "1"], 1, "no running cluster"),
    (["submit", "{not json"], 1, "not valid JSON"),
    (["submit", '[["teleport", "db-0", "k"]]'], 1, "unknown op 'teleport'"),
    (["submit", '[["add", "db-0"]]'], 1, "add takes ['participant', 'key', 'value']"),
    (["submit", "[]"], 1, "non-empty JSON list"),
    (["audit", "alice:1"], 1, "no running cluster"),
    (["bench", "no-such-benchmark"], 1, "unknown benchmark 'no-such-benchmark'"),
])
def test_each_error_is_one_clear_line_and_a_nonzero_exit(argv, code, expected, capsys):
    got, out, err = run(argv, capsys)
    assert got == code, (argv, got, out, err)
    line = one_error_line(err)
    assert expected in line, line
    assert line.startswith("dtm-ray")


def test_bad_values_in_a_config_file_name_the_parameter(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("f: 1\nbatch_size: 0\n")
    code, _, err = run(["demo", "--config", str(bad)], capsys)
    assert code == 1 and "batch_size must be >= 1, got 0" in one_error_line(err)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("f = 1\nbatch = 3\n")
    code, _, err = run(["start", "--config", str(unknown)], capsys)
    assert code == 1 and "unknown configuration parameter(s) ['batch']" in one_error_line(err)


def test_a_bad_environment_value_names_the_parameter(monkeypatch, capsys):
    monkeypatch.setenv("DTM_RAY_BATCH_SIZE", "lots")
    code, _, err = run(["demo"], capsys)
    assert code == 1 and "batch_size must be an integer, got 'lots'" in one_error_line(err)


def test_audit_of_a_directory_without_logs(tmp_path, capsys):
    code, _, err = run(["audit", "alice:1", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and "no logs in" in one_error_line(err)


def test_audit_of_an_unknown_transaction(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    code, _, err = run(["audit", "alice:99", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and "no record of transaction 'alice:99'" in one_error_line(err)


# ---------------------------------------------------------------------------------------------
# Configuration precedence


def _args(argv):
    return cli.build_parser().parse_args(["start", *argv])


def test_precedence_defaults_file_environment_flags(tmp_path):
    path = tmp_path / "dtm.yaml"
    path.write_text("dtm:\n  batch_size: 50\n  tick_ms: 7\n  log_level: INFO\n")
    assert cli.resolve_config(_args([]), environ={}).batch_size == 100  # ClusterConfig's default
    assert cli.resolve_config(_args(["--config", str(path)]), environ={}).batch_size == 50
    env = {"DTM_RAY_BATCH_SIZE": "60", "DTM_RAY_CLIENTS": "ann,ben", "DTM_RAY_PARTICIPANTS": "x=kv,y=queue"}
    cfg = cli.resolve_config(_args(["--config", str(path)]), environ=env)
    assert (cfg.batch_size, cfg.tick_ms, cfg.clients) == (60, 7, ("ann", "ben"))
    assert dict(cfg.participants) == {"x": "kv", "y": "queue"}
    cfg = cli.resolve_config(_args(["--config", str(path), "--batch-size", "70", "--participants", "a=kv,q=queue"]),
                             environ=env)
    assert (cfg.batch_size, cfg.tick_ms, dict(cfg.participants)) == (70, 7, {"a": "kv", "q": "queue"})
    # a command's own default (the demo's quieter log level) sits below the file
    assert cli.resolve_config(_args(["--config", str(path)]), environ={}, log_level="WARNING").log_level == "INFO"
    assert cli.resolve_config(_args([]), environ={}, log_level="WARNING").log_level == "WARNING"


def test_every_config_parameter_but_policies_has_a_flag():
    parser = cli.build_parser()
    start = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("start"))
    flags = {opt for action in start._actions for opt in action.option_strings}
    for name in _FIELDS - {"policies"}:
        assert "--" + name.replace("_", "-") in flags, name
    cfg = cli.resolve_config(_args(["--log-json", "--f", "2", "--submit-timeout-s", "2.5"]), environ={})
    assert (cfg.log_json, cfg.replica_count, cfg.submit_timeout_s) == (True, 7, 2.5)


# ---------------------------------------------------------------------------------------------
# Transactions as JSON


def test_submit_json_arrays_and_objects_become_ops():
    ops = cli.parse_ops('[["add", "db-0", "acct:1", -5, {"min": 0}], ["add", "db-1", "acct:2", 5],'
                        ' ["get", "db-0", "acct:1"], ["enqueue", "mq-0", {"event": "moved"}], ["dequeue", "mq-0"],'
                        ' {"op": "put", "participant": "db-1", "key": "k", "value": [1, 2]},'
                        ' ["append", "db-1", "log", 3], ["delete", "db-0", "gone"]]')
    assert ops == [Op.add("db-0", "acct:1", -5, min=0), Op.add("db-1", "acct:2", 5), Op.get("db-0", "acct:1"),
                   Op.enqueue("mq-0", {"event": "moved"}), Op.dequeue("mq-0"), Op.put("db-1", "k", [1, 2]),
                   Op.append("db-1", "log", 3), Op.delete("db-0", "gone")]
    assert cli.parse_ops('["get", "db-0", "x"]') == [Op.get("db-0", "x")]  # one op on its own


def test_submit_json_rejects_guards_on_other_ops():
    with pytest.raises(cli.CliError, match=r"put does not take \['min'\]"):
        cli.parse_ops('[{"op": "put", "participant": "db-0", "key": "k", "value": 1, "min": 0}]')


# ---------------------------------------------------------------------------------------------
# Help and the console script


@pytest.mark.parametrize("command", [[], ["demo"], ["start"], ["status"], ["chaos"], ["chaos", "byzantine"],
                                     ["submit"], ["audit"], ["bench"], ["stop"]])
def test_help_of_every_command(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0 and "usage: dtm-ray" in out


def test_chaos_help_lists_the_catalogue(capsys):
    _, out, _ = run(["chaos", "byzantine", "--help"], capsys)
    for behaviour in ("equivocate", "mute", "forge-decision", "equivocate-vote"):
        assert behaviour in out


def test_bench_lists_the_benchmarks(capsys):
    code, out, _ = run(["bench"], capsys)
    assert code == 0 and "sim_consensus" in out


def test_the_console_script_reports_one_line(tmp_path):
    env = dict(os.environ, DTM_RAY_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "dtm_ray.cli", "status"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1
    assert one_error_line(proc.stderr) == ("dtm-ray status: error: no running cluster named 'default' "
                                           "(start one with `dtm-ray start`)")

