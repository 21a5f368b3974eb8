"""Tune callbacks of a search, running in the driver: MLflow tracking and compact progress lines.

Imported only by `ncsearch.search` after Ray Train V2 has been selected. Both callbacks are pickled
with the Tuner (Tune stores its RunConfig) and so keep only plain state; the MLflow client is
re-created after a `--resume`, and which groups were already summarised is saved with Tune's
experiment state (`get_state`).

When every seed of a configuration (and of its control) has ended, `TrackingCallback` summarises it
(`ncsearch.analysis`, from the trials' evaluation folders) onto the configuration's MLflow run and
prints one line with its objectives and their intervals.

A seed's run is named by `TrialIdentity.run_key`: the trial id, or for a trial that trains several
seeds (`search.shared_train_run`) the trial id and the seed. Such a trial's step results say which of
its runs they are from (`RUN_KEY`, the run's place in the trial), and it reports one final result
per seed, each of which finishes that seed's MLflow run as it arrives.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from ncsearch._eval_store import local_eval_dir
from ncsearch._node import NODE_ID_KEY, NODE_IP_KEY
from ncsearch._trial_driver import (
    CHECKPOINT_KEY,
    EVAL_DIR_KEY,
    FINAL_KEY,
    REPLICATE_RESULT_KEY,
    ROLE_CONTROL,
    TOKENIZER_KEY,
    TrialIdentity,
    run_spec,
    searched_values,
    trial_benchmarks,
)
from ncsearch.config import SearchSpec, parse_spec
from ncsearch.paths import RunLayout
from ncsearch.tracking import CONFIGURATION, CONTROL, SearchTracker, failure_reason, flatten_params
from ncsearch.training._run_sequence import RUN_KEY
from ncsearch.training._tune_report import WORKER_RESTARTS_KEY

#: MLflow tag of a seed run: how many times Ray Train restarted its worker group (all attempts).
RESTARTS_TAG = "ncsearch.worker_restarts"

__all__ = ["ProgressCallback", "TrackingCallback", "final_metrics", "progress_line", "trial_error_text"]


def progress_line(text: str, stream: TextIO | None = None) -> None:
    """One timestamped progress line on stdout (or `stream`)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream or sys.stdout, flush=True)


def final_metrics(result: dict[str, Any], benchmarks: tuple[str, ...], *, train: bool = True) -> dict[str, float]:
    """The numeric metrics of a trial's final result worth keeping: benchmark metrics (with their
    `.ci_low`/`.ci_high`), time/* and (with `train`) the last train/* window (Tune's bookkeeping keys
    and the config left out)."""
    prefixes = tuple(f"{b}/" for b in benchmarks) + (("train/", "time/") if train else ("time/",))
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


def step_replicate(identity: TrialIdentity, result: dict[str, Any]) -> int:
    """The replicate a step result of a trial is from (its runs' order is `identity.replicates`)."""
    return identity.replicates[int(result.get(RUN_KEY, 0))]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class TrackingCallback(Callback):
    """Writes the MLflow layout of `ncsearch.tracking` as Tune reports trial events."""

    def __init__(self, run_dir: str, spec: dict[str, Any]):
        self.run_dir = run_dir
        self.spec_data = spec
        self._tracker: SearchTracker | None = None
        self._spec: SearchSpec | None = None
        self._summarised: set[str] = set()
        #: trial id -> [worker-group restarts of its earlier attempts, of its current attempt]
        self._restarts: dict[str, list[int]] = {}
        #: run key -> the final result (what the summaries read) of each finished seed of a trial of several
        self._finals: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "spec_data": self.spec_data, "_tracker": None, "_spec": None,
                "_summarised": set(self._summarised), "_restarts": dict(self._restarts), "_finals": dict(self._finals)}

    def get_state(self) -> dict[str, Any]:
        return {"summarised": sorted(self._summarised), "restarts": self._restarts, "finals": self._finals}

    def set_state(self, state: dict[str, Any]) -> None:
        self._summarised = set(state.get("summarised", ()))
        self._restarts = {k: list(v) for k, v in state.get("restarts", {}).items()}
        self._finals = {k: dict(v) for k, v in state.get("finals", {}).items()}

    def _restart_tag(self, trial_id: str) -> dict[str, str]:
        """`ncsearch.worker_restarts`: Ray Train's worker-group restarts over all attempts of the trial."""
        return {RESTARTS_TAG: str(sum(self._restarts.get(trial_id, [0, 0])))}

    @property
    def tracker(self) -> SearchTracker:
        if self._tracker is None:
            self._tracker = SearchTracker(self.run_dir, max_outage_s=self.spec.tracking.max_outage_s)
        return self._tracker

    @property
    def spec(self) -> SearchSpec:
        if self._spec is None:
            self._spec = parse_spec(self.spec_data, source="<search spec>")
        return self._spec

    def benchmarks(self) -> tuple[str, ...]:
        return tuple(trial_benchmarks(self.spec))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from ncsearch.analysis import label_of

        identity = TrialIdentity.of(trial.config)
        values = searched_values(trial.config)
        self._reopen(trials, identity)
        self.tracker.start_group(identity.group, role=CONTROL if identity.role == ROLE_CONTROL else CONFIGURATION,
                                 label=label_of(values, identity.role), values=values,
                                 params=flatten_params(run_spec(self.spec, trial.config).to_dict()),
                                 control=identity.control)
        for replicate in identity.replicates:
            key = identity.run_key(trial.trial_id, replicate)
            if key in self._finals:  # finished in an earlier attempt of the trial: it is not trained again
                continue
            run = run_spec(self.spec, trial.config, replicate)
            self.tracker.start_trial(key, group=identity.group, kind=identity.role, replicate=replicate,
                                     seed=run.train.seed, params=flatten_params(run.to_dict()))

    def _reopen(self, trials: list, identity: TrialIdentity) -> None:
        """A trial of a group already summarised runs again (`--resume` runs failed trials again): the
        group is summarised anew when it ends, and so are, for a control, the configurations measured
        against it."""
        if identity.group not in self._summarised:
            return
        stale = {identity.group}
        if identity.role == ROLE_CONTROL:
            stale |= {TrialIdentity.of(t.config).group for t in trials if TrialIdentity.of(t.config).control == identity.group}
        self._summarised -= stale

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        identity = TrialIdentity.of(trial.config)
        if result.get(FINAL_KEY):
            if identity.shared:
                self._finish_seed(trial, identity, result)
            return
        if "step" not in result:
            return
        metrics = {k: v for k, v in result.items() if k.startswith("train/")}
        if WORKER_RESTARTS_KEY in result:
            self._restarts.setdefault(trial.trial_id, [0, 0])[1] = int(result[WORKER_RESTARTS_KEY])
        key = identity.run_key(trial.trial_id, step_replicate(identity, result))
        self.tracker.log_step(key, metrics, step=int(result["step"]))

    def _finish_seed(self, trial: Any, identity: TrialIdentity, result: dict) -> None:
        """One seed of a trial of several has its final result: finish its run (once)."""
        key = identity.run_key(trial.trial_id, int(result[REPLICATE_RESULT_KEY]))
        if key in self._finals:  # a retried trial reports its finished seeds again
            return
        self._finish_run(key, trial.trial_id, result)
        self._finals[key] = {**final_metrics(result, self.benchmarks()), EVAL_DIR_KEY: result.get(EVAL_DIR_KEY)}

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        counts = self._restarts.setdefault(trial.trial_id, [0, 0])
        counts[:] = [counts[0] + counts[1], 0]  # Tune retries the trial: a new Train run counts from 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not TrialIdentity.of(trial.config).shared:  # shared: each seed finished with its result
            self._finish_run(trial.trial_id, trial.trial_id, trial.last_result or {})
        self._summarise_ready(trials, ended=trial)

    def _finish_run(self, key: str, trial_id: str, result: dict) -> None:
        metrics = final_metrics(result, self.benchmarks(), train=False)  # train/* is logged step by step
        self.tracker.finish_trial(key, metrics, artifact_dir=self._eval_dir(key, result),
                                  tags={"ncsearch.checkpoint": str(result.get(CHECKPOINT_KEY, "")),
                                        "ncsearch.tokenizer": str(result.get(TOKENIZER_KEY, "")),
                                        "ncsearch.node_id": str(result.get(NODE_ID_KEY, "")),
                                        "ncsearch.node_ip": str(result.get(NODE_IP_KEY, "")),
                                        **self._restart_tag(trial_id)},
                                  step=int(result.get("step", 0)))

    def _eval_dir(self, key: str, result: dict) -> Path | None:
        """The evaluation folder of run `key` (final `result`) on this (the driver's) node: in its final
        checkpoint, or a local copy under the run directory when that checkpoint is in remote storage."""
        location = result.get(EVAL_DIR_KEY)
        if not location:
            return None
        return local_eval_dir(location, RunLayout(self.run_dir).trial_eval_dir(key))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = trial_error_text(trial)
        identity = TrialIdentity.of(trial.config)
        for replicate in identity.replicates:
            key = identity.run_key(trial.trial_id, replicate)
            if key not in self._finals:
                self.tracker.fail_trial(key, failure_reason(text) if text else "unknown error",
                                        error_text=text or None, tags=self._restart_tag(trial.trial_id))
        self._summarise_ready(trials, ended=trial)

    # ----- group summaries -----------------------------------------------------------------------

    def _summarise_ready(self, trials: list, *, ended: Any) -> None:
        """Summarise every group whose seeds (and whose control's seeds) have all ended."""
        from ncsearch._eval_store import read_eval
        from ncsearch.analysis import GroupInfo, RunRecord, SearchAnalysis, label_of

        k = self.spec.search.replicates
        # group -> its seeds: (trial, replicate, run key, True finished / False failed / None going, final result)
        members: dict[str, list[tuple[Any, int, str, bool | None, dict]]] = {}
        for trial in trials:
            identity = TrialIdentity.of(trial.config)
            for replicate in identity.replicates:
                key = identity.run_key(trial.trial_id, replicate)
                members.setdefault(identity.group, []).append((trial, replicate, key, *self._seed_state(trial, key, ended)))

        def complete(group: str) -> bool:
            found = members.get(group, [])
            return len(found) >= k and all(state is not None for _, _, _, state, _ in found)

        for group, found in members.items():
            identity = TrialIdentity.of(found[0][0].config)
            if group in self._summarised or not complete(group):
                continue
            if identity.control and not complete(identity.control):
                continue
            involved = [group] + ([identity.control] if identity.control else [])
            runs, infos = [], {}
            for name in involved:
                first = TrialIdentity.of(members[name][0][0].config)
                values = searched_values(members[name][0][0].config)
                infos[name] = GroupInfo(name, first.role, values, label_of(values, first.role), first.control)
                for _, replicate, key, ok, result in members[name]:
                    eval_dir = self._eval_dir(key, result) if ok else None
                    runs.append(RunRecord(key, first.role, name, replicate, "FINISHED" if ok else "FAILED",
                                          metrics=final_metrics(result, self.benchmarks()) if ok else {},
                                          evaluation=(lambda d=eval_dir: read_eval(d)) if ok else None))
            analysis = SearchAnalysis.for_spec(runs, infos, self.spec)
            for name in involved:
                if name in self._summarised and name != group:
                    continue
                summary = analysis.summaries[name]
                self.tracker.finish_group(name, summary.mlflow_metrics(), status="FINISHED" if summary.runs else "FAILED")
                self._summarised.add(name)
                progress_line(self._summary_line(analysis, name))

    def _seed_state(self, trial: Any, key: str, ended: Any) -> tuple[bool | None, dict]:
        """(True finished / False failed / None still going, its final result) of run `key` of `trial`."""
        if TrialIdentity.of(trial.config).shared:
            if key in self._finals:
                return True, self._finals[key]
            done = trial is ended or trial.status in ("TERMINATED", "ERROR")
            return (False if done else None), {}
        result = trial.last_result or {}
        if trial is ended:
            return bool(result.get(FINAL_KEY)) and trial.status != "ERROR", result
        if trial.status == "TERMINATED":
            return bool(result.get(FINAL_KEY)), result
        return (False if trial.status == "ERROR" else None), result

    def _summary_line(self, analysis: Any, group: str) -> str:
        summary = analysis.summaries[group]
        if not summary.runs:
            return f"{summary.info.label}: every seed failed"
        parts = []
        for o in self.spec.objectives:
            e = analysis.objective_estimate(summary, o.metric)
            if e is not None:
                parts.append(f"{o.metric} {e.format()}")
        seeds = f"{summary.seeds} seed{'s' if summary.seeds != 1 else ''}"
        return f"{summary.info.label} ({seeds}, mean [95% interval]): " + "; ".join(parts)


class ProgressCallback(Callback):
    """One short line per run event, with the objectives on completion."""

    #: Runs counted in `_done` (a failed trial that `--resume` runs again ends a second time).
    _ended: frozenset[str] = frozenset()
    #: Runs whose "finished" line was printed (a retried trial of several seeds reports its finished ones again).
    _finished_runs: frozenset[str] = frozenset()

    def __init__(self, objectives: list[tuple[str, str]], total: int, steps: int | None = None, stream: TextIO | None = None):
        self.objectives = objectives
        self.total = total
        self.steps = steps
        self._stream = stream
        self._started: dict[str, float] = {}
        self._restarts: dict[str, int] = {}
        self._done = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    def get_state(self) -> dict[str, Any]:
        # Saved with Tune's experiment state, so a resumed search keeps counting where it stopped.
        return {"done": self._done, "ended": sorted(self._ended), "finished": sorted(self._finished_runs)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._done = int(state.get("done", 0))
        self._ended = frozenset(state.get("ended", ()))
        self._finished_runs = frozenset(state.get("finished", ()))

    def _count(self, key: str) -> None:
        """Count run `key` as ended (once)."""
        if key not in self._ended:
            self._ended = self._ended | {key}
            self._done += 1

    def _print(self, text: str) -> None:
        progress_line(text, self._stream)

    @staticmethod
    def _name(trial: Any, replicate: int | None = None) -> str:
        identity = TrialIdentity.of(trial.config)
        if replicate is None and identity.shared:
            return f"{identity.group} seeds {', '.join(map(str, identity.replicates))} (trial {trial.trial_id})"
        return f"{identity.group} seed {identity.replicate if replicate is None else replicate} (trial {trial.trial_id})"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from ncsearch.analysis import label_of

        self._started[trial.trial_id] = time.monotonic()
        identity = TrialIdentity.of(trial.config)
        self._print(f"{self._name(trial)} started: {label_of(searched_values(trial.config), identity.role)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        identity = TrialIdentity.of(trial.config)
        if result.get(FINAL_KEY):
            if identity.shared:
                self._finished(trial, int(result[REPLICATE_RESULT_KEY]), result)
            return
        if "step" not in result:
            return
        name = self._name(trial, step_replicate(identity, result))
        restarts = int(result.get(WORKER_RESTARTS_KEY, 0))
        if restarts > self._restarts.get(trial.trial_id, 0):
            self._restarts[trial.trial_id] = restarts
            self._print(f"{name} worker group restarted ({restarts} so far), "
                        f"resumed from step {int(result.get('train/resumed_from', 0))}")
        shown = ", ".join(f"{k.removeprefix('train/')}={_short(result[k])}" for k in ("train/loss", "train/unc3", "train/nc3") if k in result)
        of = f"/{self.steps}" if self.steps else ""
        self._print(f"{name} step {int(result['step'])}{of}: {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        identity = TrialIdentity.of(trial.config)
        if not identity.shared:  # shared: each seed's line came with its result
            self._finished(trial, identity.replicate, trial.last_result or {})

    def _finished(self, trial: Any, replicate: int, result: dict) -> None:
        key = TrialIdentity.of(trial.config).run_key(trial.trial_id, replicate)
        if key in self._finished_runs:
            return  # a retried trial of several seeds reports its finished ones again
        self._finished_runs = self._finished_runs | {key}
        self._count(key)
        took = time.monotonic() - self._started.get(trial.trial_id, time.monotonic())
        shown = ", ".join(f"{m.removeprefix('delta/')}={_short(result.get(m.removeprefix('delta/'), math.nan))}"
                          for m, _ in self.objectives)
        self._print(f"{self._name(trial, replicate)} finished ({self._done}/{self.total} runs, {took:.0f}s): {shown}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._restarts.pop(trial.trial_id, None)
        text = trial_error_text(trial)
        self._print(f"{self._name(trial)} crashed, retrying: {failure_reason(text) if text else 'unknown error'}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        identity = TrialIdentity.of(trial.config)
        text = trial_error_text(trial)
        for replicate in identity.replicates:
            key = identity.run_key(trial.trial_id, replicate)
            if key in self._finished_runs:
                continue
            self._count(key)
            self._print(f"{self._name(trial, replicate)} FAILED ({self._done}/{self.total} runs): "
                        f"{failure_reason(text) if text else 'unknown error'}")
