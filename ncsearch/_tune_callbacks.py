"""Tune callbacks of a search, running in the driver: MLflow tracking and compact progress lines.

Imported only by `ncsearch.search` after Ray Train V2 has been selected. Both callbacks are pickled
with the Tuner (Tune stores its RunConfig) and so keep only plain state; the MLflow client and the
run-id map are re-read from the run directory after a `--resume`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from ncsearch.config import SearchSpec, parse_spec
from ncsearch.tracking import SearchTracker, failure_reason, flatten_params

__all__ = ["FINAL_KEY", "ProgressCallback", "TrackingCallback", "final_metrics", "trial_error_text"]

#: Set in the one result the trial driver reports after evaluation.
FINAL_KEY = "ncsearch/final"
EVAL_DIR_KEY = "ncsearch/eval_dir"


def final_metrics(result: dict[str, Any], benchmarks: tuple[str, ...]) -> dict[str, float]:
    """The numeric metrics of a trial's final result worth keeping: benchmark metrics, train/* and
    time/* (Tune's own bookkeeping keys and the config are left out)."""
    prefixes = tuple(f"{b}/" for b in benchmarks) + ("train/", "time/")
    out = {}
    for key, value in result.items():
        if key.startswith(prefixes) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def trial_error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return ""


class TrackingCallback(Callback):
    """Writes the MLflow child runs (DESIGN.md §8) as Tune reports trial events."""

    def __init__(self, run_dir: str, spec: dict[str, Any]):
        self.run_dir = run_dir
        self.spec_data = spec
        self._tracker: SearchTracker | None = None
        self._spec: SearchSpec | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "spec_data": self.spec_data, "_tracker": None, "_spec": None}

    @property
    def tracker(self) -> SearchTracker:
        if self._tracker is None:
            self._tracker = SearchTracker(self.run_dir)
        return self._tracker

    @property
    def spec(self) -> SearchSpec:
        if self._spec is None:
            self._spec = parse_spec(self.spec_data, source="<search spec>")
        return self._spec

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        resolved = self.spec.resolve(trial.config).to_dict()
        self.tracker.start_trial(trial.trial_id, params=flatten_params(resolved), trial_name=f"trial-{trial.trial_id}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(FINAL_KEY) or "step" not in result:
            return
        metrics = {k: v for k, v in result.items() if k.startswith("train/")}
        self.tracker.log_step(trial.trial_id, metrics, step=int(result["step"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        metrics = final_metrics(result, self.spec.eval.benchmark_names())
        self.tracker.finish_trial(trial.trial_id, metrics, artifact_dir=result.get(EVAL_DIR_KEY),
                                  tags={"ncsearch.checkpoint": str(result.get("ncsearch/checkpoint", ""))})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = trial_error_text(trial)
        self.tracker.fail_trial(trial.trial_id, failure_reason(text) if text else "unknown error", error_text=text or None)


class ProgressCallback(Callback):
    """One short line per trial event, with the objectives on completion."""

    def __init__(self, objectives: list[tuple[str, str]], total: int, steps: int | None = None, stream: TextIO | None = None):
        self.objectives = objectives
        self.total = total
        self.steps = steps
        self._stream = stream
        self._started: dict[str, float] = {}
        self._done = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    def get_state(self) -> dict[str, Any]:
        # Saved with Tune's experiment state, so a resumed search keeps counting where it stopped.
        return {"done": self._done}

    def set_state(self, state: dict[str, Any]) -> None:
        self._done = int(state.get("done", 0))

    def _print(self, text: str) -> None:
        stream = self._stream or sys.stdout
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started[trial.trial_id] = time.monotonic()
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.config.items()))
        self._print(f"trial {trial.trial_id} started: {params}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(FINAL_KEY) or "step" not in result:
            return
        shown = ", ".join(f"{k.removeprefix('train/')}={_short(result[k])}" for k in ("train/loss", "train/unc3", "train/nc3") if k in result)
        of = f"/{self.steps}" if self.steps else ""
        self._print(f"trial {trial.trial_id} step {int(result['step'])}{of}: {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done += 1
        result = trial.last_result or {}
        took = time.monotonic() - self._started.get(trial.trial_id, time.monotonic())
        shown = ", ".join(f"{m}={_short(result.get(m, math.nan))}" for m, _ in self.objectives)
        self._print(f"trial {trial.trial_id} finished ({self._done}/{self.total}, {took:.0f}s): {shown}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = trial_error_text(trial)
        self._print(f"trial {trial.trial_id} crashed, retrying: {failure_reason(text) if text else 'unknown error'}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done += 1
        text = trial_error_text(trial)
        self._print(f"trial {trial.trial_id} FAILED ({self._done}/{self.total}): {failure_reason(text) if text else 'unknown error'}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
