"""Bad input to every command (issue 16, drill 6): each case is one line on stderr that names the
offending file, key or value, exit code 2, and nothing half-written: no run folder, no MLflow store or
run, no cache entry, no Ray started.

One table, one line a case. `{name}` in a case's arguments is filled from the assets (tiny models
built from a config, data roots missing one dataset, search spaces, an MLflow store with one other
experiment, a port nothing listens on and one that is taken). Each case runs in a fresh working
folder with its own cache folder ($NCSEARCH_CACHE_DIR), which stay as they were, like the assets and
the Hugging Face caches.

Most cases call the real CLI entry point in this process (its heavy imports are paid once); those
marked `proc` run the installed `ncsearch` in a subprocess: the top-level parser, a file that is not
text, and `ui` on a taken port (a regression there would start a server).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_DATA
from conftest_search import free_port

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"
NCSEARCH = Path(sys.executable).with_name("ncsearch")


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # the line must contain each of these (after filling in `{name}`)
    proc: bool = False


def c(id: str, argv: str, *names: str, proc: bool = False) -> Case:
    return Case(id, tuple(argv.split()), names, proc)


CASES = [
    # --- validate: the search-space file itself
    c("validate-missing-file", "validate {assets}/nope.yaml", "nope.yaml", "not found"),
    c("validate-a-folder", "validate {assets}/folder", "folder", "not a search-space YAML file"),
    c("validate-invalid-yaml", "validate {assets}/bad.yaml", "bad.yaml", "invalid YAML"),
    c("validate-not-text", "validate {assets}/binary.yaml", "binary.yaml", "not a text file", proc=True),
    c("validate-top-level-list", "validate {assets}/list.yaml", "list.yaml", "mapping"),
    c("validate-empty-file", "validate {assets}/empty.yaml", "empty.yaml", "empty"),
    c("validate-non-numeric-value", "validate {spec} --set train.steps=abc", "train.steps", "'abc'"),
    c("validate-unknown-key", "validate {spec} --set train.nope=1", "train.nope", "unknown key"),
    c("validate-set-without-value", "validate {spec} --set nosuch", "--set 'nosuch'"),
    # --- run: model, data, Ray cluster, tracking store, flags
    c("run-unknown-model-id", "run {spec} --set model=no-such-org/no-such-model", "no-such-org/no-such-model"),
    c("run-model-path-missing", "run {spec} --set model={assets}/no-model", "no-model"),
    c("run-model-without-mlm-head", "run {spec} --set model={models}/headless", "headless", "not a trained masked LM"),
    c("run-not-a-masked-lm", "run {spec} --set model={models}/gpt2", "gpt2", "AutoModelForMaskedLM"),
    c("run-corrupt-weights", "run {spec} --set model={models}/garbage", "garbage", "cannot load a masked LM"),
    c("run-remote-code-refused", "run {spec} --set model={models}/remote", "remote", "--trust-remote-code"),
    c("run-data-root-missing-a-benchmark", "run {spec} --data-dir {no_stereoset}", "stereoset", "no_stereoset"),
    c("run-data-root-missing", "run {spec} --data-dir {assets}/no-data", "no-data"),
    c("run-non-numeric-num-samples", "run {spec} --num-samples abc", "--num-samples", "'abc'"),
    c("run-zero-num-samples", "run {spec} --num-samples 0", "--num-samples", "0"),
    c("run-address-nothing-listens", "run {spec} --address 127.0.0.1:{closed_port}", "--address", "{closed_port}"),
    c("run-address-malformed", "run {spec} --address ray://nohostport", "--address", "nohostport"),
    c("run-tracking-uri-bad-scheme", "run {spec} --tracking-uri foo://bar", "foo://bar", "unsupported scheme"),
    c("run-tracking-server-down", "run {spec} --tracking-uri http://127.0.0.1:{closed_port}", "127.0.0.1:{closed_port}"),
    c("run-tracking-store-folder-missing", "run {spec} --tracking-uri sqlite:///{assets}/no-folder/mlflow.db",
      "no-folder"),
    c("run-resume-without-a-search", "run {spec} --resume", "nothing to resume"),
    c("run-unknown-set-key", "run {spec} --set search.nope=1", "search.nope", "unknown key"),
    # --- train
    c("train-searched-field-left-open", "train {spec}", "nc3.alpha", "fixed values"),
    c("train-model-without-mlm-head", "train {spec} --set nc3.alpha=1.0 --set model={models}/headless", "headless"),
    c("train-remote-code-refused", "train {spec} --set nc3.alpha=1.0 --set model={models}/remote", "--trust-remote-code"),
    c("train-address-nothing-listens", "train {spec} --set nc3.alpha=1.0 --address 127.0.0.1:{closed_port}",
      "{closed_port}"),
    c("train-tracking-uri-bad-scheme", "train {spec} --set nc3.alpha=1.0 --set tracking.uri=foo://bar",
      "tracking.uri", "foo://bar"),
    c("train-data-root-missing-gap", "train {spec} --set nc3.alpha=1.0 --data-dir {no_gap} --out {assets}/out",
      "gap"),
    c("train-out-holds-another-spec", "train {spec} --set nc3.alpha=1.0 --out {other_out}", "--out", "other-out"),
    # --- eval
    c("eval-unknown-model-id", "eval no-such-org/no-such-model --benchmarks stereoset", "no-such-org/no-such-model"),
    c("eval-model-path-missing", "eval ./no/model --benchmarks stereoset", "./no/model"),
    c("eval-model-without-mlm-head", "eval {models}/headless --benchmarks stereoset", "headless", "not a trained masked LM"),
    c("eval-not-a-masked-lm", "eval {models}/gpt2 --benchmarks stereoset", "gpt2", "AutoModelForMaskedLM"),
    c("eval-corrupt-weights", "eval {models}/garbage --benchmarks stereoset", "garbage"),
    c("eval-remote-code-refused", "eval {models}/remote --benchmarks stereoset", "remote", "--trust-remote-code"),
    c("eval-non-numeric-limit", "eval {models}/mlm --benchmarks stereoset --limit stereoset=abc", "--limit stereoset", "'abc'"),
    c("eval-limit-without-name", "eval {models}/mlm --limit 100", "--limit", "'100'"),
    c("eval-unknown-benchmark", "eval {models}/mlm --benchmarks nosuch", "'nosuch'"),
    c("eval-unknown-domain", "eval {models}/mlm --domains nosuch", "--domains", "'nosuch'"),
    c("eval-unknown-option", "eval {models}/mlm --benchmarks stereoset --option stereoset.nosuch=1", "stereoset.nosuch"),
    c("eval-unknown-precision", "eval {models}/mlm --precision fp8", "--precision", "'fp8'"),
    c("eval-zero-batch-size", "eval {models}/mlm --batch-size 0", "--batch-size", "0"),
    c("eval-negative-resamples", "eval {models}/mlm --resamples -1", "--resamples", "-1"),
    c("eval-data-root-missing-a-benchmark", "eval {models}/mlm --benchmarks crows_pairs --data-dir {no_crows}",
      "crows_pairs", "no_crows"),
    c("eval-data-root-missing", "eval {models}/mlm --data-dir {assets}/no-data", "no-data"),
    # --- collapse
    c("collapse-unknown-model-id", "collapse no-such-org/no-such-model --max-sentences 4", "no-such-org/no-such-model"),
    c("collapse-model-without-mlm-head", "collapse {models}/headless --max-sentences 4", "headless"),
    c("collapse-zero-max-sentences", "collapse {models}/mlm --max-sentences 0", "--max-sentences", "0"),
    c("collapse-vocab-file-missing", "collapse {models}/mlm --vocab file --vocab-file {assets}/no-words.txt", "no-words.txt"),
    c("collapse-vocab-file-not-given", "collapse {models}/mlm --vocab file", "--vocab-file"),
    c("collapse-non-numeric-bootstrap", "collapse {models}/mlm --bootstrap abc", "--bootstrap", "'abc'"),
    c("collapse-data-root-missing-gap", "collapse {models}/mlm --data-dir {no_gap}", "gap"),
    # --- pareto
    c("pareto-unknown-experiment", "pareto nosuch --tracking-uri {store}", "'nosuch'", "other"),
    c("pareto-no-run-directory", "pareto nosuch", "'nosuch'"),
    c("pareto-tracking-uri-bad-scheme", "pareto nosuch --tracking-uri foo://bar", "foo://bar"),
    c("pareto-store-missing", "pareto nosuch --tracking-uri sqlite:///{assets}/no-store.db", "no-store.db"),
    c("pareto-server-down", "pareto nosuch --tracking-uri http://127.0.0.1:{closed_port}", "127.0.0.1:{closed_port}"),
    # --- report
    c("report-unknown-experiment", "report nosuch --tracking-uri {store}", "'nosuch'"),
    c("report-zero-resamples", "report nosuch --resamples 0", "--resamples", "0"),
    c("report-folder-without-a-search", "report {assets}/folder", "folder"),
    c("report-tracking-uri-bad-scheme", "report nosuch --tracking-uri foo://bar", "foo://bar"),
    # --- compare
    c("compare-unknown-run-id", "compare 0123456789abcdef0123456789abcdef {models}/mlm --tracking-uri {store}",
      "0123456789abcdef0123456789abcdef"),
    c("compare-folder-not-an-evaluation", "compare {assets}/folder {models}/mlm", "folder"),
    c("compare-zero-resamples", "compare {models}/mlm {models}/mlm --resamples 0", "--resamples", "0"),
    c("compare-tracking-uri-bad-scheme", "compare 0123456789abcdef0123456789abcdef {models}/mlm --tracking-uri foo://bar",
      "foo://bar"),
    c("compare-unknown-benchmark", "compare {models}/mlm {models}/mlm --benchmarks nosuch", "'nosuch'"),
    # --- data
    c("data-unknown-dataset", "data pull --only nosuch --data-dir {assets}/pulled", "'nosuch'"),
    c("data-mirror-missing", "data pull --mirror {assets}/no-mirror --data-dir {assets}/pulled", "no-mirror"),
    c("data-base-url-bad-scheme", "data pull --base-url ftp://example.invalid --data-dir {assets}/pulled",
      "ftp://example.invalid"),
    c("data-check-root-missing", "data check --data-dir {assets}/no-data", "no-data"),
    c("data-no-action", "data", "ACTION"),
    # --- ui
    c("ui-port-in-use", "ui {store_dir} --tracking-uri {store} --port {busy_port}", "{busy_port}", "in use", proc=True),
    c("ui-port-zero", "ui --port 0", "--port", "0"),
    c("ui-non-numeric-port", "ui --port abc", "--port", "'abc'"),
    c("ui-unknown-target", "ui nosuch", "'nosuch'"),
    c("ui-tracking-uri-bad-scheme", "ui --tracking-uri foo://bar", "foo://bar"),
    c("ui-store-missing", "ui --tracking-uri sqlite:///{assets}/no-store.db", "no-store.db"),
    c("ui-no-search-yet", "ui", "no search run"),
    # --- the command itself
    c("unknown-command", "nosuchcommand", "'nosuchcommand'", proc=True),
]


def _partial_data_root(folder: Path, missing: str) -> Path:
    folder.mkdir()
    for entry in SHARED_DATA.iterdir():
        if entry.name != missing:
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory, data_root):
    """Everything the cases name; built once and checked unchanged after every case."""
    from mlflow import MlflowClient

    from bad_models import build_bad_models

    root = tmp_path_factory.mktemp("assets")
    models = build_bad_models(root / "models")
    spec = yaml.safe_load(SMOKE.read_text())
    spec.update(model=str(models["mlm"]), storage="runs")  # relative: inside each case's own folder
    (root / "space.yaml").write_text(yaml.safe_dump(spec))
    (root / "folder").mkdir()
    (root / "bad.yaml").write_text("name: x\nobjectives: [\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01 not text")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "empty.yaml").write_text("")
    other = root / "other-out"  # a training run folder of a different spec
    other.mkdir()
    (other / "spec.yaml").write_text(yaml.safe_dump({**spec, "name": "someone-else"}))
    store_dir = root / "store"
    store_dir.mkdir()
    store = f"sqlite:///{store_dir / 'mlflow.db'}"
    MlflowClient(tracking_uri=store).create_experiment("other", artifact_location=(store_dir / "artifacts").as_uri())
    busy = socket.socket()  # something listening on 127.0.0.1 (as another server would)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    values = {
        "assets": str(root), "models": str(root / "models"), "spec": str(root / "space.yaml"),
        "no_stereoset": str(_partial_data_root(root / "no_stereoset", "stereoset")),
        "no_crows": str(_partial_data_root(root / "no_crows", "crows_pairs")),
        "no_gap": str(_partial_data_root(root / "no_gap", "gap")),
        "other_out": str(other), "store": store, "store_dir": str(store_dir),
        "closed_port": str(free_port()), "busy_port": str(busy.getsockname()[1]),
    }
    yield values
    busy.close()


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `roots`: (size, mtime) of files, (-1, 0) for folders."""
    found = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                continue
            stat = path.stat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else (-1, 0)
    return found


def _hf_caches() -> list[Path]:
    import huggingface_hub.constants as hub
    from transformers.utils import HF_MODULES_CACHE

    return [Path(hub.HF_HUB_CACHE), Path(HF_MODULES_CACHE)]


@pytest.fixture()
def case_dir(tmp_path, monkeypatch):
    """A fresh working folder with its own cache; the environment is put back after the case."""
    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    os.environ["NCSEARCH_CACHE_DIR"] = str(tmp_path / "cache")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("RAY_ADDRESS", None)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def _in_process(argv: list[str], capfd) -> tuple[int, str]:
    from ncsearch.cli import main

    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("Ray was started")
    return code, capfd.readouterr().err


def _subprocess(argv: list[str], folder: Path) -> tuple[int, str]:
    env = {**os.environ, "HF_HOME": str(folder / "hf")}
    proc = subprocess.Popen([str(NCSEARCH), *argv], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return proc.returncode, err


def test_the_table_covers_every_command_with_40_cases():
    from ncsearch.cli import COMMANDS

    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    assert set(COMMANDS) <= {case.argv[0] for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, assets, case_dir, capfd):
    argv = [arg.format(**assets) for arg in case.argv]
    watched = [case_dir, Path(assets["assets"]), *_hf_caches()]
    before = _snapshot(*watched)
    code, err = _subprocess(argv, case_dir) if case.proc else _in_process(argv, capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    (line,) = lines
    assert line.startswith(f"ncsearch {argv[0]}: error: " if argv[0] != "nosuchcommand" else "ncsearch: error: "), line
    for name in case.names:
        assert name.format(**assets) in line, line
    assert _snapshot(*watched) == before, "written: " + ", ".join(sorted(set(_snapshot(*watched)) ^ set(before)))
