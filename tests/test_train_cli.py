"""`ncsearch train`: fixed values only, a checkpoint folder, progress lines and an MLflow run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ncsearch.cli import main as cli_main

from test_train import BASE


@pytest.fixture()
def space(tmp_path) -> Path:
    data = copy.deepcopy(BASE)
    data["nc3"]["alpha"] = {"choice": [0.0, 10.0]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_an_open_field_is_a_one_line_config_error(space, tmp_path, capsys):
    code = cli_main(["train", str(space), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "still searched: nc3.alpha" in err[0] and "--set nc3.alpha=VALUE" in err[0]
    assert not (tmp_path / "out").exists()  # nothing started


def test_train_command_writes_a_checkpoint_and_an_mlflow_run(space, tmp_path, data_root, capfd):
    import mlflow
    import ray

    from ncsearch.models import load_mlm
    from ncsearch.tracking import default_tracking_uri

    out = tmp_path / "out"
    argv = ["train", str(space), "--set", "nc3.alpha=10", "--set", "baseline=bec", "--out", str(out),
            "--data-dir", str(data_root)]
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert cli_main(argv) == 0
    finally:
        ray.shutdown()
    printed = capfd.readouterr().out
    assert "baseline bec, nc3.alpha 10" in printed and "done at step 2" in printed
    checkpoint = out / "train" / "checkpoint_000002"
    assert f"checkpoint {checkpoint}" in printed
    model, _ = load_mlm(str(checkpoint / "model"))
    assert model.config.vocab_size == 30522
    assert [line.count('"step"') for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 1]

    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(out))
    experiment = client.get_experiment_by_name("train-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["nc3.alpha"] == "10.0" and run.data.params["baseline"] == "bec"
    assert run.data.tags["ncsearch.checkpoint"] == str(checkpoint)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2] and all(m.value > 0 for m in history)
    assert {"train/mlm_loss", "train/unc3", "train/nc3", "train/lr", "train/tokens_per_s"} <= set(run.data.metrics)

    # the same command again resumes the finished run instead of training from scratch
    # (a different spec in the same folder is refused)
    code = cli_main(["train", str(space), "--set", "nc3.alpha=0", "--out", str(out)])
    assert code == 2
