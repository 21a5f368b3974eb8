"""`ncsearch eval`: the gender suite end to end on the adapted MiniLM-L6, and its input errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ncsearch.cli import main
from ncsearch.config import SUITES

LIMITS = ["stereoset=8", "crows_pairs=9", "seat=4", "bec_pro=12", "winobias=8", "perplexity=2"]


def test_eval_gender_suite_on_minilm_writes_finite_metrics_and_tables(tmp_path, data_root, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "minilm-l6", "--suite", "gender", "--data-dir", str(data_root), "--json", str(out),
            "--batch-size", "32", "--no-progress"]
    for limit in LIMITS:
        args += ["--limit", limit]
    assert main(args) == 0
    payload = json.loads(out.read_text())
    metrics = payload["metrics"]
    assert payload["benchmarks"] == list(SUITES["gender"])
    for name in SUITES["gender"]:
        assert any(key.startswith(f"{name}/") for key in metrics), name
    assert all(math.isfinite(value) for value in metrics.values())
    for key in ("stereoset/gender/ss", "crows_pairs/gender/score", "perplexity/pppl"):
        assert key in metrics
    # An adapted model is a language model: far below the uniform pseudo-perplexity (30,522).
    assert 1.0 < metrics["perplexity/pppl"] < 5000
    assert 0.0 <= metrics["stereoset/overall/lms"] <= 100.0
    stereoset = pd.read_csv(tmp_path / "eval.stereoset.examples.csv")
    # the gender suite scores only the gender parts of StereoSet and CrowS-Pairs
    assert len(stereoset) == 8 and set(stereoset["bias_type"]) == {"gender"}
    crows = pd.read_csv(tmp_path / "eval.crows_pairs.pairs.csv")
    assert len(crows) == 9 and set(crows["bias_type"]) == {"gender"}
    assert payload["domains"] == ["gender"]
    assert payload["fast_path"] is True  # on unless --no-fast-path
    assert not any(key.startswith(("stereoset/race/", "crows_pairs/race-color/")) for key in metrics)
    assert "crows_pairs/gender/score" in capsys.readouterr().out


def test_eval_no_fast_path_scores_alike_with_the_plain_forward(tmp_path, data_root):
    """`--no-fast-path` is recorded in the JSON and, on the real MiniLM, changes nothing beyond float rounding."""
    common = ["eval", "minilm-l6", "--benchmarks", "stereoset", "crows_pairs", "--domains", "gender",
              "--limit", "stereoset=8", "--limit", "crows_pairs=9", "--data-dir", str(data_root), "--no-progress",
              "--resamples", "0"]
    payloads = {}
    for fast_path, flags in ((True, []), (False, ["--no-fast-path"])):
        out = tmp_path / f"eval-{fast_path}.json"
        assert main([*common, *flags, "--json", str(out)]) == 0
        payloads[fast_path] = json.loads(out.read_text())
        assert payloads[fast_path]["fast_path"] is fast_path
    fast, plain = payloads[True]["metrics"], payloads[False]["metrics"]
    assert set(plain) == set(fast)
    for key, value in fast.items():
        assert plain[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--limit", "crows_pairs"], "NAME=N"),
        (["--limit", "stereoset=0"], "positive integer"),
        (["--limit", "nope=3"], "unknown benchmark 'nope'"),
        (["--benchmarks", "stereoset", "--limit", "glue=3"], "not run"),
        (["--benchmarks", "nope"], "unknown benchmark 'nope'"),
    ],
)
def test_eval_rejects_bad_input_with_exit_2(flag, message, capsys, tmp_path):
    assert main(["eval", str(tmp_path / "no-model"), *flag]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ncsearch eval: error:")


def test_eval_json_has_an_interval_for_every_resampled_metric(tmp_path, data_root, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "minilm-l6", "--benchmarks", "stereoset", "crows_pairs", "--domains", "gender",
                 "--limit", "stereoset=30", "--limit", "crows_pairs=30", "--data-dir", str(data_root),
                 "--json", str(out), "--no-progress", "--resamples", "300"]) == 0
    payload = json.loads(out.read_text())
    metrics, spans = payload["metrics"], payload["intervals"]
    assert set(spans) == set(metrics)
    for key, (low, high) in spans.items():
        assert low <= high, key
    low, high = spans["stereoset/gender/icat"]
    assert high - low > 1.0  # 30 examples cannot pin ICAT down
    assert "crows_pairs/gender/likelihood_diff" in metrics and "stereoset/gender/log_odds" in metrics
    assert not any("nangia" in key for key in metrics)  # Nangia's scorer runs only when asked for
    assert payload["resampling"]["stereoset"] == "examples, stratified by bias_type x target"
    assert payload["bootstrap"] == {"resamples": 300, "seed": 0, "level": 0.95, "method": "percentile"}
    shown = capsys.readouterr().out
    assert "stereoset/gender/icat" in shown and f"[{low:.4g}, {high:.4g}]" in shown


def test_eval_rejects_unknown_benchmark_options(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "no-model"), "--benchmarks", "crows_pairs",
                 "--option", "crows_pairs.scorers=[nope]"]) == 2
    assert "eval.options.crows_pairs.scorers[0]: Input should be 'bias_bench' or 'nangia' (got 'nope')" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "no-model"), "--benchmarks", "crows_pairs", "--option", "crows_pairs.bogus=1"]) == 2
    assert "eval.options.crows_pairs.bogus: unknown option; crows_pairs takes: scorers" in capsys.readouterr().err
