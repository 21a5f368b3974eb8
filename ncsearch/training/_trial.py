"""One trial's training run: a TorchTrainer (Ray Train V2) over `train_loop_per_worker`.

`fit_trial` is what the search's trial driver and `ncsearch train` call. Running it again with the
same `storage_path` and `name` resumes the run: Train V2 restores its checkpoint manager from the run
folder, and the workers continue from the latest checkpoint (`ray.train.get_checkpoint()`). A Tune
trial retried after a failure therefore loses at most `checkpoint_every` steps.

`fit_runs` trains several concrete specs (e.g. a configuration's seeds) one after another in one
Train run, so that they share its worker processes and their start-up (`_run_sequence.py`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch.errors import ConfigError, NcsearchError, TrialError

if TYPE_CHECKING:
    from ncsearch.config import SearchSpec

__all__ = ["TrainOutcome", "build_trainer", "enable_train_v2", "fit_runs", "fit_trial", "metrics_log", "read_metrics_log"]

V2_ENV = "RAY_TRAIN_V2_ENABLED"


@dataclass(frozen=True)
class TrainOutcome:
    """The final checkpoint (its `model/` loads with load_mlm) and the last reported metrics (numbers
    as floats; strings, such as a node id, as they are).

    `checkpoint_uri` is where the checkpoint lives in the run's storage: a local path, or a URI
    (`s3://bucket/...`) when the storage path is one. `checkpoint_dir` is it as a local path, for local
    storage only.
    """

    checkpoint_uri: str
    metrics: dict[str, Any]

    @property
    def checkpoint_dir(self) -> Path:
        if is_uri(self.checkpoint_uri):
            raise NcsearchError(f"the checkpoint is not on this machine: {self.checkpoint_uri}")
        return Path(self.checkpoint_uri)

    @property
    def model_dir(self) -> Path:
        return self.checkpoint_dir / "model"


def is_uri(location: str | Path) -> bool:
    """Whether a storage location is a URI (s3://, gs://, ...) rather than a local or mounted path."""
    return "://" in str(location)


def _storage_location(storage_path: str | Path) -> str:
    """A storage path as Ray Train takes it: a URI unchanged, a local path absolute."""
    return str(storage_path) if is_uri(storage_path) else str(Path(storage_path).expanduser().resolve())


def enable_train_v2() -> None:
    """Select Ray Train V2 (must happen before `ray.train` is first imported) and check that it took."""
    os.environ.setdefault(V2_ENV, "1")
    from ray.train.v2._internal.constants import is_v2_enabled

    if not is_v2_enabled():
        raise NcsearchError(f"ncsearch needs Ray Train V2, but {V2_ENV}={os.environ.get(V2_ENV)!r}; unset it or set it to 1")


def metrics_log(path: str | Path) -> Any:
    """A Train callback appending every report of the run to the JSON-lines file `path`."""
    enable_train_v2()
    from ncsearch.training._callbacks import MetricsLog

    return MetricsLog(path)


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows a `metrics_log` callback wrote, numbers restored (NaN included)."""
    import json

    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append({k: (float(v) if v in ("nan", "inf", "-inf") else v) for k, v in row.items()})
    return rows


def build_trainer(
    spec: SearchSpec,
    *,
    data_root: str | Path,
    storage_path: str | Path,
    name: str,
    model_path: str,
    callbacks: Sequence[Any] = (),
    max_failures: int = 0,
    num_to_keep: int = 2,
    extra_config: dict[str, Any] | None = None,
    runs: Sequence[dict[str, Any]] | None = None,
) -> Any:
    """The trainer of one trial (not started; training/_lean_trainer.py: a TorchTrainer, or for one CPU
    worker a DataParallelTrainer without the torch backend). `extra_config` is merged into the worker
    config. `runs` ({"spec": ..., "evaluation": ...} each, `spec` giving the workers): train those one
    after another instead (`_run_sequence.py`)."""
    enable_train_v2()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from ncsearch.training._lean_trainer import lean_trainer
    from ncsearch.training._recipe import train_loop_per_worker
    from ncsearch.training._run_sequence import checkpoint_config

    resources = spec.resources
    per_worker: dict[str, float] = {"CPU": float(resources.cpus_per_worker)}
    if resources.gpus_per_worker > 0:
        per_worker["GPU"] = float(resources.gpus_per_worker)
    config = {"spec": spec.to_dict(), "data_root": str(data_root), "model_path": str(model_path)}
    config.update(extra_config or {})
    if runs:
        config["runs"] = [dict(run) for run in runs]
    return lean_trainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=resources.workers_per_trial,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=_storage_location(storage_path),
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(**checkpoint_config(len(runs) if runs else 1, num_to_keep=num_to_keep)),
        ),
    )


def fit_trial(
    spec: SearchSpec,
    *,
    data_root: str | Path,
    storage_path: str | Path,
    name: str,
    callbacks: Sequence[Any] = (),
    model_path: str | None = None,
    max_failures: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train one concrete spec on Ray Train and return its final checkpoint.

    `model_path` defaults to `ensure_model(spec.model)` (a no-op when the search driver already
    resolved it). `extra_config` goes to the workers with the spec (the search's trials pass
    `{"evaluation": ...}`, see training/_evaluate.py). `max_failures` is Ray Train's worker-restart budget within this call (0: a failure
    ends the call; the Tune trial retry then resumes from the checkpoint). Raises TrialError with the
    worker's reason when training fails (e.g. "non-finite loss at step N: ...").
    """
    _check_runnable(spec)
    trainer = build_trainer(
        spec,
        data_root=data_root,
        storage_path=storage_path,
        name=name,
        model_path=_model_path(spec, data_root, model_path),
        callbacks=callbacks,
        max_failures=max_failures,
        extra_config=extra_config,
    )
    result = _fit(trainer, name)
    if result.checkpoint is None:
        raise TrialError(f"training run {name!r} finished without a checkpoint")
    return _outcome(result.checkpoint, result.metrics, storage_path)


def fit_runs(
    specs: Sequence[SearchSpec],
    *,
    data_root: str | Path,
    storage_path: str | Path,
    name: str,
    evaluations: Sequence[dict[str, Any] | None] | None = None,
    callbacks: Sequence[Any] = (),
    model_path: str | None = None,
    max_failures: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> list[TrainOutcome]:
    """Train the concrete `specs` one after another in one Train run, and return each one's final
    checkpoint and metrics, as `fit_trial` would for it alone (`_run_sequence.py`).

    The runs share the worker group, so they must agree on the model and on `resources`; each may
    differ in anything else (seed, alpha, baseline options). `evaluations[i]` is run i's
    `{"identity": ...}` for an evaluation after its last step (None: no evaluation). Running it again
    with the same `storage_path` and `name` resumes: the runs that had finished are not trained again.
    """
    specs = list(specs)
    if not specs:
        raise ConfigError("fit_runs needs at least one spec")
    first = specs[0]
    for spec in specs:
        _check_runnable(spec)
        if spec.model != first.model or spec.resources != first.resources:
            raise ConfigError("the runs of one Train run share its workers: every spec needs the same model and resources "
                              f"(got model {spec.model!r} with {spec.resources!r}, and {first.model!r} with {first.resources!r})")
    evaluations = list(evaluations) if evaluations is not None else [None] * len(specs)
    if len(evaluations) != len(specs):
        raise ConfigError(f"fit_runs got {len(specs)} specs and {len(evaluations)} evaluations")
    runs = [{"spec": spec.to_dict(), "evaluation": evaluation} for spec, evaluation in zip(specs, evaluations)]
    trainer = build_trainer(first, data_root=data_root, storage_path=storage_path, name=name,
                            model_path=_model_path(first, data_root, model_path),
                            callbacks=callbacks, max_failures=max_failures, extra_config=extra_config, runs=runs)
    result = _fit(trainer, name)
    if len(specs) == 1:
        if result.checkpoint is None:
            raise TrialError(f"training run {name!r} finished without a checkpoint")
        return [_outcome(result.checkpoint, result.metrics, storage_path)]
    from ncsearch.training._run_sequence import FINAL_KEEP, KEEP_KEY, RUN_KEY

    finals = {int(metrics[RUN_KEY]): (checkpoint, metrics) for checkpoint, metrics in (result.best_checkpoints or [])
              if float(metrics.get(KEEP_KEY, 0)) >= FINAL_KEEP}
    missing = [i for i in range(len(specs)) if i not in finals]
    if missing:
        raise TrialError(f"training run {name!r} finished without the final checkpoint of run(s) {missing}")
    return [_outcome(*finals[i], storage_path) for i in range(len(specs))]


def _model_path(spec: SearchSpec, data_root: str | Path, model_path: str | None) -> str:
    """`model_path`, or `ensure_model(spec.model)` when None (a no-op once the search driver resolved it)."""
    if model_path is not None:
        return model_path
    from ncsearch.models import ensure_model

    return ensure_model(spec.model, data_root=Path(data_root), trust_remote_code=spec.trust_remote_code)


def _check_runnable(spec: SearchSpec) -> None:
    if not spec.is_concrete():
        raise ConfigError(f"a training run needs fixed values; still searched: {', '.join(spec.distributions())}")
    workers = spec.resources.workers_per_trial
    if spec.train.batch_size < workers:
        raise ConfigError(
            f"train.batch_size {spec.train.batch_size} is the global batch and must be at least "
            f"resources.workers_per_trial ({workers})"
        )


def _fit(trainer: Any, name: str) -> Any:
    """`trainer.fit()`'s Result, with a failure raised as TrialError (the workers' reason)."""
    from ray.train import TrainingFailedError

    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        raise TrialError(failure_reason(err)) from err
    if result.error is not None:
        raise TrialError(failure_reason(result.error)) from result.error
    return result


def _outcome(checkpoint: Any, reported: dict[str, Any] | None, storage_path: str | Path) -> TrainOutcome:
    """A TrainOutcome of a checkpoint in the run's storage and the metrics reported with it."""
    metrics: dict[str, Any] = {}
    for key, value in (reported or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = float(value)
        elif isinstance(value, str):
            metrics[key] = value
    location = _storage_location(storage_path)
    where = f"{location.split('://', 1)[0]}://{checkpoint.path}" if is_uri(location) else checkpoint.path
    return TrainOutcome(checkpoint_uri=where, metrics=metrics)


def failure_reason(err: BaseException) -> str:
    """One line saying why a Train run failed: the workers' own message (a TrialError's text) when
    there is one, else the first line of the error."""
    controller = getattr(err, "controller_failure", None)
    if isinstance(controller, TrialError):  # raised by a Train callback (training/_tune_report.py)
        return str(controller)
    failures = getattr(err, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        found = _find_trial_error(cause)
        if found:
            return found
    for rank in sorted(failures):
        return f"worker {rank} failed: {_first_line(failures[rank])}"
    return _first_line(err)


def _find_trial_error(error: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TrialError):
            return str(current)
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    # Errors that crossed a process boundary may only keep their text.
    text = str(error)
    marker = "TrialError: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0].strip()
    return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()
