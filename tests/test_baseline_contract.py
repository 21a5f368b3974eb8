"""The contract every registered baseline passes, run through the real training recipe.

Each baseline trains a tiny random BERT (2 layers, 32-d, the real MiniLM vocabulary, no dropout) with
`TrainingRecipe` on a `LocalWorker` runtime: the same setup, step, checkpoint and resume code as a Ray
Train worker, in this process or in a 2-process gloo group. For every baseline:

- forward and backward: finite losses, and the trainable parameters move;
- determinism: two runs with the same seed report identical metrics and end with identical weights;
- resume: a run killed after its step-2 checkpoint and restarted from it ends where an uninterrupted
  run ends (metrics and weights to 1e-5);
- 2 DDP workers equal 1 at step 1: the step-1 metrics (computed on the same initial weights) agree;
- NC3 adds on top: with alpha > 0 the loss is the alpha = 0 loss plus alpha times UNC3.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ncsearch.config import BASELINES, parse_spec
from gloo_group import gloo_group

# Baselines whose defaults change dropout get it switched off: 2 workers draw different dropout masks
# than 1 (the masks are seeded per rank), so equality at step 1 needs a deterministic forward.
NO_DROPOUT: dict[str, dict[str, Any]] = {"dropout": {"hidden_dropout": 0.0, "attention_dropout": 0.0}}


def spec_dict(baseline: str, *, alpha: float = 0.0, steps: int = 4, model: str = "unused", **overrides: Any) -> dict[str, Any]:
    """The contract run's spec; `overrides` are dotted keys (`**{"nc3.means": "epoch"}`)."""
    data = {
        "name": "contract",
        "model": model,
        "baseline": baseline,
        "baseline_options": {baseline: NO_DROPOUT.get(baseline, {})},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "max_length": 32,
            "report_every": 1,
            "checkpoint_every": 2,
            "max_train_sentences": 16,
            "seed": 5,
            "lr": 1e-3,
            "precision": "fp32",
        },
        "nc3": {"alpha": alpha, "positions": "all", "vocab": {"source": "gender", "size": 60}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
    }
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, minilm_tokenizer) -> Path:
    """A saved tiny random masked LM, loadable by `load_mlm` like any checkpoint folder."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    from tiny_models import TINY_BERT

    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, **TINY_BERT,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    folder = tmp_path_factory.mktemp("tiny-mlm")
    BertForMaskedLM(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def run_local(
    baseline: str,
    model_dir: Path,
    data_root: Path,
    store: Path,
    *,
    alpha: float = 0.0,
    steps: int = 4,
    resume_from: Path | None = None,
    fail_after_step: int | None = None,
    **overrides: Any,
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """Train with the real recipe in this process: (reports, final exported weights)."""
    from ncsearch.training import TrainingRecipe
    from ncsearch.training._worker import LocalWorker

    config: dict[str, Any] = {
        "spec": parse_spec(spec_dict(baseline, alpha=alpha, steps=steps, model=str(model_dir), **overrides)).to_dict(),
        "data_root": str(data_root),
        "model_path": str(model_dir),
    }
    if fail_after_step is not None:
        config["fail_after_step"] = fail_after_step
    runtime = LocalWorker(store, resume_from=resume_from)
    recipe = TrainingRecipe(config, runtime)
    try:
        recipe.setup()
        try:
            recipe.train()
        except RuntimeError as err:
            if "injected failure" not in str(err):
                raise
        exported = recipe.baseline.export_model(recipe.model)
        weights = {k: v.detach().clone() for k, v in exported.state_dict().items()}
    finally:
        recipe.cleanup()
    return runtime.reports, weights


SHARED_KEYS = ("train/loss", "train/mlm_loss", "train/unc3", "train/nc3")


def metrics_close(a: dict[str, float], b: dict[str, float], *, tol: float = 1e-5) -> None:
    keys = [k for k in a if k.startswith("train/") and k not in ("train/tokens_per_s", "train/peak_rss_mb", "train/resumed_from")]
    assert sorted(keys) == sorted(k for k in b if k in keys), (sorted(a), sorted(b))
    for key in keys:
        x, y = a[key], b[key]
        if math.isnan(x) and math.isnan(y):
            continue
        assert x == pytest.approx(y, rel=tol, abs=tol), (key, x, y)


def weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, tol: float = 1e-5) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=tol, atol=tol, msg=name)


@pytest.fixture(scope="module")
def reference_runs(tiny_model_dir, data_root, tmp_path_factory):
    """One uninterrupted 4-step run per baseline (alpha 0), computed once for several tests."""
    runs: dict[str, tuple[list[dict[str, float]], dict[str, torch.Tensor]]] = {}

    def get(baseline: str):
        if baseline not in runs:
            runs[baseline] = run_local(baseline, tiny_model_dir, data_root, tmp_path_factory.mktemp(f"ref-{baseline}"))
        return runs[baseline]

    return get


@pytest.mark.parametrize("baseline", BASELINES)
def test_forward_backward_trains_and_is_deterministic(baseline, reference_runs, tiny_model_dir, data_root, tmp_path):
    from ncsearch.models import load_mlm

    reports, weights = reference_runs(baseline)
    assert [r["step"] for r in reports] == [1, 2, 3, 4]
    for report in reports:
        assert math.isfinite(report["train/loss"]), report
    initial = load_mlm(str(tiny_model_dir))[0].state_dict()
    # trained: a weight of the model that changed, or one the method added (a prefix, say)
    moved = [k for k, v in weights.items() if k not in initial or not torch.equal(v, initial[k])]
    assert moved, f"{baseline}: the exported model equals the initial one after 4 steps"

    again, weights_again = run_local(baseline, tiny_model_dir, data_root, tmp_path)
    for a, b in zip(reports, again):
        metrics_close(a, b, tol=0.0)
    weights_close(weights, weights_again, tol=0.0)


@pytest.mark.parametrize("baseline", BASELINES)
def test_resume_after_a_checkpoint_equals_an_uninterrupted_run(baseline, reference_runs, tiny_model_dir, data_root, tmp_path):
    reports, weights = reference_runs(baseline)
    crashed, _ = run_local(baseline, tiny_model_dir, data_root, tmp_path, fail_after_step=2)
    assert crashed[-1]["step"] == 2
    checkpoint = tmp_path / "checkpoints" / "checkpoint_000002"
    assert (checkpoint / "state.pt").is_file()
    resumed, resumed_weights = run_local(baseline, tiny_model_dir, data_root, tmp_path, resume_from=checkpoint)
    assert [r["step"] for r in resumed] == [3, 4]
    assert resumed[-1]["train/resumed_from"] == 2
    for a, b in zip(reports[2:], resumed):
        metrics_close(a, b)
    weights_close(weights, resumed_weights)


@pytest.mark.parametrize("baseline", ["mlm", "fisher_lowrank"])  # a full fine-tune and a frozen base
def test_the_final_checkpoint_resumes_without_optimizer_state(baseline, reference_runs, tiny_model_dir, data_root, tmp_path):
    """The last checkpoint leaves AdamW's moments out (nothing is left to train); a restart from it
    re-reports the final metrics and ends with the same model, and earlier checkpoints keep them."""
    from ncsearch.training._checkpoint import read_state

    reports, weights = reference_runs(baseline)
    run_local(baseline, tiny_model_dir, data_root, tmp_path)
    final = tmp_path / "checkpoints" / "checkpoint_000004"
    assert read_state(final).optimizer == {}
    assert read_state(tmp_path / "checkpoints" / "checkpoint_000002").optimizer["state"]
    restarted, restarted_weights = run_local(baseline, tiny_model_dir, data_root, tmp_path, resume_from=final)
    assert [r["step"] for r in restarted] == [4]
    metrics_close(reports[-1], restarted[-1], tol=0.0)
    weights_close(weights, restarted_weights, tol=0.0)


RECIPE_KEYS = {
    "train/loss", "train/mlm_loss", "train/tokens_per_s", "train/unc3", "train/nc3", "train/nc3_classes",
    "train/lr", "train/bf16", "train/resumed_from", "train/peak_rss_mb",
}


@pytest.mark.parametrize("baseline", BASELINES)
def test_nc3_adds_on_top(baseline, reference_runs, tiny_model_dir, data_root, tmp_path):
    plain, _ = reference_runs(baseline)
    with_nc3, _ = run_local(baseline, tiny_model_dir, data_root, tmp_path, alpha=10.0)
    # step 1 is computed on the same initial weights: the method's own terms are unchanged
    metrics_close(
        {k: v for k, v in plain[0].items() if k != "train/loss"},
        {k: v for k, v in with_nc3[0].items() if k != "train/loss"},
    )
    for report in with_nc3:  # one step per report on one worker: every term adds up
        own = sum(v for k, v in report.items() if k.startswith("train/") and k not in RECIPE_KEYS)
        mlm = 0.0 if math.isnan(report["train/mlm_loss"]) else report["train/mlm_loss"]
        assert report["train/loss"] == pytest.approx(mlm + own + 10.0 * report["train/unc3"], rel=1e-5, abs=1e-6)
    assert max(r["train/unc3"] for r in with_nc3) > 0, "NC3 never saw two classes of V"
    assert with_nc3[-1]["train/loss"] != plain[-1]["train/loss"]


def _ddp_worker(rank: int, baseline: str, model_dir: str, data_root: str, store: str, init_file: str) -> None:
    torch.set_num_threads(1)
    with gloo_group(rank, 2, f"file://{init_file}"):
        reports, _ = run_local(baseline, Path(model_dir), Path(data_root), Path(store) / f"rank{rank}", steps=1)
        if rank == 0:
            (Path(store) / "reports.json").write_text(json.dumps(reports))


@pytest.mark.parametrize("baseline", BASELINES)
def test_two_ddp_workers_equal_one_at_step_1(baseline, reference_runs, tiny_model_dir, data_root, tmp_path):
    import torch.multiprocessing as mp

    one, _ = reference_runs(baseline)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(
        _ddp_worker,
        args=(baseline, str(tiny_model_dir), str(data_root), str(tmp_path), str(tmp_path / "init")),
        nprocs=2,
        join=True,
    )
    two = json.loads((tmp_path / "reports.json").read_text())
    assert two[0]["step"] == 1
    metrics_close(one[0], two[0])


def test_epoch_means_start_afresh_at_each_epoch_of_the_feature_stream(tiny_model_dir, data_root, tmp_path):
    """One GAP passage (a few chunks) with batches of 4: every step starts a new epoch of the MLM
    stream, so `means: epoch` must give exactly the statistics of `means: batch` at every step, and
    not those of `means: cumulative` (which keeps the earlier steps' features)."""
    common = {"train.max_train_sentences": 1}
    epoch, _ = run_local("mlm", tiny_model_dir, data_root, tmp_path / "e", alpha=10.0, **common, **{"nc3.means": "epoch"})
    batch, _ = run_local("mlm", tiny_model_dir, data_root, tmp_path / "b", alpha=10.0, **common, **{"nc3.means": "batch"})
    cumulative, _ = run_local("mlm", tiny_model_dir, data_root, tmp_path / "c", alpha=10.0, **common)
    for e, b in zip(epoch, batch):
        metrics_close(e, b)
    assert cumulative[0]["train/unc3"] == pytest.approx(epoch[0]["train/unc3"], rel=1e-6)  # step 1: nothing before it
    assert all(abs(c["train/unc3"] - e["train/unc3"]) > 1e-6 for c, e in zip(cumulative[1:], epoch[1:]))
