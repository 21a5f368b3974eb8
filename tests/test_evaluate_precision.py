"""eval.precision: bf16 scoring (bfloat16 autocast, plain forward) against fp32, and fp32 unchanged.

Tolerance of bf16 against fp32, measured on the adapted MiniLM-L6 (40 StereoSet-gender examples, 40
CrowS-Pairs-gender pairs, 4 PPPL passages, 8 SEAT sentences per set): the win rates (SS, LMS, ICAT,
CrowS score) were identical; the continuous measures moved by 0.4% (StereoSet log-odds), 0.5%
(CrowS likelihood difference), 0.06% (PPPL) and 0.75% (SEAT mean |effect size|). The test allows a
win rate to move by at most one flipped example's share and a continuous measure by 3% relative.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from ncsearch.evaluate._precision import (
    Deviation,
    check_precision,
    deviations,
    scoring_context,
    scoring_fast_path,
)

CONTINUOUS_REL = 0.03


def test_fp32_keeps_the_fast_path_and_bf16_turns_it_off():
    assert scoring_fast_path("fp32", True) and not scoring_fast_path("fp32", False)
    assert not scoring_fast_path("bf16", True)


def test_an_unknown_precision_is_one_line_naming_eval_precision():
    from ncsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^eval\.precision: 'fp16' is not one of fp32, bf16$"):
        check_precision("fp16")


def test_scoring_context_is_bf16_autocast_only_for_bf16():
    model = torch.nn.Linear(2, 2)
    with scoring_context("fp32", model):
        assert not torch.is_autocast_enabled("cpu")
    with scoring_context("bf16", model):
        assert model(torch.ones(1, 2)).dtype == torch.bfloat16


def test_eval_spec_precision_defaults_to_fp32_and_takes_bf16():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import make_spec

    from ncsearch.errors import ConfigError

    assert make_spec().eval.precision == "fp32"
    assert make_spec(**{"eval.precision": "bf16"}).eval.precision == "bf16"
    with pytest.raises(ConfigError, match="eval.precision"):
        make_spec(**{"eval.precision": "fp16"})


def test_deviations_keep_the_headline_metrics_in_order():
    fp32 = {"stereoset/gender/ss": 50.0, "stereoset/gender/n": 8.0, "perplexity/pppl": 10.0}
    bf16 = {"stereoset/gender/ss": 52.0, "stereoset/gender/n": 8.0, "perplexity/pppl": 10.5}
    assert deviations(["stereoset", "perplexity"], fp32, bf16) == [
        Deviation("stereoset/gender/ss", 50.0, 52.0), Deviation("perplexity/pppl", 10.0, 10.5)]
    assert Deviation("x/y", 1.0, 1.25).deviation == 0.25


def test_fp32_default_is_the_plain_suite_and_the_timings_name_the_precision(tiny_mlm, data_root):
    from ncsearch.evaluate import run_suite

    model, tokenizer = tiny_mlm
    common = {"data_root": data_root, "limits": {"stereoset": 6, "crows_pairs": 6}, "progress": False, "resamples": 0}
    default = run_suite(model, tokenizer, ["stereoset", "crows_pairs"], **common)
    explicit = run_suite(model, tokenizer, ["stereoset", "crows_pairs"], **common, precision="fp32")
    bf16 = run_suite(model, tokenizer, ["stereoset", "crows_pairs"], **common, precision="bf16")
    assert default.metrics == explicit.metrics
    assert list(default.details["suite/timings"]["precision"]) == ["fp32", "fp32"]
    assert list(bf16.details["suite/timings"]["precision"]) == ["bf16", "bf16"]
    assert set(bf16.metrics) == set(default.metrics)
    assert all(math.isfinite(v) for v in bf16.metrics.values())
    # the per-example scores moved: the option took effect
    columns = ["stereotype", "anti-stereotype", "unrelated"]
    assert not bf16.details["stereoset/examples"][columns].equals(default.details["stereoset/examples"][columns])


def test_eval_precision_bf16_on_minilm_scores_both_and_stays_close_to_fp32(tmp_path, data_root, capsys):
    from ncsearch.cli import main

    out = tmp_path / "bf16.json"
    limits = {"stereoset": 24, "crows_pairs": 24, "perplexity": 2}
    args = ["eval", "minilm-l6", "--benchmarks", *limits, "--domains", "gender", "--data-dir", str(data_root),
            "--no-progress", "--resamples", "0", "--precision", "bf16", "--json", str(out)]
    for name, n in limits.items():
        args += ["--limit", f"{name}={n}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "bf16 against fp32" in printed and "scoring time: fp32" in printed
    payload = json.loads(out.read_text())
    assert payload["precision"] == "bf16"
    fp32, bf16 = payload["fp32_reference"]["metrics"], payload["metrics"]
    assert set(fp32) == set(bf16)
    assert payload["fp32_reference"]["seconds"] > 0 and payload["scoring_seconds"] > 0
    deviation = payload["deviation"]
    assert {"stereoset/gender/ss", "crows_pairs/gender/score", "perplexity/pppl"} <= set(deviation)
    for key, dev in deviation.items():
        assert dev == pytest.approx(bf16[key] - fp32[key])
        if key.endswith(("/ss", "/lms", "/icat", "/score")):  # win rates, in percent
            n = limits[key.split("/")[0]]
            assert abs(dev) <= 100.0 / n * 1.01, (key, dev)
        else:
            assert bf16[key] == pytest.approx(fp32[key], rel=CONTINUOUS_REL), (key, fp32[key], bf16[key])
    timings = pd.read_csv(tmp_path / "bf16.suite.timings.csv")
    assert set(timings["precision"]) == {"bf16"}
