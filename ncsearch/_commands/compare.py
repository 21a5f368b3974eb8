"""`ncsearch compare A B`: paired bootstrap of B − A on the same examples, for every shared metric.

A and B may each be:
- a trial id of a search (e.g. `5a1b2_00003`) or an MLflow run id (a seed run): its stored evaluation
  (the `eval/` artifact with the per-example tables) is used as it was scored;
- an evaluation folder (holding metrics.json, e.g. `runs/alpha/trials/<id>/eval`);
- a checkpoint (a folder with a model, a Ray Train checkpoint folder holding `model/`, a Hugging Face
  id or the alias `minilm-l6`): it is scored now, with the other side's evaluation settings when
  that is a stored run, else with the flags below (as `ncsearch eval` takes them).

Both sides must share a tokenizer (same token sequences, so the same units); each benchmark's units
are aligned by their keys and resampled with the same indices for both, so the interval and p-value
reflect only how the two differ. p-values are Holm-adjusted across the metrics shown.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncsearch.errors import ConfigError, UserInputError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_TRIAL_ID = re.compile(r"^[0-9a-f]{5,16}(_[0-9]{5})?$")


def add_parser(parser: argparse.ArgumentParser) -> None:
    from ncsearch._commands.eval import add_suite_arguments

    parser.add_argument("a", metavar="A", help="trial id, MLflow run id, evaluation folder or checkpoint (the reference)")
    parser.add_argument("b", metavar="B", help="the same kinds; differences are B - A")
    parser.add_argument("--tracking-uri", default=None, help="where run and trial ids are looked up (default: run directories)")
    parser.add_argument("--storage", default=None, help="folder holding run directories (default: runs)")
    add_suite_arguments(parser)  # how a checkpoint is scored when the other side is not a stored run
    parser.add_argument("--all", action="store_true", help="every shared metric, not only the headline ones")
    from ncsearch._commands.eval import TRUST_HELP

    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    parser.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="also write the comparison as JSON")


@dataclass
class _Side:
    """One side of the comparison: its per-benchmark tables, tokenizer and how it was evaluated."""

    name: str
    what: str
    details: dict[str, dict[str, Any]] | None = None  # benchmark -> {table: frame}
    tokenizer: str | None = None
    settings: dict[str, Any] | None = None  # eval settings of a stored run
    checkpoint: str | None = None  # a model still to be scored


def _stored(name: str, record: Any, what: str) -> _Side:
    identity = record.identity
    details = {b: record.details(b) for b in record.benchmarks}
    return _Side(name, what, details=details, tokenizer=identity.get("tokenizer"), settings=identity.get("eval"))


def _find_run(target: str, args: argparse.Namespace) -> tuple[str, str] | None:
    """(tracking URI, MLflow run id) of a trial id or run id, from --tracking-uri or the run directories."""
    from ncsearch._locate import _run_dirs
    from ncsearch.paths import RunLayout

    stores = []
    if args.tracking_uri:
        stores.append((args.tracking_uri, {}))
    for run_dir in _run_dirs(Path(args.storage or "runs")):
        data = json.loads(RunLayout(run_dir).tracking_file.read_text())
        stores.append((data["tracking_uri"], data.get("trials", {})))
    for uri, trials in stores:
        if target in trials:
            return uri, trials[target]
    if _RUN_ID.match(target):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        for uri, _ in stores:
            try:
                MlflowClient(tracking_uri=uri).get_run(target)
                return uri, target
            except MlflowException:
                continue
    if _TRIAL_ID.match(target) and args.tracking_uri:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=args.tracking_uri)
        for exp in client.search_experiments():
            runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`ncsearch.trial_id` = '{target}'")
            if runs:
                return args.tracking_uri, runs[0].info.run_id
    return None


def _resolve(target: str, args: argparse.Namespace, downloads: list) -> _Side:
    from ncsearch._eval_store import read_eval

    path = Path(target).expanduser()
    if path.is_dir() and (path / "metrics.json").is_file():
        return _stored(target, read_eval(path), f"evaluation folder {path}")
    if path.is_dir() and (path / "model" / "config.json").is_file():
        return _Side(target, f"checkpoint {path / 'model'}", checkpoint=str(path / "model"))
    if path.is_dir() and (path / "config.json").is_file():
        return _Side(target, f"checkpoint {path}", checkpoint=str(path))
    if path.exists():
        raise UserInputError(f"{target}: not an evaluation folder (metrics.json) or a model checkpoint (config.json)")
    found = _find_run(target, args)
    if found is not None:
        from mlflow import MlflowClient

        from ncsearch._records import eval_loader

        uri, run_id = found
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        if run.info.status != "FINISHED":
            raise UserInputError(f"{target}: run {run_id} is {run.info.status}, not a finished evaluation")
        try:
            record = eval_loader(client, run, downloads)()
        except Exception as err:  # the run has no eval/ artifact
            raise UserInputError(f"{target}: run {run_id} has no stored evaluation ({err})") from None
        return _stored(target, record, f"run {run_id} at {uri}")
    if _RUN_ID.match(target) or _TRIAL_ID.match(target):
        raise UserInputError(f"unknown run or trial id {target!r}: not found in {args.tracking_uri or 'the run directories under ' + (args.storage or 'runs')}")
    from ncsearch.models import ALIASES

    if target.lower() in ALIASES or (target.count("/") == 1 and not target.startswith((".", "/", "~"))):
        return _Side(target, f"model {target}", checkpoint=target)
    raise UserInputError(f"{target!r} is not a trial id, an MLflow run id, an evaluation folder or a model checkpoint")


def _score(side: _Side, settings: dict[str, Any], data_root: Path, fast_path: bool, *, trust_remote_code: bool = False) -> None:
    """Score `side`'s checkpoint with `settings` (a stored run's, or the flags'). `fast_path` always
    comes from the flags: it changes how scores are computed, not what they are, so `--no-fast-path`
    applies even when the other side's stored settings are used."""
    from ncsearch.evaluate import run_suite
    from ncsearch.models import load_mlm, tokenizer_fingerprint

    model, tokenizer = load_mlm(side.checkpoint, data_root=data_root, trust_remote_code=trust_remote_code)
    side.tokenizer = tokenizer_fingerprint(tokenizer)
    result = run_suite(model, tokenizer, settings["benchmarks"], data_root=data_root, limits=settings.get("limits") or {},
                       options=settings.get("options") or {}, batch_size=settings.get("batch_size", 64),
                       seed=settings.get("seed", 0), domains=settings.get("domains"), fast_path=fast_path, precision=settings.get("precision", "fp32"),
                       progress=False, resamples=0)
    details: dict[str, dict[str, Any]] = {}
    for key, table in result.details.items():
        benchmark, _, name = key.partition("/")
        details.setdefault(benchmark, {})[name] = table
    details.pop("suite", None)
    side.details = details
    side.settings = settings


def _tokenizer_of(checkpoint: str, data_root: Path, *, trust_remote_code: bool = False) -> str:
    from transformers import AutoTokenizer

    from ncsearch.models import ensure_model, tokenizer_fingerprint

    path = ensure_model(checkpoint, data_root=data_root, trust_remote_code=trust_remote_code)
    return tokenizer_fingerprint(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))


def main(args: argparse.Namespace) -> int:
    import fnmatch
    import tempfile

    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import compare, get_benchmark
    from ncsearch.report._tables import render
    from ncsearch.stats import holm

    from ncsearch._commands.eval import suite_settings

    if args.resamples < 1:
        raise ConfigError(f"--resamples must be positive, but got {args.resamples}")
    flags = suite_settings(args)
    if args.tracking_uri:
        from ncsearch._endpoints import adopt_credentials, check_tracking_uri

        args.tracking_uri = adopt_credentials(args.tracking_uri)
        check_tracking_uri(args.tracking_uri, existing=True)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # weight-loading bars would interleave with the table
    downloads: list[tempfile.TemporaryDirectory] = []
    sides = [_resolve(args.a, args, downloads), _resolve(args.b, args, downloads)]
    data_root = resolve_data_root(args.data_dir) if any(s.checkpoint for s in sides) else None
    # Tokenizers first: a mismatch is bad input, found before any scoring.
    for side in sides:
        if side.checkpoint and side.tokenizer is None:
            side.tokenizer = _tokenizer_of(side.checkpoint, data_root, trust_remote_code=args.trust_remote_code)
    if sides[0].tokenizer and sides[1].tokenizer and sides[0].tokenizer != sides[1].tokenizer:
        raise UserInputError(f"{args.a} and {args.b} use different tokenizers ({sides[0].tokenizer} vs "
                             f"{sides[1].tokenizer}): their examples are not the same token sequences, so they cannot be paired")
    stored = next((s.settings for s in sides if s.details is not None and s.settings), None)
    for side in sides:
        if side.checkpoint:
            _score(side, stored if stored and not args.benchmarks else flags, data_root, flags["fast_path"],
                   trust_remote_code=args.trust_remote_code)
    shared = sorted(set(sides[0].details) & set(sides[1].details))
    if not shared:
        raise UserInputError(f"{args.a} and {args.b} share no benchmark")
    rows = []
    for benchmark in shared:
        cls = get_benchmark(benchmark)
        patterns = (*cls.headline, *cls.bias_measures)
        for c in compare(benchmark, sides[0].details[benchmark], sides[1].details[benchmark], resamples=args.resamples):
            if args.all or any(fnmatch.fnmatchcase(c.metric, p) for p in patterns):
                rows.append(c)
    adjusted = holm([c.difference.p_value for c in rows])
    print(f"A: {sides[0].what}")
    print(f"B: {sides[1].what}")
    print(f"paired bootstrap, {args.resamples} resamples (seed 0), 95% percentile intervals; "
          "p two-sided, Holm-adjusted across the metrics shown")
    table = (["metric", "A", "B", "B - A (paired)", "p", "p (Holm)", "units"],
             [[c.metric, c.a.format(), c.b.format(), c.difference.format(),
               f"{c.difference.p_value:.3g}", f"{p:.3g}", f"{c.units} {c.unit}"] for c, p in zip(rows, adjusted)])
    print(render(table))
    if args.json_out is not None:
        payload = {"a": sides[0].what, "b": sides[1].what, "resamples": args.resamples, "metrics": [
            {"benchmark": c.benchmark, "metric": c.metric, "a": [c.a.value, c.a.low, c.a.high],
             "b": [c.b.value, c.b.low, c.b.high], "difference": [c.difference.value, c.difference.low, c.difference.high],
             "p_value": c.difference.p_value, "p_holm": float(p) if math.isfinite(p) else None, "units": c.units}
            for c, p in zip(rows, adjusted)]}
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json_out}")
    return 0
