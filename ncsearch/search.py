"""Runs (or resumes) one search: the Tuner, its searcher and callbacks, and the closing report.

Data flow (DESIGN.md §2): the spec is translated by `ncsearch.space` (param space, the Optuna
searcher inside `ReplicatedSearch`); the model is resolved (adapted once, cached) and the data root
and evaluation options checked in this process *before* Ray starts, so trials never adapt and bad
input never reaches Ray. Each Tune trial is one training run of a configuration's seed or of a
seed-matched control (`ncsearch._trial_driver`). Tune callbacks in this process write MLflow
(`ncsearch.tracking`) and the progress lines; at the end the search is read back from MLflow and
analysed (`ncsearch.analysis`), and `ncsearch.report` writes the Pareto artifacts and the report.

Run directory: see `ncsearch.paths.RunLayout`.

Resources: the trial driver only coordinates (its Ray Train workers train and evaluate), so it asks
Tune for no CPU; a Tune trial cannot ask for nothing at all, so it reserves a little memory
(`TRIAL_DRIVER_MEMORY`) instead. Two cores thus fit two trials of one 1-CPU worker each.

One search per run directory at a time (`ncsearch._run_lock`): a second `ncsearch run` on a folder
in use stops with one line naming the holder, before Ray starts.

Storage (`ncsearch._run_checks`): a run directory that cannot be written stops the search in one line
before Ray starts, and so, on `--resume`, does a damaged or missing file the search would continue
from (the Optuna study, the MLflow store and run ids, Tune's state, a trial's latest checkpoint).
`--resume` runs unfinished trials and failed ones again, each from its last checkpoint: a trial that
failed for want of disk space finishes once there is space.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncsearch._trial_driver import FINAL_KEY, TrialContext, trial_driver
from ncsearch.config import SearchSpec
from ncsearch.errors import ConfigError, UserInputError
from ncsearch.paths import RunLayout, run_dir_for, tune_trial_dirname
from ncsearch.training._lean_trainer import NO_AUTOSCALER_ENV

__all__ = [
    "EXIT_TRACKING_OUTAGE",
    "TRIAL_DRIVER_MEMORY",
    "SearchOutcome",
    "main_exit_code",
    "run_dir_for",
    "run_search",
    "select_train_v2",
]

#: Exit code of a search that finished, but whose MLflow tracking server was unreachable for a while
#: (every buffered call was replayed; the summary says for how long).
EXIT_TRACKING_OUTAGE = 3
#: Parent-run tag with that summary line.
OUTAGE_TAG = "ncsearch.tracking_outage"

#: Memory (bytes) a trial driver reserves in Ray instead of a CPU (it holds no model; its workers do).
TRIAL_DRIVER_MEMORY = 512 * 1024**2

# Environment the trial processes need; forwarded through Ray's runtime_env when set here.
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "NCSEARCH_CACHE_DIR",
                  "NCSEARCH_ADAPT_STEPS", "NCSEARCH_DATA_DIR", "RAY_TRAIN_V2_ENABLED",
                  "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", NO_AUTOSCALER_ENV,
                  # fault injection for drills and tests (training/_faults.py)
                  "NCSEARCH_FAULT_KILL_AT_STEP", "NCSEARCH_FAULT_KILL_MARKER", "NCSEARCH_FAULT_KILL_IN_RUN")
#: Ray Train V2's controller polls its workers this often (Ray's default: 2 s); a finished trial's
#: worker group is torn down only at the next poll, so a short interval saves ~1 s per trial.
_TRAIN_POLL_S = "0.25"
#: A local Ray instance has one node, the search's own machine, and no autoscaler. So there:
#: - Ray Train V2's PreemptionWatcher is off: an actor per worker group (one more Python process
#:   importing Ray Train, about 1.5 CPU-seconds) that watches for cloud nodes being drained;
#: - trials send no resource requests to an autoscaler (training/_lean_trainer.py);
#: - the raylet starts no idle workers when the search's driver connects: they would wait for tasks
#:   with no runtime environment, and every task of a search has one (`_init_ray`), so each was a
#:   Python process importing Ray for nothing, while the search starts.
_LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", NO_AUTOSCALER_ENV: "1", "RAY_prestart_worker_first_driver": "0"}


def select_train_v2() -> None:
    """Ray Train V2 must be selected before `ray.train` is first imported (here or in a trial)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if os.environ["RAY_TRAIN_V2_ENABLED"] != "1":
        raise UserInputError(f"ncsearch needs Ray Train V2, but RAY_TRAIN_V2_ENABLED={os.environ['RAY_TRAIN_V2_ENABLED']!r}; unset it")


@dataclass
class SearchOutcome:
    """What a finished (or interrupted) search produced."""

    run_dir: Path
    tracking_uri: str
    experiment: str
    parent_run_id: str
    finished: int  # runs (Tune trials) that finished
    failed: int
    expected: int  # runs the plan expected (an upper bound when the number of controls is)
    configurations: int  # configurations with at least one finished seed
    searcher_done: bool
    budget_reached: bool = False
    report: Any = None  # the ncsearch.report.Report written at the end
    tracking_outage_s: float = 0.0  # how long the MLflow tracking server was unreachable
    tracking_lost: int = 0  # buffered MLflow calls the server refused on replay

    @property
    def complete(self) -> bool:
        """Every configuration ran, or the search stopped at its `search.time_budget_s` as asked."""
        return self.budget_reached or self.searcher_done


def _check_resume(spec: SearchSpec, run_dir: Path) -> None:
    saved_path = RunLayout(run_dir).spec_file
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


def _say_takeover(note: str | None, echo: Callable[[str], None]) -> None:
    if note:
        echo(f"note: {note}")


def ray_address(address: str | None) -> str:
    """The cluster `ray.init` joins: `address` (`--address`), else $RAY_ADDRESS, else "local", a new
    Ray instance of this process. Never Ray's own default, which joins whatever cluster
    /tmp/ray/ray_current_cluster names: a `ray start` node left on the machine, or a dead one, where
    `ray.init` then waits for ever."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def set_train_env(address: str | None) -> None:
    """Ray Train V2's settings for the runs this process starts (Train forwards them from here to its
    controllers and workers); a value the user set is kept."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", _TRAIN_POLL_S)
    if ray_address(address) == "local":
        for key, value in _LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)


def _init_ray(address: str | None, *, verbose: bool) -> bool:
    """Start (or join) Ray for this search; whether this call did (False: Ray was already up)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    set_train_env(address)
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    ray.init(address=ray_address(address), include_dashboard=False, logging_level=logging.INFO if verbose else logging.WARNING,
             log_to_driver=verbose, runtime_env={"env_vars": env} if env else None)
    return True


def _stop_ray_in_background() -> threading.Thread:
    """`ray.shutdown()` on a thread of its own, started once Tune is done. A local instance's
    processes take a few seconds to stop (about 2.5 s for a one-trial search on the 2-core machine),
    and the report written meanwhile needs none of them; the caller joins the thread."""
    import ray

    stopping = threading.Thread(target=ray.shutdown, name="ncsearch-ray-shutdown", daemon=True)
    stopping.start()
    return stopping


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

    Everything that can be wrong with the input (the spec, the data root, the model, the evaluation
    options, an existing run directory) is checked before Ray starts. Failed runs are retried up to
    `search.max_failures` times and then recorded as failed; the search goes on.
    """
    from ncsearch import _endpoints
    from ncsearch.space import translate

    # A password in a tracking URI moves into this process's environment, never into a record.
    tracking_uri = _endpoints.adopt_credentials(tracking_uri)
    if spec.tracking.uri and _endpoints.adopt_credentials(spec.tracking.uri) != spec.tracking.uri:
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(
            update={"uri": _endpoints.adopt_credentials(spec.tracking.uri)})})
        yaml_path = None  # its text holds the password; the effective spec (spec.yaml) is logged without it
    _endpoints.check_tracking_uri(tracking_uri or spec.tracking.uri, existing=False,
                                  what="--tracking-uri" if tracking_uri else "tracking.uri")
    _endpoints.check_ray_address(address)  # seconds, not Ray's minutes of retries after the run folder exists
    plan = translate(spec, num_samples=num_samples)
    layout = RunLayout(run_dir_for(spec, storage))
    echo(f"run directory: {layout.root}")
    for note in plan.notes:
        echo(f"note: {note}")
    from ncsearch._run_checks import check_resume_files, check_writable

    check_writable(layout.root)  # a read-only folder: one line now, not a traceback after the model loaded

    select_train_v2()
    from ray import tune

    from ncsearch._run_lock import RunLock

    lock = RunLock(layout.root)
    if layout.root.is_dir():  # before anything else: a live run on this folder is the first thing to say
        _say_takeover(lock.acquire(), echo)
    if resume:
        if not tune.Tuner.can_restore(str(layout.tune_dir)):
            raise UserInputError(f"nothing to resume: no Tune experiment in {layout.tune_dir}")
        _check_resume(spec, layout.root)
        check_resume_files(layout, spec, tracking_uri=tracking_uri or spec.tracking.uri)
    elif layout.tune_dir.exists():
        raise UserInputError(
            f"{layout.root} already holds a search; pass --resume to continue it, or choose another "
            "--storage (or --set name=...) for a new one"
        )

    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import build_benchmarks
    from ncsearch.models import ensure_model

    data_root = resolve_data_root(data_dir or spec.data_dir)
    echo(f"data: {data_root}")
    from ncsearch._trial_driver import evaluation_suite

    names, options = evaluation_suite(spec, vocab_ids=[0])  # what a trial will run (V is only known then)
    build_benchmarks(names, data_root=data_root, limits=spec.eval.limits, options=options,
                     domains=spec.eval.domain_filter())
    t0 = time.perf_counter()
    model_path = ensure_model(spec.model, data_root=data_root, trust_remote_code=spec.trust_remote_code)
    from ncsearch.models import remember_verified, verify_mlm

    verified = verify_mlm(model_path, shown=spec.model, trust_remote_code=spec.trust_remote_code)  # not in every trial
    echo(f"model: {spec.model} -> {model_path} ({time.perf_counter() - t0:.0f}s)")
    from ncsearch.evaluate.perplexity import prepare_reference

    prepare_reference(options.get("perplexity", {}), data_root=data_root, limit=spec.eval.limits.get("perplexity"),
                      echo=echo)  # once per model, not once per trial
    from ncsearch.debias import preflight_baselines

    preflight_baselines(spec, data_root, model_path)

    import yaml

    from ncsearch.tracking import SearchTracker

    layout.root.mkdir(parents=True, exist_ok=True)
    remember_verified(verified)  # every check passed
    _say_takeover(lock.acquire(), echo)  # held until this process ends
    if not resume:
        layout.spec_file.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    uri = tracking_uri or spec.tracking.uri or (None if resume else layout.mlflow_uri)
    from ncsearch._tracking_buffer import MLFLOW_HTTP_DEFAULTS

    for key, value in MLFLOW_HTTP_DEFAULTS.items():  # brief retries; longer outages are buffered
        os.environ.setdefault(key, value)
    tracker = SearchTracker(layout.root, tracking_uri=uri, experiment=spec.tracking.experiment or spec.name,
                            max_outage_s=spec.tracking.max_outage_s)
    parent = tracker.start_parent(spec, yaml_path=yaml_path, ray_address=address, resume=resume)
    echo(f"tracking: {tracker.tracking_uri} (experiment {tracker.experiment!r}, parent run {parent})")
    echo(f"optuna study: {layout.optuna_url} (study {spec.name!r})")
    runs = f"{plan.num_samples} configuration(s) x {plan.replicates} seed(s)"
    if plan.control:
        runs += " + seed-matched alpha = 0 controls"
    echo(f"runs: {runs}, up to {plan.expected_runs} training runs, {plan.max_concurrent} at a time")

    # Tune saves its experiment state at most this often (default "auto": >= 10 s). Trials take
    # minutes, so saving every second is cheap, and a driver killed right after a trial finished
    # does not run that trial again on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # The legacy reporter honours verbose=0; the new one prints its configuration box regardless.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Step results carry train/* only; the objectives arrive with the final result of each trial.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    started_ray = _init_ray(address, verbose=verbose)
    if not verbose:
        _quiet_tune_errors()

    from ncsearch._tune_callbacks import ProgressCallback, TrackingCallback

    from ncsearch._assets import ShippedFolder

    # Nodes without the model or the data at these paths get them through the object store.
    assets = {"model": ShippedFolder.put(model_path), "data": ShippedFolder.put(data_root)}
    context = TrialContext(spec=spec.to_dict(), run_dir=str(layout.root), data_root=str(data_root), model_path=model_path,
                           trial_storage=spec.trial_storage, assets=assets)
    trainable = tune.with_resources(tune.with_parameters(trial_driver, context=context),
                                    {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    objectives = [(o.metric, o.mode) for o in spec.objectives]
    start = time.perf_counter()
    if resume:
        echo(f"resuming the search in {layout.tune_dir}")
        tuner = tune.Tuner.restore(str(layout.tune_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False)
    else:
        callbacks = [TrackingCallback(str(layout.root), spec.to_dict()),
                     ProgressCallback(objectives, plan.expected_runs,
                                      steps=spec.train.steps if isinstance(spec.train.steps, int) else None)]
        tuner = tune.Tuner(
            trainable,
            param_space=plan.param_space,
            tune_config=tune.TuneConfig(
                search_alg=plan.searcher(storage_url=layout.optuna_url, study_name=spec.name),
                num_samples=-1,  # the searcher says when every configuration has been proposed
                time_budget_s=spec.search.time_budget_s,
                trial_dirname_creator=lambda trial: tune_trial_dirname(trial.trial_id),
                # A finished trial's driver process runs the next trial: it has Ray Tune, Ray Train and
                # torch imported already (about 3 CPU-seconds a trial saved).
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=layout.tune_dir.name,
                storage_path=str(layout.root),
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
    finished = sum(1 for r in grid if r.error is None and (r.metrics or {}).get(FINAL_KEY))
    failed = sum(1 for r in grid if r.error is not None)
    unfinished = len(grid) - finished - failed
    # Ray stops while the search is read back and reported on (only a Ray this search started).
    stopping = _stop_ray_in_background() if started_ray else None
    try:
        return _finish(spec, layout, tracker, plan, wall, echo, finished=finished, failed=failed, unfinished=unfinished)
    finally:
        if stopping is not None:
            stopping.join()
        lock.release()  # an error before this point ends the process, and the kernel releases the lock


def _finish(spec: SearchSpec, layout: RunLayout, tracker: Any, plan: Any, wall: float, echo: Callable[[str], None],
            *, finished: int, failed: int, unfinished: int) -> SearchOutcome:
    """Read the search back from MLflow, write and log the Pareto artifacts and the report (given how
    many runs Tune finished, failed and left unfinished)."""
    from ncsearch._records import load_search
    from ncsearch.report import write_report

    _wait_for_tracking(tracker, echo)
    record = load_search(tracker.experiment, tracking_uri=tracker.tracking_uri, parent_run_id=tracker.parent_run_id)
    if spec.search.shares_train_runs:  # a Tune trial ran several seeds: count runs
        finished = sum(1 for run in record.runs if run.status == "FINISHED")
        failed = sum(1 for run in record.runs if run.status == "FAILED")
    proposed = sum(1 for g in record.groups.values() if g.role == "trial")
    searcher_done = proposed >= plan.num_samples and unfinished == 0
    budget = spec.search.time_budget_s
    budget_reached = budget is not None and wall >= budget and not searcher_done
    report = write_report(record, pareto_dir=layout.pareto_dir, report_dir=layout.report_dir,
                          facts={"search/wall_s": wall, "runs/finished": finished, "runs/failed": failed})
    complete = budget_reached or searcher_done
    status = "FINISHED" if complete and finished else ("FAILED" if complete else "KILLED")
    _close_groups(tracker, report, complete=complete)
    from ncsearch._training_runs import record_training_runs

    record_training_runs(tracker)  # the trained models as run outputs: MLflow's UI then shows training runs
    outages = tracker.outages
    outage_facts = {"tracking/outage_s": outages.seconds, "tracking/buffered_calls": outages.buffered,
                    "tracking/lost_calls": len(outages.lost)} if outages.periods else {}
    tracker.finish_parent(metrics={**report.parent_metrics(), "runs/finished": finished, "runs/failed": failed,
                                   "search/wall_s": wall, **outage_facts},
                          artifacts={"pareto": layout.pareto_dir, "report": layout.report_dir},
                          tags={**report.parent_tags(), **({OUTAGE_TAG: outages.text()} if outages.periods else {})},
                          status=status)
    _wait_for_tracking(tracker, echo)
    echo("")
    echo(report.text())
    echo(f"{finished} runs finished, {failed} failed ({report.configurations} configurations) in {wall:.0f}s")
    echo(f"report: {layout.report_dir / 'report.html'} (and report.md); Pareto artifacts in {layout.pareto_dir}")
    if budget_reached:
        echo(f"stopped at the time budget (search.time_budget_s = {budget:g} s)")
    elif not complete:
        echo(f"the search stopped early; continue it with: ncsearch run ... --resume (run directory {layout.root})")
    if outages.periods:
        echo(f"warning: {outages.text()} (exit code {EXIT_TRACKING_OUTAGE} if nothing else went wrong)")
    return SearchOutcome(run_dir=layout.root, tracking_uri=tracker.tracking_uri, experiment=tracker.experiment,
                         parent_run_id=tracker.parent_run_id, finished=finished, failed=failed,
                         expected=plan.expected_runs, configurations=report.configurations,
                         searcher_done=searcher_done, budget_reached=budget_reached, report=report,
                         tracking_outage_s=outages.seconds, tracking_lost=len(outages.lost))


def _wait_for_tracking(tracker: Any, echo: Callable[[str], None]) -> None:
    """Wait (up to tracking.max_outage_s) until every buffered MLflow write has been replayed; the
    search's records are then complete, or it stops here with exit code 1, saying what was not written."""
    if not tracker.outages.down and tracker.flush(0):
        return
    echo(f"waiting up to {tracker.max_outage_s:g} s (tracking.max_outage_s) for the MLflow tracking server: "
         f"{tracker.outages.text()}")
    if not tracker.flush():
        from ncsearch.errors import NcsearchError

        raise NcsearchError(f"{tracker.outages.text()}: gave up after tracking.max_outage_s = "
                            f"{tracker.max_outage_s:g} s; the search's MLflow records are incomplete "
                            f"(its run directory has everything else: {tracker.run_dir})")


def _close_groups(tracker: Any, report: Any, *, complete: bool) -> None:
    """Close configuration and control runs the Tune callback could not summarise (a seed never ran:
    the search was stopped, or hit its time budget), with what their finished seeds show."""
    for group, summary in report.analysis.summaries.items():
        run_id = tracker.group_run_id(group)
        if run_id is None or tracker.get_run(run_id).info.status != "RUNNING":
            continue
        status = ("FINISHED" if summary.runs else "FAILED") if complete else "KILLED"
        tracker.finish_group(group, summary.mlflow_metrics(), status=status)


def main_exit_code(outcome: SearchOutcome) -> int:
    """0 when at least one run finished and the search ran to the end, else 1; but
    `EXIT_TRACKING_OUTAGE` (3) instead of 0 when the MLflow tracking server was unreachable for a
    while (every buffered call replayed: the records are complete, the summary says how long), and 1
    when a buffered call was refused on replay."""
    if not (outcome.finished and outcome.complete) or outcome.tracking_lost:
        return 1
    return EXIT_TRACKING_OUTAGE if outcome.tracking_outage_s > 0 else 0
