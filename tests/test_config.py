"""ClusterConfig: defaults, derived protocol configs, files, and one clear error per bad value."""

from __future__ import annotations

import pytest

from dtm_ray.config import ClusterConfig
from dtm_ray.errors import ConfigError


def test_defaults_build_a_3f_plus_1_cluster():
    cfg = ClusterConfig()
    assert cfg.replica_count == 4
    assert cfg.replicas == ("R0", "R1", "R2", "R3")
    assert cfg.participants == {"db-0": "kv", "db-1": "kv", "mq-0": "queue"}
    assert cfg.parties[:4] == ["R0", "R1", "R2", "R3"] and "alice" in cfg.parties
    assert ClusterConfig(f=2).replicas == tuple(f"R{i}" for i in range(7))
    assert ClusterConfig(f=1, n=6).replica_count == 6


def test_pbft_config_carries_the_parameters():
    pbft = ClusterConfig(f=1, batch_size=7, checkpoint_interval=8, watermark_window=16,
                         auth_scheme="ed25519").pbft_config()
    assert (pbft.n, pbft.f, pbft.batch_size, pbft.checkpoint_interval, pbft.auth_scheme) == (4, 1, 7, 8, "ed25519")


def test_client_requests_carry_mac_authenticators_by_default():
    assert ClusterConfig(f=1).auth_scheme == "hmac" == ClusterConfig(f=1).pbft_config().auth_scheme


@pytest.mark.parametrize("changes, names", [
    ({"f": 1, "n": 3}, ["n = 3", "3f+1 = 4"]),
    ({"f": -1}, ["f must be >= 0"]),
    ({"f": True}, ["f must be an integer"]),
    ({"participants": {"db-0": "sql"}}, ["db-0", "sql", "'kv'", "'queue'"]),
    ({"participants": {}}, ["participants"]),
    ({"participants": {"R1": "kv"}}, ["R1", "reserved"]),
    ({"participants": {"db 0": "kv"}}, ["db 0", "valid name"]),
    ({"clients": ("db-0",)}, ["db-0", "participant and client"]),
    ({"clients": ("a", "a")}, ["distinct"]),
    ({"vote_timeout_ms": 0}, ["vote_timeout_ms", ">= 1"]),
    ({"view_change_timeout_ms": -5}, ["view_change_timeout_ms"]),
    ({"batch_wait_ms": -1}, ["batch_wait_ms"]),
    ({"tick_ms": 2.5}, ["tick_ms must be an integer"]),
    ({"checkpoint_interval": 40}, ["watermark_window", "80"]),
    ({"auth_scheme": "rsa"}, ["auth_scheme", "ed25519", "hmac", "rsa"]),
    ({"log_level": "chatty"}, ["log_level", "DEBUG", "CHATTY"]),
    ({"placement": "random"}, ["placement", "spread"]),
    ({"submit_timeout_s": 0}, ["submit_timeout_s"]),
    ({"data_dir": ""}, ["data_dir"]),
    ({"policies": {"mallory": {}}}, ["mallory", "unknown client"]),
    ({"policies": {"alice": {"participants": ["nope"]}}}, ["alice", "nope"]),
    ({"policies": {"alice": {"tables": []}}}, ["alice", "'participants'"]),
])
def test_each_invalid_value_names_the_parameter(changes, names):
    with pytest.raises(ConfigError) as err:
        ClusterConfig(**changes)
    for name in names:
        assert name in str(err.value)


def test_txn_config_carries_participants_and_policies():
    txn = ClusterConfig(vote_timeout_ms=900, policies={"alice": {"participants": ["db-0"], "ops": ["get"]}}
                        ).txn_config()
    assert txn.vote_timeout_ms == 900 and txn.participants["mq-0"] == "queue"
    assert txn.policies["alice"].refusal("db-1", "get") is not None
    assert txn.policies["alice"].refusal("db-0", "get") is None


def test_log_level_is_case_insensitive():
    assert ClusterConfig(log_level="debug").log_level == "DEBUG"


def test_yaml_and_toml_files_load_and_unknown_keys_are_rejected(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("dtm:\n  f: 2\n  participants: {bank: kv, events: queue}\n  clients: [ann, ben]\n")
    cfg = ClusterConfig.from_file(y)
    assert cfg.replica_count == 7 and cfg.participants == {"bank": "kv", "events": "queue"}
    assert cfg.clients == ("ann", "ben")

    t = tmp_path / "c.toml"
    t.write_text('f = 1\nbatch_size = 10\n[participants]\n"db-0" = "kv"\n')
    assert ClusterConfig.from_file(t).batch_size == 10

    bad = tmp_path / "bad.yaml"
    bad.write_text("f: 1\nbatchsize: 10\n")
    with pytest.raises(ConfigError, match="batchsize.*allowed"):
        ClusterConfig.from_file(bad)
    with pytest.raises(ConfigError, match="must end in"):
        ClusterConfig.from_file(tmp_path / "c.json")
    broken = tmp_path / "broken.toml"
    broken.write_text("f = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        ClusterConfig.from_file(broken)


def test_to_dict_round_trips():
    cfg = ClusterConfig(f=2, participants={"x": "kv"}, clients=("c1",), data_dir="/tmp/d")
    assert ClusterConfig.from_dict(cfg.to_dict()) == cfg


def test_importing_dtm_ray_does_not_import_ray():
    import subprocess
    import sys

    code = ("import sys, importlib.util, dtm_ray; dtm_ray.ClusterConfig; dtm_ray.start; "
            "importlib.util.find_spec('dtm_ray.txn.ops') and dtm_ray.Op; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
