"""Seed replicates and seed-matched controls as Ray Tune trials, around the Optuna searcher.

Optuna proposes *configurations*; a configuration is trained as `search.replicates` Tune trials (one
per training seed) and, with `search.control`, beside alpha = 0 twins of it at the same seeds. Each
of those is an ordinary Tune trial: Tune schedules them in parallel as resources allow, retries a
crashed one from its checkpoint, and restores them on `--resume`. `ReplicatedSearch` wraps the Optuna
searcher so that:

- Optuna sees one trial per configuration and receives one value per objective once all of its seeds
  (and, for `delta/` objectives, their controls) have finished: the mean over seeds.
- A control is keyed by `SearchSpec.control_key()` (the resolved spec without its NC3 fields) and
  trained once per seed for all configurations sharing that key. The searcher's state, including
  which controls exist, is saved with Tune's experiment state, so this holds across `--resume`.
- At most `max_concurrent` Tune trials run at once, and at most max(1, max_concurrent // replicates)
  configurations are in flight, so Optuna learns from finished configurations early.
- A seed that failed can finish later: `--resume` runs failed trials again. Optuna cannot change a
  trial it was told about, so a configuration whose every seed has finished by then, after Optuna
  heard that it failed or heard the mean of fewer seeds, is added to the study again as a new,
  complete trial with the same parameters and the mean over all its seeds.

With `search.shared_train_run`, a configuration's seeds are one Tune trial (and so are its
control's), trained one after another in one Ray Train run. That trial reports one final result per
seed (`REPLICATE_RESULT_KEY`), which this class collects as Tune passes results on; a seed without
one when the trial ends failed. At most max_concurrent configurations are then in flight.

Ray's own `Repeater` does the first part for a single metric only and forgets its groups on restore;
this class is written for several objectives, controls and resumption.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible

from ncsearch._trial_driver import (
    FINAL_KEY,
    REPLICATE_RESULT_KEY,
    ROLE_CONTROL,
    ROLE_TRIAL,
    TrialIdentity,
)
from ncsearch.config import DELTA_PREFIX, parse_spec

__all__ = ["ReplicatedSearch"]


@dataclass
class _Group:
    """A configuration (role trial) or a control (role control) and its replicate trials."""

    group: str
    role: str
    values: dict[str, Any]
    control: str | None = None  # the control group of a configuration
    primary: str | None = None  # the trial id Optuna knows a configuration by
    trials: dict[int, str] = field(default_factory=dict)  # replicate -> trial id
    results: dict[int, dict[str, float]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    told: bool = False
    told_seeds: int = 0  # finished seeds in the value Optuna heard (0: it heard the configuration failed)

    def done(self, replicates: int) -> bool:
        return len(self.results) + len(self.failed) >= replicates


class ReplicatedSearch(Searcher):
    """Replicates, controls and concurrency around an inner (Optuna) searcher; see the module docstring."""

    def __init__(
        self,
        inner: Searcher,
        *,
        spec: dict[str, Any],
        configurations: int,
        replicates: int = 1,
        control: bool = False,
        max_concurrent: int = 1,
    ):
        base = parse_spec(spec, source="<search spec>")
        self.inner = inner
        self.spec_data = spec
        self.objectives = [(o.metric, o.mode) for o in base.objectives]
        self.configurations = configurations
        self.replicates = replicates
        self.control = control
        self.max_concurrent = max_concurrent
        #: One trial per configuration (all its seeds in one Train run) instead of one per seed.
        self.shared = base.search.shared_train_run and replicates > 1
        self.max_groups = max(1, max_concurrent // (1 if self.shared else replicates))
        self._groups: dict[str, _Group] = {}
        self._controls: dict[str, str] = {}  # control key -> control group
        self._trial_of: dict[str, tuple[str, tuple[int, ...]]] = {}  # trial id -> (group, its replicates)
        self._queue: list[dict[str, Any]] = []
        self._live: set[str] = set()
        self._asked = 0
        self._inner_finished = False
        super().__init__(metric=None, mode=None)

    # ----- Tune's searcher protocol --------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return _set_search_properties_backwards_compatible(self.inner.set_search_properties, metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self._live) >= self.max_concurrent:
            return None
        if self._queue:
            return self._start(trial_id, self._queue.pop(0))
        if self._inner_finished or self._asked >= self.configurations:
            return Searcher.FINISHED
        in_flight = sum(1 for g in self._groups.values() if g.role == ROLE_TRIAL and not g.told)
        if in_flight >= self.max_groups:
            return None
        values = self.inner.suggest(trial_id)
        if values is None:
            return None
        if values == Searcher.FINISHED:
            self._inner_finished = True
            return Searcher.FINISHED
        self._asked += 1
        return self._start(trial_id, self._new_configuration(trial_id, dict(values)))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Step results are training curves; Optuna hears about configurations only when they end. A
        trial of several seeds reports each seed's final result as it is ready (module docstring)."""
        found = self._trial_of.get(trial_id)
        if found is None or len(found[1]) == 1 or not result.get(FINAL_KEY) or REPLICATE_RESULT_KEY not in result:
            return
        self._record(self._groups[found[0]], int(result[REPLICATE_RESULT_KEY]), result)
        self._tell_finished()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._live.discard(trial_id)
        if trial_id not in self._trial_of:
            return
        group_id, replicates = self._trial_of[trial_id]
        group = self._groups[group_id]
        if len(replicates) > 1:  # its seeds' results came one by one; those without one failed
            group.failed.update(r for r in replicates if r not in group.results)
        elif error or not result or not result.get(FINAL_KEY):
            group.failed.add(replicates[0])
        else:
            self._record(group, replicates[0], result)
        self._tell_finished()

    def _record(self, group: _Group, replicate: int, result: dict) -> None:
        group.failed.discard(replicate)  # it failed before, and `--resume` ran it again
        wanted = {metric.removeprefix(DELTA_PREFIX) for metric, _ in self.objectives}
        group.results[replicate] = {m: float(result[m]) for m in wanted if isinstance(result.get(m), (int, float))}

    # ----- state (saved with Tune's experiment state; see the module docstring) --------------------

    def get_state(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("inner")
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.shared = state.get("shared", False)
        # A state saved before shared Train runs kept one replicate per trial.
        self._trial_of = {trial: (group, tuple(r) if isinstance(r, (tuple, list)) else (int(r),))
                          for trial, (group, r) in self._trial_of.items()}

    def save(self, checkpoint_path: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            inner_path = os.path.join(folder, "inner.pkl")
            self.inner.save(inner_path)
            with open(inner_path, "rb") as handle:
                inner = handle.read()
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"state": self.get_state(), "inner": inner}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            saved = pickle.load(handle)
        self.set_state(saved["state"])
        with tempfile.TemporaryDirectory() as folder:
            inner_path = os.path.join(folder, "inner.pkl")
            with open(inner_path, "wb") as handle:
                handle.write(saved["inner"])
            self.inner.restore(inner_path)

    # ----- bookkeeping ---------------------------------------------------------------------------

    def _start(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        identity = TrialIdentity.of(config)
        for replicate in identity.replicates:
            self._groups[identity.group].trials[replicate] = trial_id
        self._trial_of[trial_id] = (identity.group, identity.replicates)
        self._live.add(trial_id)
        return config

    def _new_configuration(self, trial_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Register a proposed configuration; queue its other seeds and (first time) its control's."""
        group_id = f"c{self._asked:03d}"
        group = _Group(group_id, ROLE_TRIAL, values, primary=trial_id)
        self._groups[group_id] = group
        new_control = None
        if self.control:
            key = parse_spec(self.spec_data, source="<search spec>").resolve(values).control_key()
            if key not in self._controls:
                new_control = f"control-{key[:8]}"
                self._controls[key] = new_control
                self._groups[new_control] = _Group(new_control, ROLE_CONTROL, values)
            group.control = self._controls[key]

        def config(group_id: str, role: str, replicate: int) -> dict[str, Any]:
            control = group.control if role == ROLE_TRIAL else None
            seeds = tuple(range(self.replicates)) if self.shared else ()
            return {**values, **TrialIdentity(role, group_id, replicate, control, seeds).config_keys()}

        if self.shared:  # one trial for all seeds, and one for the control's
            if new_control is not None:
                self._queue.append(config(new_control, ROLE_CONTROL, 0))
            return config(group_id, ROLE_TRIAL, 0)
        # Seed by seed, the configuration beside its control, so that paired runs finish together.
        for replicate in range(self.replicates):
            if replicate > 0:
                self._queue.append(config(group_id, ROLE_TRIAL, replicate))
            if new_control is not None:
                self._queue.append(config(new_control, ROLE_CONTROL, replicate))
        return config(group_id, ROLE_TRIAL, 0)

    def _tell_finished(self) -> None:
        """Tell Optuna about every configuration whose seeds (and needed controls) have all ended, and
        again about one that has more finished seeds than when it was told (see the module docstring)."""
        needs_control = any(metric.startswith(DELTA_PREFIX) for metric, _ in self.objectives)
        for group in self._groups.values():
            if group.role != ROLE_TRIAL or not group.done(self.replicates):
                continue
            if group.told and (group.failed or len(group.results) <= group.told_seeds):
                continue
            control = self._groups.get(group.control) if group.control else None
            if needs_control and (control is None or not control.done(self.replicates)):
                continue
            values = {metric: self._objective(group, control, metric) for metric, _ in self.objectives}
            finite = all(math.isfinite(v) for v in values.values())
            if group.told:
                if finite:
                    self._tell_again(group, values)
                    group.told_seeds = len(group.results)
                continue
            group.told = True
            group.told_seeds = len(group.results) if finite else 0
            if finite:
                self.inner.on_trial_complete(group.primary, result=values)
            else:
                self.inner.on_trial_complete(group.primary, result=None, error=True)

    def _tell_again(self, group: _Group, values: dict[str, float]) -> None:
        """Add configuration `group` to the Optuna study as a new complete trial (its first one is
        finished and cannot change), with the same parameters and `values`."""
        import optuna

        study = getattr(self.inner, "_ot_study", None)
        asked = getattr(self.inner, "_ot_trials", {}).get(group.primary)
        if study is None or asked is None:
            return
        study.add_trial(optuna.trial.create_trial(
            params=asked.params, distributions=asked.distributions,
            values=[values[metric] for metric, _ in self.objectives],
            user_attrs={"ncsearch.group": group.group, "ncsearch.seeds": len(group.results),
                        "ncsearch.again_of_trial": asked.number},
        ))

    def _objective(self, group: _Group, control: _Group | None, metric: str) -> float:
        """Mean over seeds of `metric`, or for `delta/<metric>` of the paired difference to the control."""
        base = metric.removeprefix(DELTA_PREFIX)
        if metric.startswith(DELTA_PREFIX):
            if control is None:
                return math.nan
            pairs = [group.results[r][base] - control.results[r][base] for r in sorted(group.results)
                     if r in control.results and base in group.results[r] and base in control.results[r]]
        else:
            pairs = [values[base] for values in group.results.values() if base in values]
        return sum(pairs) / len(pairs) if pairs else math.nan
