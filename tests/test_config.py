"""The search-space schema: good files load, bad ones fail with one line naming file, YAML path and line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ncsearch.cli import main as cli_main
from ncsearch.config import Distribution, load_spec, parse_spec
from ncsearch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
model: minilm-l6
baseline: mlm
train:
  steps: 5
nc3:
  alpha: {loguniform: [0.1, 100.0]}
  vocab:
    source: gender
    size: 50
objectives:
  - {metric: stereoset/gender/icat, mode: max}
  - {metric: perplexity/pppl, mode: min}
"""


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _replace(old: str, new: str) -> str:
    if old not in GOOD:
        raise ValueError(old)
    return GOOD.replace(old, new)


# (id, YAML text, expected fragment of the message: "<path>: <message>", expected line or None)
BAD_INPUTS = [
    ("unknown-top-key", GOOD + "colour: red\n", "colour: unknown key 'colour'", 14),
    ("unknown-nested-key", _replace("    size: 50\n", "    size: 50\n    sise: 3\n"), "nc3.vocab.sise: unknown key", 11),
    ("wrong-type-steps", _replace("steps: 5", "steps: five"), "train.steps: Input should be a valid integer", 5),
    ("string-number-is-not-a-number", _replace("steps: 5", 'steps: "5"'), "train.steps:", 5),
    ("negative-alpha", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: -1.0"), "nc3.alpha: Input should be greater than or equal to 0", 7),
    ("negative-alpha-in-choice", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {choice: [1.0, -2.0]}"), "nc3.alpha: 'choice' option invalid", 7),
    ("empty-choice", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {choice: []}"), "nc3.alpha: 'choice' needs at least one option", 7),
    ("min-greater-than-max", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {uniform: [5.0, 1.0]}"), "nc3.alpha: 'uniform' needs low <= high", 7),
    ("loguniform-zero", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {loguniform: [0.0, 1.0]}"), "nc3.alpha: 'loguniform' needs low > 0, got 0.0", 7),
    ("size-zero", _replace("size: 50", "size: 0"), "nc3.vocab.size: Input should be greater than or equal to 1", 10),
    ("size-range-below-one", _replace("size: 50", "size: {int: [0, 500]}"), "nc3.vocab.size: 'int' option invalid", 10),
    ("unknown-distribution", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {normal: [0, 1]}"), "nc3.alpha: expected a value or a one-key distribution", 7),
    ("bad-literal", _replace("source: gender", "source: genre"), "nc3.vocab.source:", 9),
    ("bad-baseline", _replace("baseline: mlm", "baseline: magic"), "baseline:", 3),
    ("bad-mode", _replace("mode: min", "mode: lowest"), "objectives[1].mode: Input should be 'min' or 'max'", 13),
    ("one-objective", GOOD.replace("  - {metric: perplexity/pppl, mode: min}\n", ""), "objectives: List should have at least 2 items", 11),
    ("objective-not-in-suite", _replace("perplexity/pppl", "glue/cola/mcc"), "needs benchmark 'glue'", None),
    ("grid-without-grid-algorithm", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {grid: [0.0, 1.0]}"), "need search.algorithm: grid", None),
    ("missing-name", GOOD.replace("name: t\n", ""), "name: required key is missing", None),
    ("missing-vocab-file", _replace("source: gender", "source: file\n    file: nowhere.txt"), "nc3.vocab.file: file not found: 'nowhere.txt'", 10),
    ("missing-model-path", _replace("model: minilm-l6", "model: ./no/such/checkpoint"), "model: folder not found", 2),
    ("invalid-yaml", "name: t\nnc3: {alpha: [1, 2\n", "invalid YAML", None),
    ("duplicate-key", GOOD + "name: u\n", "name: duplicate key", 14),
    ("top-level-list", "- 1\n- 2\n", "the top level must be a mapping", None),
    ("empty-file", "", "the file is empty", None),
    ("replicates-zero", GOOD + "search: {replicates: 0}\n", "search.replicates: Input should be greater than or equal to 1", 14),
    ("control-with-alpha-fixed-at-zero", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: 0.0") + "search: {control: true}\n",
     "nc3.alpha is fixed at 0 here: each trial would be its own control", None),
    ("control-with-alpha-grid-of-zero", _replace("alpha: {loguniform: [0.1, 100.0]}", "alpha: {grid: [0.0]}")
     + "search: {control: true, algorithm: grid}\n", "nc3.alpha is fixed at 0", None),
    ("delta-objective-without-control", _replace("metric: stereoset/gender/icat", "metric: delta/stereoset/gender/icat"),
     "is a difference against the control, but search.control is false", None),
    ("delta-objective-unknown-benchmark", _replace("metric: stereoset/gender/icat", "metric: delta/glue/cola/mcc")
     + "search: {control: true}\n", "needs benchmark 'glue'", None),
    ("preset-conflict", _replace("    size: 50\n", "    size: 50\n  preset: paper\n  positions: masked\n"), "preset 'paper' fixes positions='all'", None),
]


@pytest.mark.parametrize("case_id, text, fragment, line", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_one_line_exit_2(tmp_path, capsys, case_id, text, fragment, line) -> None:
    path = _write(tmp_path, text)
    code = cli_main(["validate", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"ncsearch validate: error: {path}"), err[0]
    assert fragment in err[0], err[0]
    if line is not None:
        assert f"{path}:{line}:" in err[0], err[0]


def test_bad_table_has_at_least_15_cases() -> None:
    assert len(BAD_INPUTS) >= 15


def test_all_errors_reported_at_once(tmp_path) -> None:
    text = _replace("steps: 5", "steps: -3").replace("size: 50", "size: 0") + "extra: 1\n"
    with pytest.raises(ConfigError) as info:
        load_spec(_write(tmp_path, text))
    assert len(info.value.problems) == 3
    assert {p.split(": ")[1] for p in info.value.problems} == {"train.steps", "nc3.vocab.size", "extra"}


def test_missing_file_is_one_line(tmp_path, capsys) -> None:
    assert cli_main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"ncsearch validate: error: {tmp_path / 'absent.yaml'}: file not found"


def test_good_file_distributions_and_resolve(tmp_path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.distributions() == {"nc3.alpha": Distribution("loguniform", (0.1, 100.0))}
    assert not spec.is_concrete()
    trial = spec.resolve({"nc3.alpha": 3.5})
    assert trial.is_concrete() and trial.nc3.alpha == 3.5 and trial.nc3.vocab.size == 50
    # the resolved spec survives a round trip through plain data (what Ray ships to workers)
    assert parse_spec(trial.to_dict()).to_dict() == trial.to_dict()
    # an open spec round-trips too, distributions included
    assert parse_spec(spec.to_dict()).distributions() == spec.distributions()


def test_resolve_rejects_out_of_range_value(tmp_path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="nc3.alpha"):
        spec.resolve({"nc3.alpha": -1.0})


def test_overrides_apply_and_are_validated(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    spec = load_spec(path, ["nc3.alpha=10", "baseline=cda", "train.lr=1e-4"])
    assert (spec.nc3.alpha, spec.baseline, spec.train.lr) == (10, "cda", 1e-4)
    with pytest.raises(ConfigError, match="nc3.alpha"):
        load_spec(path, ["nc3.alpha=-5"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_spec(path, ["nc3.alpha"])


def test_paper_preset_sets_the_paper_options(tmp_path) -> None:
    spec = load_spec(_write(tmp_path, _replace("    size: 50\n", "    size: 50\n  preset: paper\n")))
    assert (spec.nc3.features, spec.nc3.positions, spec.nc3.label_shift, spec.nc3.means, spec.nc3.kind) == (
        "encoder", "all", 1, "cumulative", "unc3")


def test_relative_vocab_file_is_taken_from_the_yaml_folder(tmp_path) -> None:
    (tmp_path / "words.txt").write_text("he\nshe\n")
    spec = load_spec(_write(tmp_path, _replace("source: gender", "source: file\n    file: words.txt")))
    assert spec.nc3.vocab.file == str((tmp_path / "words.txt").resolve())


@pytest.mark.parametrize("space", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_validate(space: Path) -> None:
    spec = load_spec(space)
    assert len(spec.objectives) >= 2


def test_console_script_help_and_validate() -> None:
    """The installed `ncsearch` entry point works without importing torch/Ray for validate."""
    exe = Path(sys.executable).with_name("ncsearch")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "validate" in out and "run" in out
    res = subprocess.run(
        [str(exe), "validate", str(REPO / "search_spaces" / "alpha.yaml")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "nc3.alpha: grid [1.0, 10.0, 100.0]" in res.stdout and "seed-matched alpha = 0 control" in res.stdout
    probe = "import sys, ncsearch.cli, ncsearch.config; print(any(m in sys.modules for m in ('torch', 'ray', 'mlflow')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
