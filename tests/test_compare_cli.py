"""`ncsearch compare` on tiny saved models: a known shift is found, identical models tie, and bad
input (different tokenizers, unknown ids) exits 2 with one line."""

from __future__ import annotations

import json

import pytest
import torch

from ncsearch.cli import main

ARGS = ["--benchmarks", "perplexity", "stereoset", "--limit", "perplexity=3", "--limit", "stereoset=24",
        "--domains", "gender", "--resamples", "400"]


@pytest.fixture()
def saved(tmp_path, tiny_mlm):
    """Three checkpoints of the tiny model: A, an identical copy, and B with one token's decoder bias raised."""
    model, tokenizer = tiny_mlm
    paths = {}
    for name in ("a", "copy", "shifted"):
        if name == "shifted":
            with torch.no_grad():
                model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("[unused10]")] += 5.0
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    return paths


def _compare(a, b, tmp_path, data_root, capsys):
    out = tmp_path / f"cmp-{len(list(tmp_path.glob('cmp-*')))}.json"
    assert main(["compare", a, b, *ARGS, "--data-dir", str(data_root), "--json", str(out), "--storage", str(tmp_path)]) == 0
    capsys.readouterr()
    return {m["metric"]: m for m in json.loads(out.read_text())["metrics"]}


def test_known_shift_is_found_and_identical_models_tie(saved, tmp_path, data_root, capsys):
    shifted = _compare(saved["a"], saved["shifted"], tmp_path, data_root, capsys)
    low, high = shifted["perplexity/pppl"]["difference"][1:]
    assert low > 0 and shifted["perplexity/pppl"]["p_value"] < 0.01  # raising a never-seen token's logit costs every target token
    same = _compare(saved["a"], saved["copy"], tmp_path, data_root, capsys)
    for metric, row in same.items():
        value, low, high = row["difference"]
        assert value == 0.0 and low <= 0.0 <= high and row["p_value"] == 1.0, metric


def test_different_tokenizers_are_refused(saved, tmp_path, data_root, capsys, tiny_mlm):
    import copy

    model, shared = tiny_mlm
    tokenizer = copy.deepcopy(shared)  # the session's tokenizer: adding a token to it would change every later test
    tokenizer.add_tokens(["zzzunseenword"])
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    capsys.readouterr()  # the test's own save progress bars
    assert main(["compare", saved["a"], str(tmp_path / "other"), *ARGS, "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert "different tokenizers" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["0123456789abcdef0123456789abcdef", "4bbd0f1d", "no/such/dir/"])
def test_unknown_runs_are_refused(saved, tmp_path, capsys, target):
    assert main(["compare", saved["a"], target, "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncsearch compare: error:") and len(err.strip().splitlines()) == 1
