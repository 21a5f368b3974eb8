"""Runs (or resumes) one search: the Tuner, the trial driver, tracking and the Pareto report.

Data flow (DESIGN.md §2): the spec is translated by `ncsearch.space`; the model is resolved (adapted
once, cached) and the data root found in this process *before* Ray starts, so trials never adapt;
each Tune trial runs `trial_driver`, which fits a Ray Train V2 TorchTrainer (`ncsearch.train.fit_trial`,
streaming train/* metrics into Tune through `TuneReportCallback`), evaluates the final checkpoint
with `ncsearch.evaluate.run_suite` and reports the objectives. Tune callbacks in this process write
MLflow (`ncsearch.tracking`) and the progress lines; at the end `ncsearch.pareto` computes the front.

Run directory: `<storage>/<name>` (absolute), holding
  tune/         the Tuner's experiment (Ray storage path; what `--resume` restores)
  trials/<id>/  per trial: train/ (the Ray Train run and checkpoints), eval/ (details JSON, metrics)
  optuna.db     the Optuna study (`optuna-dashboard sqlite:///.../optuna.db`, `optuna.load_study`)
  mlflow.db, mlartifacts/   the default MLflow store
  pareto/       pareto.csv, all_trials.csv, pareto.png, pareto.html
  spec.yaml, tracking.json

Resources: the trial driver only coordinates, so it asks Tune for no CPU; a Tune trial cannot ask
for nothing at all, so it reserves a little memory (`TRIAL_DRIVER_MEMORY`) instead. Two cores thus
fit two trials of one 1-CPU worker each. Evaluation runs in the driver after training has released
its worker, so it uses the CPU the trial's worker just freed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch.config import SearchSpec, parse_spec
from ncsearch.errors import ConfigError, TrialError, UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from ncsearch.pareto import ParetoInfo

__all__ = [
    "TRIAL_DRIVER_MEMORY",
    "SearchOutcome",
    "TrialContext",
    "main_exit_code",
    "run_dir_for",
    "run_search",
    "summary_table",
    "trial_driver",
    "trials_frame",
]

#: Memory (bytes) a trial driver reserves in Ray instead of a CPU: it loads one model for evaluation.
TRIAL_DRIVER_MEMORY = 512 * 1024**2
TUNE_DIR = "tune"
FINAL_KEY = "ncsearch/final"

# Environment the trial processes need; forwarded through Ray's runtime_env when set here.
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "NCSEARCH_CACHE_DIR",
                  "NCSEARCH_ADAPT_STEPS", "NCSEARCH_DATA_DIR", "RAY_TRAIN_V2_ENABLED")


def _select_train_v2() -> None:
    """Ray Train V2 must be selected before `ray.train` is first imported (here or in a trial)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if os.environ["RAY_TRAIN_V2_ENABLED"] != "1":
        raise UserInputError(f"ncsearch needs Ray Train V2, but RAY_TRAIN_V2_ENABLED={os.environ['RAY_TRAIN_V2_ENABLED']!r}; unset it")


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its config; passed with `tune.with_parameters`."""

    spec: dict[str, Any]
    run_dir: str
    data_root: str
    model_path: str


def trial_driver(config: dict[str, Any], context: TrialContext) -> None:
    """One Tune trial: train (Ray Train V2), evaluate the final checkpoint, report the objectives.

    `config` is `{dotted.path: value}` for the searched fields. Raises `TrialError` when training
    fails or an objective is missing/non-finite, which Tune records as the trial's error (and retries
    up to `search.max_failures` times; training resumes from its last checkpoint).
    """
    _select_train_v2()
    import torch
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ncsearch.evaluate import run_suite
    from ncsearch.models import load_mlm
    from ncsearch.train import fit_trial

    spec = parse_spec(context.spec, source="<search spec>").resolve(config)
    trial_id = tune.get_context().get_trial_id()
    trial_dir = Path(context.run_dir) / "trials" / trial_id

    start = time.perf_counter()
    outcome = fit_trial(spec, data_root=context.data_root, storage_path=trial_dir, name="train",
                        callbacks=[TuneReportCallback()], model_path=context.model_path)
    train_s = time.perf_counter() - start

    # The trial's worker CPUs are free again; evaluate with as many threads as it had.
    torch.set_num_threads(max(1, round(spec.resources.workers_per_trial * spec.resources.cpus_per_worker)))
    start = time.perf_counter()
    model, tokenizer = load_mlm(str(outcome.model_dir))
    result = run_suite(model, tokenizer, spec.eval.benchmark_names(), data_root=context.data_root,
                       limits=dict(spec.eval.limits), batch_size=spec.eval.batch_size, seed=spec.eval.seed,
                       domains=spec.eval.domain_filter(), progress=False)
    eval_s = time.perf_counter() - start
    eval_dir = _write_eval(trial_dir / "eval", result)

    bad = [o.metric for o in spec.objectives
           if not isinstance(result.metrics.get(o.metric), (int, float)) or not math.isfinite(result.metrics[o.metric])]
    if bad:
        raise TrialError(f"objective(s) missing or not finite after evaluation: "
                         + ", ".join(f"{m}={result.metrics.get(m)!r}" for m in bad))
    final = {k: float(v) for k, v in result.metrics.items()}
    final.update({"time/train_s": train_s, "time/eval_s": eval_s, FINAL_KEY: 1.0,
                  "ncsearch/eval_dir": str(eval_dir), "ncsearch/checkpoint": str(outcome.checkpoint_dir)})
    tune.report(final)


def _write_eval(folder: Path, result: Any) -> Path:
    """metrics.json plus one JSON file per details table (`<benchmark>/<table>.json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(result.metrics, indent=1, sort_keys=True))
    for key, frame in result.details.items():
        path = folder / (key.replace("..", "_") + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_json(path, orient="records", indent=1, default_handler=str)
    return folder


# ----- the driver ----------------------------------------------------------------------------------


@dataclass
class SearchOutcome:
    """What a finished (or interrupted) search produced."""

    run_dir: Path
    trials: pd.DataFrame
    pareto: ParetoInfo
    tracking_uri: str
    experiment: str
    parent_run_id: str
    finished: int
    failed: int
    expected: int
    budget_reached: bool = False

    @property
    def complete(self) -> bool:
        """Every trial ran, or the search stopped at its `search.time_budget_s` as asked."""
        return self.budget_reached or self.finished + self.failed >= self.expected


def run_dir_for(spec: SearchSpec, storage: str | Path | None = None) -> Path:
    """`<storage>/<name>`, absolute; `storage` defaults to the spec's (`runs`, relative to the cwd)."""
    return (Path(storage or spec.storage).expanduser() / spec.name).resolve()


def _check_resume(spec: SearchSpec, run_dir: Path) -> None:
    saved_path = run_dir / "spec.yaml"
    if not saved_path.is_file():
        return
    import yaml

    saved = yaml.safe_load(saved_path.read_text())
    now = spec.to_dict()
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{run_dir}: cannot resume, the search space changed since it started "
                          f"(top-level keys differ: {', '.join(changed)}); start a new search with another --storage or name")


class _KnownTrialErrors:
    """Logging filter for Tune's per-trial error tracebacks, which ncsearch already reports in one
    line (progress output) and in full (the trial's MLflow run, error.txt); shown with --verbose."""

    MESSAGES = ("Trial task failed for trial", "Trials did not complete")

    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith(self.MESSAGES)


def _quiet_tune_errors() -> None:
    import logging

    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownTrialErrors) for f in logger.filters):
            logger.addFilter(_KnownTrialErrors())


def _init_ray(address: str | None, *, verbose: bool) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    ray.init(address=address, include_dashboard=False, logging_level=logging.INFO if verbose else logging.WARNING,
             log_to_driver=verbose, runtime_env={"env_vars": env} if env else None)


def run_search(
    spec: SearchSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    num_samples: int | None = None,
    data_dir: str | Path | None = None,
    storage: str | Path | None = None,
    yaml_path: str | Path | None = None,
    tracking_uri: str | None = None,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
) -> SearchOutcome:
    """Run the search of `spec` to the end (or `resume` the one in its run directory).

    Everything that can be wrong with the input (the spec, the data root, the model, an existing run
    directory) is checked before Ray starts. Failed trials are retried up to `search.max_failures`
    times and then recorded as failed; the search goes on.
    """
    from ncsearch.space import translate

    plan = translate(spec, num_samples=num_samples)
    run_dir = run_dir_for(spec, storage)
    tune_dir = run_dir / TUNE_DIR
    echo(f"run directory: {run_dir}")
    for note in plan.notes:
        echo(f"note: {note}")

    _select_train_v2()
    from ray import tune

    if resume:
        if not tune.Tuner.can_restore(str(tune_dir)):
            raise UserInputError(f"nothing to resume: no Tune experiment in {tune_dir}")
        _check_resume(spec, run_dir)
    elif tune_dir.exists():
        raise UserInputError(
            f"{run_dir} already holds a search; pass --resume to continue it, or choose another "
            "--storage (or --set name=...) for a new one"
        )

    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    data_root = resolve_data_root(data_dir or spec.data_dir)
    echo(f"data: {data_root}")
    t0 = time.perf_counter()
    model_path = ensure_model(spec.model, data_root=data_root)
    echo(f"model: {spec.model} -> {model_path} ({time.perf_counter() - t0:.0f}s)")

    import yaml

    from ncsearch.tracking import SearchTracker, default_tracking_uri

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    uri = tracking_uri or spec.tracking.uri or (None if resume else default_tracking_uri(run_dir))
    tracker = SearchTracker(run_dir, tracking_uri=uri, experiment=spec.tracking.experiment or spec.name)
    parent = tracker.start_parent(spec, yaml_path=yaml_path, ray_address=address, resume=resume)
    echo(f"tracking: {tracker.tracking_uri} (experiment {tracker.experiment!r}, parent run {parent})")
    echo(f"optuna study: sqlite:///{run_dir / 'optuna.db'} (study {spec.name!r})")

    # Tune saves its experiment state at most this often (default "auto": >= 10 s). Trials take
    # minutes, so saving every second is cheap, and a driver killed right after a trial finished
    # does not run that trial again on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # The legacy reporter honours verbose=0; the new one prints its configuration box regardless.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Step results carry train/* only; the objectives arrive with the final result of each trial.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    _init_ray(address, verbose=verbose)
    if not verbose:
        _quiet_tune_errors()

    from ncsearch._tune_callbacks import ProgressCallback, TrackingCallback

    context = TrialContext(spec=spec.to_dict(), run_dir=str(run_dir), data_root=str(data_root), model_path=model_path)
    trainable = tune.with_resources(tune.with_parameters(trial_driver, context=context),
                                    {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    objectives = [(o.metric, o.mode) for o in spec.objectives]
    start = time.perf_counter()
    if resume:
        echo(f"resuming the search in {tune_dir}")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        callbacks = [TrackingCallback(str(run_dir), spec.to_dict()),
                     ProgressCallback(objectives, plan.num_samples, steps=spec.train.steps if isinstance(spec.train.steps, int) else None)]
        tuner = tune.Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=tune.TuneConfig(
                search_alg=plan.searcher(storage_url=f"sqlite:///{run_dir / 'optuna.db'}", study_name=spec.name),
                num_samples=plan.num_samples,
                time_budget_s=spec.search.time_budget_s,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(run_dir),
                failure_config=tune.FailureConfig(max_failures=spec.search.max_failures),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    try:
        grid = tuner.fit()
    except BaseException:
        tracker.client.set_terminated(parent, status="FAILED")
        raise
    wall = time.perf_counter() - start
    trials = trials_frame(grid, spec, tracker)
    return _finish(spec, run_dir, tracker, trials, plan.num_samples, wall, echo)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def trials_frame(grid: Any, spec: SearchSpec, tracker: Any) -> pd.DataFrame:
    """One row per trial of a Tune ResultGrid: id, status, searched params, metrics, error."""
    import pandas as pd

    from ncsearch.tracking import failure_reason

    searched = list(spec.distributions())
    benches = tuple(f"{b}/" for b in spec.eval.benchmark_names())
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(str(result.path)).name.removeprefix("trial_")
        if result.error is not None:
            status = "ERROR"
        elif metrics.get(FINAL_KEY):
            status = "TERMINATED"
        else:
            status = "INCOMPLETE"
        row: dict[str, Any] = {"trial": trial_id, "status": status}
        row.update({f"param.{k}": result.config.get(k) for k in searched})
        row.update({k: v for k, v in metrics.items()
                    if k.startswith(benches + ("time/",)) and isinstance(v, (int, float))})
        if result.error is not None:
            row["error"] = failure_reason(str(result.error))
        row["mlflow_run_id"] = tracker.child_run_id(trial_id)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("trial", kind="stable").reset_index(drop=True)
    return frame


def _finish(spec: SearchSpec, run_dir: Path, tracker: Any, trials: pd.DataFrame, expected: int, wall: float,
            echo: Callable[[str], None]) -> SearchOutcome:
    from ncsearch.pareto import format_front, pareto_info, write_pareto_artifacts

    info = pareto_info(trials, spec.objectives)
    out_dir = run_dir / "pareto"
    write_pareto_artifacts(info, out_dir)
    finished = int((trials["status"] == "TERMINATED").sum()) if len(trials) else 0
    failed = int((trials["status"] == "ERROR").sum()) if len(trials) else 0
    budget = spec.search.time_budget_s
    budget_reached = budget is not None and wall >= budget and finished + failed < expected
    complete = budget_reached or finished + failed >= expected
    status = "FINISHED" if complete and finished else ("FAILED" if complete else "KILLED")
    tracker.finish_parent(info, out_dir, status=status,
                          counts={"trials/finished": finished, "trials/failed": failed, "search/wall_s": wall})
    echo("")
    echo(summary_table(info))
    echo("")
    echo("Pareto front:")
    echo(format_front(info, extra=[c for c in info.trials.columns if c.startswith("param.")]))
    echo(f"{finished} finished, {failed} failed of {expected} trials in {wall:.0f}s; artifacts in {out_dir}")
    if budget_reached:
        echo(f"stopped at the time budget (search.time_budget_s = {budget:g} s)")
    elif not complete:
        echo(f"the search stopped early; continue it with: ncsearch run ... --resume (run directory {run_dir})")
    return SearchOutcome(run_dir=run_dir, trials=trials, pareto=info, tracking_uri=tracker.tracking_uri,
                         experiment=tracker.experiment, parent_run_id=tracker.parent_run_id,
                         finished=finished, failed=failed, expected=expected, budget_reached=budget_reached)


def summary_table(info: ParetoInfo) -> str:
    """Every trial, one line each: id, status, searched params, objectives, Pareto mark or the error."""
    trials = info.trials
    if trials.empty:
        return "no trials ran"
    params = [c for c in trials.columns if c.startswith("param.")]
    heads = ["trial", "status"] + [p.removeprefix("param.") for p in params] + info.metrics + ["front / error"]
    rows = []
    for _, row in trials.iterrows():
        cells = [str(row["trial"]), str(row["status"])]
        cells += [_fmt(row[p]) for p in params] + [_fmt(row.get(m)) for m in info.metrics]
        error = row.get("error")
        if isinstance(error, str) and error:
            cells.append(error[:100])
        else:
            cells.append("*" if row["pareto"] else "")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main_exit_code(outcome: SearchOutcome) -> int:
    """0 when at least one trial finished and the search ran to the end, else 1."""
    return 0 if outcome.finished and outcome.complete else 1
