"""Several training runs, one after another, in one Ray Train run's worker processes.

A Ray Train run starts new worker processes, and each of them imports Ray Train, torch and
transformers before it trains anything: about 8 of a trial's 10 s of fixed costs on the 2-core machine
(bench/trial_cost.py, `of_which.worker_imports`). Runs that need the same workers (a configuration's
seed replicates, a control's) can share one Train run instead: the workers train and evaluate run 0,
then run 1, and so on, and each later run's setup costs about 0.2 s (bench/warm_seed_setup.py).

Each run stays its own run: its own concrete spec (seed, alpha), checkpoints, final checkpoint with
its evaluation folder, and metrics. What changes with `len(runs) > 1`:

- its checkpoints are named `run<i>_checkpoint_<step>`, and its reports carry `RUN_KEY` (= i);
- every checkpoint report carries `KEEP_KEY`, the score by which Ray Train's checkpoint manager
  decides what to keep (`checkpoint_config`): each run's final checkpoint outranks every other, so it
  is never deleted, and among the others the latest rank highest, as with `num_to_keep=2` alone;
- a restarted worker group (Ray Train's `FailureConfig`, or the same call again) resumes the run its
  latest checkpoint belongs to and skips the runs before it, whose final checkpoints are kept.

`ncsearch.training._trial.fit_runs` starts such a Train run and returns one `TrainOutcome` per run.
A single run is unchanged: the names, reports and retention of `fit_trial`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FINAL_KEEP", "KEEP_KEY", "RUN_KEY", "checkpoint_config", "checkpoint_name", "run_labels", "train_runs"]

#: Which run (0-based) of a multi-run Train run a report belongs to.
RUN_KEY = "run"
#: The checkpoint manager's score of a checkpoint report of a multi-run Train run.
KEEP_KEY = "ncsearch/keep"
#: A final checkpoint's score is at least this; any other checkpoint's is below it.
FINAL_KEEP = 1e12
_RUN_SPAN = 1e9  # a run's other checkpoints score run * _RUN_SPAN + step


def checkpoint_name(step: int, *, run_index: int = 0, run_count: int = 1) -> str:
    """The folder name of a checkpoint in the Train run's storage."""
    name = f"checkpoint_{step:06d}"
    return name if run_count == 1 else f"run{run_index}_{name}"


def run_labels(metrics: dict[str, Any], *, run_index: int, run_count: int, step: int | None = None,
               final: bool = False) -> dict[str, Any]:
    """`metrics` with the run's keys added: RUN_KEY always, KEEP_KEY when the report is a checkpoint
    at `step`. Unchanged for a single run."""
    if run_count == 1:
        return metrics
    labelled = {**metrics, RUN_KEY: run_index}
    if step is not None:
        labelled[KEEP_KEY] = FINAL_KEEP + run_index if final else run_index * _RUN_SPAN + step
    return labelled


def checkpoint_config(run_count: int, *, num_to_keep: int = 2) -> dict[str, Any]:
    """Keyword arguments of Ray Train's CheckpointConfig for a Train run of `run_count` runs: every
    run's final checkpoint, plus `num_to_keep - 1` others (the latest is always kept by Ray)."""
    if run_count == 1:
        return {"num_to_keep": num_to_keep}
    return {"num_to_keep": run_count + num_to_keep - 1, "checkpoint_score_attribute": KEEP_KEY,
            "checkpoint_score_order": "max"}


def train_runs(config: dict[str, Any], runtime: Any) -> None:
    """Train and evaluate every run of `config["runs"]` in order, on this worker (see the module
    docstring). `config["runs"]` is a list of per-run entries ({"spec": ..., "evaluation": ...}) laid
    over the rest of `config`."""
    from ncsearch.training._checkpoint import read_meta
    from ncsearch.training._recipe import TrainingRecipe

    runs = list(config["runs"])
    shared = {k: v for k, v in config.items() if k != "runs"}
    with runtime.restored_checkpoint() as folder:
        resume_at = None if folder is None else int(read_meta(Path(folder)).get("run_index", 0))
    for index, run in enumerate(runs):
        if resume_at is not None and index < resume_at:
            continue  # finished before the restart: its final checkpoint is kept
        run_config = {**shared, **run, "run_index": index, "run_count": len(runs),
                      "group_restored": resume_at is not None, "resume": index == (resume_at or 0)}
        recipe = TrainingRecipe(run_config, runtime)
        try:
            recipe.setup()
            recipe.train()
        finally:
            recipe.cleanup()

