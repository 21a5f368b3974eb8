"""The shipped Ray cluster configs are valid for the installed Ray's cluster launcher schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "onprem.yaml"])
def test_cluster_yaml_matches_ray_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(config, schema)
    commands = " ".join(config.get("setup_commands", []))
    assert "RAY_TRAIN_V2_ENABLED=1" in commands and "NCSEARCH_CACHE_DIR" in commands
