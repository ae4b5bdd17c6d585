"""``cluster.yaml`` is a valid Ray cluster-launcher file (checked against the schema Ray ships)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent


def ray_schema() -> dict:
    spec = importlib.util.find_spec("ray")  # located, not imported: this test must stay cheap
    path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def test_cluster_yaml_validates_against_the_ray_launcher_schema():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, ray_schema())
    assert config["provider"]["type"] == "local"
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])


def test_the_schema_does_reject_a_broken_file():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    del config["provider"]
    try:
        jsonschema.validate(config, ray_schema())
    except jsonschema.ValidationError as exc:
        assert "provider" in str(exc)
    else:
        raise AssertionError("the schema accepted a file without a provider")
