"""The paper's baselines for real: short Ray Train V2 runs on `minilm-l6`, and a real search over
baselines through Ray Tune + Optuna + MLflow (bad input: test_baselines_bad_input.py).

The training runs share one local Ray instance; each is 2 steps of 4 sequences, enough to check that a
method trains through Ray Train (its own streams, passes and losses), reports its terms, writes a
checkpoint that loads as a plain masked LM, and that NC3 adds on top.
"""

from __future__ import annotations

import copy
import math

import pytest
import yaml


from conftest_search import run as run_cli
from test_train import BASE, make_spec, model_path, ray_session  # noqa: F401 (fixtures)

NEW_METHODS = ("mabel", "ase", "adept", "fisher_lowrank")


@pytest.mark.parametrize("baseline", NEW_METHODS)
def test_each_paper_baseline_trains_through_ray_train_with_nc3(baseline, ray_session, model_path, data_root, tmp_path):
    from ncsearch.models import load_mlm
    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    # ASE's EWC Fisher over a 16-sentence sample instead of its default 396 (~55 s on one core); the
    # Fisher itself is checked against its definition in test_baseline_ase.py.
    small = {"baseline_options.ase.fisher_sentences": 16} if baseline == "ase" else {}
    spec = make_spec(baseline=baseline, **{"nc3.alpha": 10.0}, **small)
    log = tmp_path / "metrics.jsonl"
    outcome = fit_trial(spec, data_root=data_root, storage_path=tmp_path / "runs", name=baseline,
                        callbacks=[metrics_log(log)], model_path=model_path)
    history = read_metrics_log(log)
    assert [row["step"] for row in history] == [1, 2]
    own = {k for k in history[0] if k.startswith("train/")} - {
        "train/loss", "train/mlm_loss", "train/tokens_per_s", "train/unc3", "train/nc3", "train/nc3_classes",
        "train/lr", "train/bf16", "train/resumed_from", "train/peak_rss_mb",
    }
    for row in history:
        assert math.isfinite(row["train/loss"]) and math.isfinite(row["train/unc3"]), row
        mlm = 0.0 if math.isnan(row["train/mlm_loss"]) else row["train/mlm_loss"]
        total = mlm + sum(row[k] for k in own) + 10.0 * row["train/unc3"]
        assert row["train/loss"] == pytest.approx(total, rel=1e-4), row
    from ncsearch.debias import get_baseline

    if not get_baseline(baseline).mlm_stream:  # a method trained on its own losses reports them
        assert own, f"{baseline} reported none of its own loss terms"
    import torch

    from ncsearch.heads import encode, mlm_head

    model, tokenizer = load_mlm(str(outcome.model_dir))  # a masked LM ncsearch scores, whatever trained
    assert type(model).__name__ == ("PrefixMaskedLM" if baseline == "adept" else "BertForMaskedLM")
    ids = tokenizer(["she is a nurse."], return_tensors="pt")
    with torch.no_grad():
        hidden = encode(model, ids["input_ids"], ids["attention_mask"])
    assert hidden.shape[:2] == ids["input_ids"].shape and mlm_head(model).weight.shape[0] == len(tokenizer)


# ----- a real search over baselines --------------------------------------------------------------------


def test_a_search_over_baselines_runs_through_tune_optuna_and_mlflow(tmp_path):
    import optuna
    from mlflow import MlflowClient

    space = copy.deepcopy(BASE)
    space.update(
        name="baselines-e2e",
        # two methods with their own streams and pre-flight; ASE (a diagonal Fisher over its examples
        # on every run, about a minute) trains through Ray Train in the test above
        baseline={"grid": ["mabel", "fisher_lowrank"]},
        search={"algorithm": "grid", "replicates": 1, "control": False, "max_concurrent": 2},
    )
    space["nc3"]["alpha"] = 10.0
    space["eval"].update(limits={"stereoset": 20, "perplexity": 8}, domains=["gender"])
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    proc = run_cli("run", str(path), "--storage", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 runs finished, 0 failed" in proc.stdout

    run_dir = tmp_path / "runs" / "baselines-e2e"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("baselines-e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("ncsearch.role") == "seed"]  # one per training run
    assert sorted(r.data.params["baseline"] for r in trials) == ["fisher_lowrank", "mabel"]
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert math.isfinite(trial.data.metrics["stereoset/gender/icat"])
    study = optuna.load_study(study_name="baselines-e2e", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert sorted(t.params["baseline"] for t in study.trials) == ["fisher_lowrank", "mabel"]
