"""Phase timings of every process of an `ncsearch run`, for bench/trial_cost.py.

Loaded by this folder's `sitecustomize.py` in every Python process started with this folder on
PYTHONPATH and NCSEARCH_PHASE_TRACE set to an output folder: the CLI process, Ray's Tune trial
actors and Ray Train workers alike (they inherit the environment). It wraps, as their modules are
imported, the functions each phase of a trial runs through. The names it wraps exist at every
commit bench/trial_cost.py compares, so the same instrumentation times old and new code:

| label | what is timed |
|---|---|
| ray.init | `ray.init` in the CLI process |
| train.fit (span) | `DataParallelTrainer.fit` (Train V2; TorchTrainer's too): worker-group start, training, teardown |
| loop (span) | `train_loop_per_worker` on a worker |
| model.load / checkpoint.read | `ncsearch.models.load_mlm` (a path under a checkpoint folder is a read) |
| train.data | `MLMBatches.batch` |
| train.forward | `SparseMLM.forward` |
| train.nc3 | `select_pairs`, `NC3Regularizer.update`, `NC3Regularizer.loss` |
| train.backward | `Tensor.backward` |
| train.optimizer | `Optimizer.zero_grad`, `clip_grad_norm_`, `Optimizer.step` (global step hooks) |
| checkpoint.write | `write_checkpoint` |
| eval.model_write | `write_model` in the recipe: the final model the trial's workers export to score it |
| reference | `ncsearch.evaluate._reference._compute`: a perplexity reference pass (once per model) |
| train.report | `ray.train.report` (with a checkpoint: persisting it to the run's storage) |
| eval.<benchmark> | each registered benchmark's `score` |
| eval.suite (span) | `run_suite` |
| tracking | the `MlflowClient` calls that write runs, metrics, params, tags and artifacts |
| import (span) | each thread's outermost module import (`importlib._bootstrap._find_and_load`) |

A phase inside another phase on the same thread is not counted again (the outer one holds it);
spans are always recorded. Each process appends JSON lines `{"label", "start", "dur", "pid", "span"}` (spans of `fit()` and of
the loop also carry "key", the Train run's folder in storage, which joins a trial's fit to its own workers' loops)
to `<NCSEARCH_PHASE_TRACE>/<pid>.jsonl`.
"""

from __future__ import annotations

import functools
import importlib.abc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_OUT = os.environ.get("NCSEARCH_PHASE_TRACE", "")
_local = threading.local()
_lock = threading.Lock()
_file = None


def _write(label: str, start: float, dur: float, span: bool, key: str | None = None) -> None:
    global _file
    row = {"label": label, "start": start, "dur": dur, "pid": os.getpid(), "span": span}
    if key is not None:
        row["key"] = key
    with _lock:
        if _file is None:
            os.makedirs(_OUT, exist_ok=True)
            _file = open(os.path.join(_OUT, f"{os.getpid()}.jsonl"), "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the process)
        _file.write(json.dumps(row) + "\n")


def _timed(label: str | Callable[..., str], fn: Callable[..., Any], *, span: bool = False,
           key: Callable[..., str | None] | None = None) -> Callable[..., Any]:
    if getattr(fn, "_phase_traced", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_local, "depth", 0)
        if not span and depth:
            return fn(*args, **kwargs)
        name = label(*args, **kwargs) if callable(label) else label
        joins = _safe_key(key, args, kwargs)
        if not span:
            _local.depth = depth + 1
        wall, started = time.time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if not span:
                _local.depth = depth
            _write(name, wall, time.perf_counter() - started, span, joins)

    wrapper._phase_traced = True  # type: ignore[attr-defined]
    return wrapper


def _safe_key(key: Callable[..., str | None] | None, args: tuple, kwargs: dict) -> str | None:
    if key is None:
        return None
    try:
        return key(*args, **kwargs)
    except Exception:  # noqa: BLE001 (a missing key only loses the join, never the run)
        return None


def _wrap(owner: Any, attr: str, label: str | Callable[..., str], *, span: bool = False,
          key: Callable[..., str | None] | None = None) -> None:
    fn = getattr(owner, attr, None)
    if fn is not None:
        setattr(owner, attr, _timed(label, fn, span=span, key=key))


def _run_name(trainer: Any, *args: Any, **kwargs: Any) -> str | None:
    """The Train run a `fit()` starts, as its folder in storage (RunConfig storage path / name): joins
    the span to its workers' loops. The name alone does not: every ncsearch trial names its run
    "train", each in its own trial folder."""
    config = trainer.run_config
    return os.path.join(os.path.abspath(str(config.storage_path)), config.name)


def _worker_run_name(*args: Any, **kwargs: Any) -> str | None:
    from ray.train.v2._internal.execution.context import get_train_context

    return get_train_context().get_storage().experiment_fs_path


def _load_label(name_or_path: Any, *args: Any, **kwargs: Any) -> str:
    # a checkpoint folder, or the final model a trial's workers export and read back to score it
    return "checkpoint.read" if "checkpoint" in str(name_or_path) or "ncsearch-ckpt" in str(name_or_path) else "model.load"


def _patch_torch() -> None:
    import torch

    _wrap(torch.Tensor, "backward", "train.backward")
    _wrap(torch.nn.utils, "clip_grad_norm_", "train.optimizer")
    _wrap(torch.optim.Optimizer, "zero_grad", "train.optimizer")
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    def pre(optimizer: Any, args: Any, kwargs: Any) -> None:
        _local.step_started = (time.time(), time.perf_counter())
        _local.depth = getattr(_local, "depth", 0) + 1

    def post(optimizer: Any, args: Any, kwargs: Any) -> None:
        _local.depth = max(0, getattr(_local, "depth", 1) - 1)
        wall, started = getattr(_local, "step_started", (time.time(), time.perf_counter()))
        if not _local.depth:
            _write("train.optimizer", wall, time.perf_counter() - started, False)

    register_optimizer_step_pre_hook(pre)
    register_optimizer_step_post_hook(post)


def _patch_recipe(module: Any) -> None:
    _wrap(module, "train_loop_per_worker", "loop", span=True, key=_worker_run_name)
    _wrap(module, "write_checkpoint", "checkpoint.write")
    _wrap(module, "write_model", "eval.model_write")  # evaluation on the workers: the model it scores
    _patch_torch()
    import ray.train

    _wrap(ray.train, "report", "train.report")


def _patch_evaluate(module: Any) -> None:
    from ncsearch.evaluate import _base

    registry = getattr(_base, "_BENCHMARKS", None)
    for name in getattr(registry, "_classes", {}):
        cls = registry._classes[name]
        if "score" in vars(cls):
            cls.score = _timed(f"eval.{name}", vars(cls)["score"])
    _wrap(module, "run_suite", "eval.suite", span=True)


def _patch_mlflow_client(module: Any) -> None:
    client = module.MlflowClient
    for attr in ("create_run", "log_batch", "log_metric", "log_param", "set_tag", "log_artifact", "log_artifacts",
                 "log_dict", "log_text", "log_figure", "log_image", "log_table", "set_terminated", "update_run",
                 "log_inputs", "create_experiment", "set_experiment_tag"):
        _wrap(client, attr, "tracking")


def _patch_collapse(module: Any) -> None:
    _wrap(module, "select_pairs", "train.nc3")
    regularizer = getattr(module, "NC3Regularizer", None)
    if regularizer is not None:
        _wrap(regularizer, "update", "train.nc3")
        _wrap(regularizer, "loss", "train.nc3")


def _patch_trainer(module: Any) -> None:
    # The base class of Train V2's TorchTrainer, and itself the trainer of a one-CPU-worker run since
    # 6474b5a (training/_lean_trainer.py): neither overrides fit(), so every commit is timed here.
    trainer = getattr(module, "DataParallelTrainer", None)
    if trainer is not None:
        _wrap(trainer, "fit", "train.fit", span=True, key=_run_name)


_PATCHES: dict[str, Callable[[Any], None]] = {
    "ray": lambda m: _wrap(m, "init", "ray.init", span=True),
    "ray.train.v2.api.data_parallel_trainer": _patch_trainer,
    "ncsearch.training._data": lambda m: _wrap(m.MLMBatches, "batch", "train.data"),
    "ncsearch.heads": lambda m: _wrap(m.SparseMLM, "forward", "train.forward"),
    "ncsearch.collapse": _patch_collapse,
    "ncsearch.training._recipe": _patch_recipe,
    "ncsearch.models": lambda m: _wrap(m, "load_mlm", _load_label),
    "ncsearch.evaluate": _patch_evaluate,
    "ncsearch.evaluate._reference": lambda m: _wrap(m, "_compute", "reference"),
    "mlflow.tracking.client": _patch_mlflow_client,
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a patched module so the patch runs after it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                _PATCHES[fullname](module)
            except Exception as err:  # noqa: BLE001 - a missing name at some commit: leave that phase untimed
                print(f"[phase trace] {fullname}: {err}", file=sys.stderr)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _time_imports() -> None:
    """Records each thread's outermost module import as an "import" span (pid and time), so that
    bench/trial_cost.py can say how much of a trial's fixed costs is a fresh worker process importing
    Ray, torch and transformers. Both `import` statements and `importlib.import_module` (transformers'
    lazy modules) load a module through `importlib._bootstrap._find_and_load`."""
    import importlib._bootstrap as bootstrap

    original = bootstrap._find_and_load
    if getattr(original, "_phase_traced", False):
        return

    def find_and_load(name: str, import_: Any) -> Any:
        if getattr(_local, "importing", False):
            return original(name, import_)
        _local.importing = True
        wall, started = time.time(), time.perf_counter()
        try:
            return original(name, import_)
        finally:
            _local.importing = False
            _write("import", wall, time.perf_counter() - started, True)

    find_and_load._phase_traced = True  # type: ignore[attr-defined]
    bootstrap._find_and_load = find_and_load


def install() -> None:
    if _OUT and not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())
        _time_imports()
