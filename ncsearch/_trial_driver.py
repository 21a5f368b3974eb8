"""One Tune trial of a search, and the keys it shares with the searcher and the Tune callbacks.

A Tune trial is one training run: configuration C (the searched values Optuna proposed) at
replicate r (training seed `train.seed + r`), or C's seed-matched control (alpha = 0). Which one is
carried in the trial's config under the `ncsearch.*` keys below, set by the replicate searcher
(`ncsearch._replicates`); everything else in the config is a searched value. With
`search.shared_train_run`, a trial trains all of C's replicates (or its control's), one after another
in one Ray Train run (`ncsearch.train.fit_runs`): each is still its own run, with its own final
result, and `TrialIdentity.run_key` names it where a trial id named a run before.

The trial driver only coordinates: it asks Ray for no CPU or GPU, and it reads no checkpoint. It
launches the run on Ray Train V2, whose workers train and then evaluate the final model on their own
devices (the spec's suite plus held-out collapse on the trial's own vocabulary V; see
training/_evaluate.py) and store the evaluation folder in the final checkpoint. The driver checks the
objectives and reports the final result, which carries `FINAL_KEY`, the metrics, their intervals,
the train/* values, where the checkpoint and its evaluation folder are, and the node it ran on; a
trial of several replicates reports one such result per replicate (`REPLICATE_RESULT_KEY`), in order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncsearch.config import SearchSpec, parse_spec
from ncsearch.errors import TrialError

__all__ = [
    "CHECKPOINT_KEY",
    "CONTROL_KEY",
    "EVAL_DIR_KEY",
    "FINAL_KEY",
    "GROUP_KEY",
    "REPLICATES_KEY",
    "REPLICATE_KEY",
    "REPLICATE_RESULT_KEY",
    "ROLE_CONTROL",
    "ROLE_KEY",
    "ROLE_TRIAL",
    "TrialContext",
    "TrialIdentity",
    "evaluation_suite",
    "run_spec",
    "searched_values",
    "trial_benchmarks",
    "trial_driver",
]

ROLE_KEY = "ncsearch.role"
GROUP_KEY = "ncsearch.group"
REPLICATE_KEY = "ncsearch.replicate"
#: The replicates a trial trains when it trains several (`search.shared_train_run`).
REPLICATES_KEY = "ncsearch.replicates"
CONTROL_KEY = "ncsearch.control"
ROLE_TRIAL, ROLE_CONTROL = "trial", "control"
_META_PREFIX = "ncsearch."

#: Set in the one result a trial reports after evaluation.
FINAL_KEY = "ncsearch/final"
EVAL_DIR_KEY = "ncsearch/eval_dir"
CHECKPOINT_KEY = "ncsearch/checkpoint"
#: Which replicate a final result is of.
REPLICATE_RESULT_KEY = "ncsearch/replicate"
TOKENIZER_KEY = "ncsearch/tokenizer"


@dataclass(frozen=True)
class TrialIdentity:
    """Which run a trial is: `role` trial or control, `group` (configuration id, or control id shared
    by every configuration with the same control key), `replicate` (seed offset) and, for a
    configuration with a control, that control's group. A trial of several runs
    (`search.shared_train_run`) trains `seeds` (replicates, in order; `replicate` is the first)."""

    role: str
    group: str
    replicate: int
    control: str | None = None
    seeds: tuple[int, ...] = ()

    @classmethod
    def of(cls, config: dict[str, Any]) -> TrialIdentity:
        seeds = tuple(int(r) for r in config.get(REPLICATES_KEY) or ())
        return cls(str(config.get(ROLE_KEY, ROLE_TRIAL)), str(config.get(GROUP_KEY, "")),
                   int(config.get(REPLICATE_KEY, seeds[0] if seeds else 0)), config.get(CONTROL_KEY), seeds)

    @property
    def replicates(self) -> tuple[int, ...]:
        """The replicates this trial trains, in order."""
        return self.seeds or (self.replicate,)

    @property
    def shared(self) -> bool:
        """Whether this trial trains several replicates, one after another in one Train run."""
        return len(self.replicates) > 1

    def run_key(self, trial_id: str, replicate: int) -> str:
        """The name of replicate `replicate`'s run of trial `trial_id` in the search's records (its
        MLflow run, its evaluation folder's copy): the trial id itself when the trial has one run."""
        return f"{trial_id}_seed{replicate}" if self.shared else trial_id

    def config_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {ROLE_KEY: self.role, GROUP_KEY: self.group, REPLICATE_KEY: self.replicate}
        if self.shared:
            keys[REPLICATES_KEY] = list(self.replicates)
        if self.control:
            keys[CONTROL_KEY] = self.control
        return keys


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """The searched `{dotted.path: value}` of a trial's config (the `ncsearch.*` keys left out)."""
    return {k: v for k, v in config.items() if not k.startswith(_META_PREFIX)}


def run_spec(base: SearchSpec, config: dict[str, Any], replicate: int | None = None) -> SearchSpec:
    """The concrete spec one trial trains (its run of `replicate`, default its first): the searched
    values, the seed, alpha 0 for a control."""
    identity = TrialIdentity.of(config)
    spec = base.resolve(searched_values(config)).for_replicate(identity.replicate if replicate is None else replicate)
    return spec.as_control() if identity.role == ROLE_CONTROL else spec


#: The benchmark every trial adds to its spec's suite: NC3/UNC3 on the trial's own V, held out.
HELDOUT_COLLAPSE = "collapse"


def trial_benchmarks(spec: SearchSpec) -> list[str]:
    """The benchmarks a trial of `spec` scores: the spec's suite plus held-out collapse."""
    names = list(spec.eval.benchmark_names())
    return names if HELDOUT_COLLAPSE in names else [*names, HELDOUT_COLLAPSE]


def evaluation_suite(spec: SearchSpec, vocab_ids: list[int]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Benchmark names and options for a trial: `trial_benchmarks`, with held-out collapse on the
    trial's own V (`vocab_ids`), the spec's NC3 feature source and label shift, and a perplexity
    `reference: base` resolved to the spec's model."""
    names = trial_benchmarks(spec)
    options = {name: dict(values) for name, values in spec.eval.options.items()}
    _apply_baseline_eval_options(spec, names, options)
    if options.get("perplexity", {}).get("reference") == "base":  # the control variate: this search's model
        options["perplexity"]["reference"] = spec.model
    collapse = options.setdefault(HELDOUT_COLLAPSE, {})
    collapse.setdefault("vocab_ids", list(vocab_ids))
    collapse.setdefault("features", spec.nc3.features)
    collapse.setdefault("label_shift", spec.nc3.label_shift)
    return names, options


def _apply_baseline_eval_options(spec: SearchSpec, names: list[str], options: dict[str, dict[str, Any]]) -> None:
    """The trial's baseline's `eval_options` where the spec leaves them unset; a spec value that differs
    is kept, with a warning (the method trains on that data, so the score overlaps its training set)."""
    import warnings

    from ncsearch.debias import get_baseline

    if not isinstance(spec.baseline, str):  # the search's pre-check on the open spec: trials decide
        return
    for bench, forced in get_baseline(spec.baseline).eval_options.items():
        if bench not in names:
            continue
        chosen = options.setdefault(bench, {})
        for key, value in forced.items():
            if key not in chosen:
                chosen[key] = value
            elif chosen[key] != value:
                warnings.warn(
                    f"baseline {spec.baseline!r} trains on the data of {bench} {key}={chosen[key]!r}; scoring it "
                    f"there overlaps training (set eval.options.{bench}.{key}: {value!r} to avoid it)",
                    stacklevel=2,
                )


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its config; passed with `tune.with_parameters`."""

    spec: dict[str, Any]
    run_dir: str
    data_root: str
    model_path: str
    #: Where trials' Ray Train runs keep checkpoints (and so their evaluation folders): a local or NFS
    #: folder, or an s3:// / gs:// URI (pyarrow); None: `<run_dir>/trials`.
    trial_storage: str | None = None
    #: {"model": ..., "data": ...} `ncsearch._assets.ShippedFolder`s for nodes that lack `model_path`
    #: or `data_root`; None: every node has them (one machine, NFS).
    assets: dict[str, Any] | None = None

    def train_storage(self, trial_id: str) -> str:
        """The storage path of trial `trial_id`'s Ray Train run."""
        from ncsearch.paths import RunLayout, trial_storage_path

        if self.trial_storage is None:
            return str(RunLayout(self.run_dir).trial_dir(trial_id))
        return trial_storage_path(self.trial_storage, Path(self.run_dir).name, trial_id)


def trial_driver(config: dict[str, Any], context: TrialContext) -> None:
    """One Tune trial: train and evaluate on Ray Train V2 workers, check the objectives, report the result.

    A worker process that dies is restarted by Ray Train (up to `search.worker_restarts` times) and
    resumes from the last checkpoint; the step results say how often (`train/worker_restarts`,
    training/_tune_report.py). Raises `TrialError` when training fails or an objective's metric is
    missing or not finite, which Tune records as the trial's error (and retries up to
    `search.max_failures` times; training resumes from its last checkpoint).
    """
    from ncsearch.search import select_train_v2

    select_train_v2()
    from ray import tune

    from ncsearch.paths import RunLayout
    from ncsearch.train import fit_runs, fit_trial
    from ncsearch.training._evaluate import EVAL_DIR, EVAL_SECONDS_KEY
    from ncsearch.training._tune_report import TrialReport

    base = parse_spec(context.spec, source="<search spec>")
    identity = TrialIdentity.of(config)
    replicates = identity.replicates
    specs = [run_spec(base, config, replicate) for replicate in replicates]
    trial_id = tune.get_context().get_trial_id()
    # What the trial's workers record in each evaluation folder besides the scores themselves.
    shared = {"trial_id": trial_id, **{k.removeprefix(_META_PREFIX): v for k, v in identity.config_keys().items()},
              "params": searched_values(config), "control_key": specs[0].control_key()}
    shared.pop("replicates", None)
    recorded = [{**shared, "replicate": replicate, "seed": spec.train.seed, "alpha": spec.nc3.alpha}
                for replicate, spec in zip(replicates, specs)]
    common: dict[str, Any] = {"data_root": context.data_root, "storage_path": context.train_storage(trial_id),
                              "name": RunLayout.TRAIN_RUN, "callbacks": [TrialReport()],
                              "model_path": context.model_path, "max_failures": base.search.worker_restarts}

    start = time.perf_counter()
    if len(specs) == 1:
        outcomes = [fit_trial(specs[0], **common,
                              extra_config={"evaluation": {"identity": recorded[0]}, "assets": context.assets})]
    else:
        outcomes = fit_runs(specs, **common, evaluations=[{"identity": r} for r in recorded],
                            extra_config={"assets": context.assets})
    seconds = time.perf_counter() - start
    eval_times = [float(o.metrics.get(EVAL_SECONDS_KEY, math.nan)) for o in outcomes]
    eval_total = sum(t for t in eval_times if math.isfinite(t))

    failures = []
    for replicate, spec, outcome in zip(replicates, specs, outcomes):
        metrics = outcome.metrics
        bad = [o.base_metric for o in base.objectives
               if not isinstance(metrics.get(o.base_metric), (int, float)) or not math.isfinite(metrics[o.base_metric])]
        if bad:
            failures.append(", ".join(f"{m}={metrics.get(m)!r}" for m in bad)
                            + (f" (seed {spec.train.seed})" if len(specs) > 1 else ""))
            continue
        final: dict[str, Any] = dict(metrics)
        final["time/train_s"] = (seconds - eval_total) / len(specs)  # a shared Train run's: split evenly
        final.update({FINAL_KEY: 1.0, EVAL_DIR_KEY: f"{outcome.checkpoint_uri}/{EVAL_DIR}",
                      CHECKPOINT_KEY: outcome.checkpoint_uri, REPLICATE_RESULT_KEY: replicate,
                      "step": int(metrics.get("step", spec.train.steps))})
        tune.report(final)
    if failures:
        raise TrialError("objective metric(s) missing or not finite after evaluation: " + "; ".join(failures))
