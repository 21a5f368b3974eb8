"""Baseline input that must fail in one line with exit 2 before Ray starts, leaving nothing written:
an unknown baseline option, a baseline whose data is missing from the data root, and fisher_lowrank
on a model peft cannot wrap."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ncsearch.cli import main as cli_main

from test_train import BASE


def _space(tmp_path: Path, **changes: Any) -> Path:
    data = copy.deepcopy(BASE)
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _one_line_exit_2(argv: list[str], capsys) -> str:
    import ray

    assert not ray.is_initialized()
    try:
        code = cli_main(argv)
        started = ray.is_initialized()
    finally:
        ray.shutdown()  # a failing case must not leave Ray running for the next one
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert not started
    return err[0]


def test_an_unknown_baseline_option_is_one_line(tmp_path, capsys):
    space = _space(tmp_path, baseline="mabel", baseline_options={"mabel": {"temperatur": 0.1}})
    line = _one_line_exit_2(["train", str(space), "--out", str(tmp_path / "out")], capsys)
    assert "baseline_options.mabel.temperatur" in line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def adapted_model(data_root):
    """The test session's minilm-l6, adapted here if needed: its adaptation prints progress, which is
    not what these tests look at."""
    from ncsearch.models import ensure_model

    return ensure_model("minilm-l6", data_root=data_root)


@pytest.mark.parametrize(("baseline", "missing"), [("ase", "winobias"), ("adept", "words"), ("mabel", "glue")])
def test_a_baseline_whose_data_is_missing_is_one_line_before_ray(baseline, missing, tmp_path, data_root, adapted_model, capsys):
    partial = tmp_path / "data"
    partial.mkdir()
    for entry in data_root.iterdir():
        if entry.name != missing:
            (partial / entry.name).symlink_to(entry)
    space = _space(tmp_path, baseline=baseline)
    line = _one_line_exit_2(["train", str(space), "--out", str(tmp_path / "out"), "--data-dir", str(partial)], capsys)
    assert f"{missing}/" in line and "ncsearch data pull" in line
    assert not (tmp_path / "out").exists()


def test_fisher_lowrank_on_a_model_peft_cannot_wrap_is_one_line(tmp_path, capsys, minilm_tokenizer):
    """A masked LM without the modules LoRA targets (a tiny random DistilBERT: q_lin/v_lin, not query/value)."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    model_dir = tmp_path / "distil"
    config = DistilBertConfig(vocab_size=minilm_tokenizer.vocab_size, dim=32, hidden_dim=64, n_layers=1, n_heads=2)
    DistilBertForMaskedLM(config).save_pretrained(model_dir)
    minilm_tokenizer.save_pretrained(model_dir)
    capsys.readouterr()  # the save's progress bars
    space = _space(tmp_path, baseline="fisher_lowrank", model=str(model_dir))
    line = _one_line_exit_2(["train", str(space), "--out", str(tmp_path / "out")], capsys)
    assert "fisher_lowrank" in line and "DistilBert" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("baseline", ["mabel", "adept", {"choice": ["mlm", "adept"]}])
def test_an_unmasked_nc3_pass_with_masked_positions_is_one_line(baseline, tmp_path, capsys):
    data = copy.deepcopy(BASE)
    data.update(baseline=baseline)
    data["nc3"]["positions"] = "masked"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli_main(["validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "feeds NC3 from its own unmasked pass" in line and "nc3.positions: all" in line
    data["nc3"]["positions"] = "all"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli_main(["validate", str(path)]) == 0
