"""Where ncsearch keeps things on disk: the cache (adapted models, staged data) and run directories.

`RunLayout` is the one place that names the files and folders of a search's run directory; every
module that reads or writes them asks it, so a folder is never spelled in two places.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ncsearch.config import SearchSpec

__all__ = ["RunLayout", "cache_dir", "run_dir_for", "trial_storage_path", "tune_trial_dirname"]


def cache_dir(*, create: bool = True) -> Path:
    """`$NCSEARCH_CACHE_DIR`, else `~/.cache/ncsearch`. Created on first use (unless `create` is false:
    a lookup that only reads must leave no folder behind)."""
    root = Path(os.environ.get("NCSEARCH_CACHE_DIR") or Path.home() / ".cache" / "ncsearch").expanduser()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def run_dir_for(spec: SearchSpec, storage: str | Path | None = None) -> Path:
    """`<storage>/<name>`, absolute; `storage` defaults to the spec's (`runs`, relative to the cwd)."""
    return (Path(storage or spec.storage).expanduser() / spec.name).resolve()


def tune_trial_dirname(trial_id: str) -> str:
    """The folder Ray Tune keeps one trial's own files in, under `RunLayout.tune_dir`."""
    return f"trial_{trial_id}"


class RunLayout:
    """The run directory of one search:

        tune/                 the Tuner's experiment (what `--resume` restores); tune/trial_<id>/ per trial
        trials/<id>/train/    the trial's Ray Train run and checkpoints
        trials/<id>/eval/     metrics.json, identity.json and the per-example tables
        optuna.db             the Optuna study
        mlflow.db, mlartifacts/   the default MLflow store
        pareto/               pareto.csv, configurations.csv, all_trials.csv, pareto.png, pareto.html
        report/               report.html, report.md and their figures
        spec.yaml, tracking.json
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def tracking_file(self) -> Path:
        return self.root / "tracking.json"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def mlflow_uri(self) -> str:
        """`sqlite:///<abs run dir>/mlflow.db` (four slashes for an absolute path)."""
        return f"sqlite:///{self.root.resolve() / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def pareto_dir(self) -> Path:
        return self.root / "pareto"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / "trials" / trial_id

    def trial_eval_dir(self, trial_id: str) -> Path:
        """The trial's evaluation folder: a link into its final checkpoint, or a copy of it when the
        trial stored its checkpoints remotely (`trial_storage`)."""
        return self.trial_dir(trial_id) / "eval"

    #: The Ray Train run's name inside `trial_dir` (its checkpoints live under it).
    TRAIN_RUN = "train"


def trial_storage_path(trial_storage: str, search_name: str, trial_id: str) -> str:
    """The Ray Train storage path of one trial under a search's `trial_storage` (a folder or a URI):
    `<trial_storage>/<search name>/trials/<trial id>`."""
    if "://" in trial_storage:
        return f"{trial_storage.rstrip('/')}/{search_name}/trials/{trial_id}"
    return str((Path(trial_storage).expanduser() / search_name / "trials" / trial_id).resolve())
