"""Checks of a run directory made before Ray starts: that it can be written, and, on `--resume`, that
the files the search continues from are whole.

Writable: the run directory (or, before it exists, the nearest folder above it) must take a new file.
A read-only folder or file system otherwise shows up minutes later, after the model was loaded, as a
traceback from the lock file, SQLite or Tune. The probe is a real file (created, then removed), since
`os.access` says yes to root on a folder without write bits and cannot see every read-only mount.

Resume: `--resume` continues from four things, and each one damaged would otherwise fail deep inside
a library, or worse, be quietly replaced by a fresh one (Optuna creates an empty study in an empty
file; Ray Train starts a trial over at step 0 when its checkpoint list is gone):

- `optuna.db`: a SQLite file that passes `PRAGMA quick_check`, with Optuna's tables and this search's study;
- the MLflow store, when it is a SQLite file (the default `mlflow.db`): `quick_check`, MLflow's tables and
  the search's parent run recorded in `tracking.json` (itself valid JSON);
- Tune's experiment state, to learn which trials will run again (all but the finished ones);
- each of those trials' latest Ray Train checkpoint, when it is on this machine: Train's checkpoint
  list (`checkpoint_manager_snapshot.json`) and the folder it names, checked by
  `ncsearch.training._checkpoint.checkpoint_problem` (every file present, none cut short).

Any problem is one line naming the file (UserInputError, exit 2) and nothing has been written.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch.errors import UserInputError

if TYPE_CHECKING:
    from ncsearch.config import SearchSpec
    from ncsearch.paths import RunLayout

__all__ = ["check_resume_files", "check_writable", "sqlite_problem", "trials_to_resume"]

OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
MLFLOW_TABLES = frozenset({"experiments", "runs", "tags", "metrics", "params"})
#: Ray Train's list of a run's checkpoints (the latest is what a restarted run continues from).
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"


def check_writable(root: Path) -> None:
    """Raise UserInputError unless a file can be created in run directory `root` (or in the nearest
    existing folder above it, where `root` will be created)."""
    folder = Path(root)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    what = "the run directory" if folder == Path(root) else f"the folder that would hold the run directory {root}"
    if not folder.is_dir():
        raise UserInputError(f"{folder}: {what} is not a folder")
    probe = folder / f".ncsearch-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise UserInputError(f"{folder}: {what} is not writable ({err.strerror or err}); "
                             "make it writable, or choose another --storage") from None
    if folder == Path(root):  # files a resumed search rewrites in place
        for name in ("optuna.db", "mlflow.db", "tracking.json", "ncsearch.lock", "spec.yaml", "tune", "trials"):
            path = folder / name
            if path.exists() and not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
                raise UserInputError(f"{path}: not writable; make it writable, or choose another --storage")


def sqlite_problem(path: Path, tables: frozenset[str]) -> str | None:
    """What is wrong with SQLite file `path` (opened read-only), or None: unreadable, failing
    `PRAGMA quick_check`, or without one of `tables`."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = connection.execute("PRAGMA quick_check").fetchall()
            found = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error as err:
        return f"not a readable SQLite database: {err}"
    if rows != [("ok",)]:
        return f"SQLite integrity check failed: {'; '.join(str(r[0]) for r in rows[:3])}"
    missing = sorted(tables - found)
    if missing:
        return f"no table {', '.join(missing)}" + (" (an empty database)" if not found else "")
    return None


def _query(path: Path, sql: str, *args: Any) -> list[tuple]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def _damaged(path: Path, problem: str, *, what: str) -> UserInputError:
    return UserInputError(f"cannot resume: {path} ({what}) is damaged: {problem}; restore it from a backup, "
                          "or start a new search with another --storage or name")


def check_resume_files(layout: RunLayout, spec: SearchSpec, *, tracking_uri: str | None = None) -> None:
    """Raise UserInputError naming the first damaged file a resumed search would continue from (see the
    module docstring). `tracking_uri`: the store the resumed search will use when it is not the one in
    tracking.json (`--tracking-uri`, `tracking.uri`)."""
    _check_optuna(layout.root / "optuna.db", spec.name)
    _check_tracking(layout, tracking_uri)
    for trial_id in trials_to_resume(layout.tune_dir):
        _check_trial_checkpoint(layout, spec, trial_id)


def _check_optuna(path: Path, study: str) -> None:
    if not path.is_file():
        raise UserInputError(f"cannot resume: {path} (the Optuna study) is missing; --resume would start the "
                             "study over. Restore it, or start a new search with another --storage or name")
    problem = sqlite_problem(path, OPTUNA_TABLES)
    if problem is None and not _query(path, "SELECT 1 FROM studies WHERE study_name = ?", study):
        problem = f"it holds no study {study!r}"
    if problem:
        raise _damaged(path, problem, what="the Optuna study")


def _check_tracking(layout: RunLayout, tracking_uri: str | None) -> None:
    path = layout.tracking_file
    if not path.is_file():
        raise UserInputError(f"cannot resume: {path} (the search's MLflow run ids) is missing; --resume would "
                             "start a second search run. Restore it, or start a new search with another --storage or name")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        parent = state["parent_run_id"]
        recorded = state["tracking_uri"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise _damaged(path, f"{type(err).__name__}: {err}", what="the search's MLflow run ids") from None
    store = _sqlite_path(tracking_uri or recorded)
    if store is None:  # a tracking server or another store: checked when the search connects to it
        return
    if not store.is_file():
        raise UserInputError(f"cannot resume: {store} (the MLflow store) is missing; restore it, or start a "
                             "new search with another --storage or name")
    problem = sqlite_problem(store, MLFLOW_TABLES)
    if problem is None and not _query(store, "SELECT 1 FROM runs WHERE run_uuid = ?", parent):
        problem = f"it holds no run {parent} (the search's parent run in {path.name})"
    if problem:
        raise _damaged(store, problem, what="the MLflow store")


def _sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///...` tracking URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def trials_to_resume(tune_dir: Path) -> list[str]:
    """Ids of the trials in Tune's newest experiment state that a resume runs again: every one that did
    not finish (TERMINATED), errored ones included."""
    states = sorted(Path(tune_dir).glob("experiment_state-*.json"))
    if not states:
        return []
    path = states[-1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        trials = [json.loads(state) for state, _ in data["trial_data"]]
        return [str(t["trial_id"]) for t in trials if t.get("status") != "TERMINATED"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise _damaged(path, f"{type(err).__name__}: {err}", what="Tune's experiment state") from None


def _train_dir(layout: RunLayout, spec: SearchSpec, trial_id: str) -> Path | None:
    """The trial's Ray Train run folder on this machine (None: in remote storage)."""
    from ncsearch.paths import RunLayout, trial_storage_path

    if spec.trial_storage is None:
        return layout.trial_dir(trial_id) / RunLayout.TRAIN_RUN
    location = trial_storage_path(spec.trial_storage, layout.root.name, trial_id)
    if "://" in location:
        return Path(location.split("://", 1)[1]) / RunLayout.TRAIN_RUN if location.startswith("file://") else None
    return Path(location) / RunLayout.TRAIN_RUN


def _check_trial_checkpoint(layout: RunLayout, spec: SearchSpec, trial_id: str) -> None:
    from ncsearch.training._checkpoint import checkpoint_problem

    train = _train_dir(layout, spec, trial_id)
    if train is None or not train.is_dir():
        return  # remote (the worker checks it), or the trial never saved a checkpoint: it starts at step 0
    snapshot = train / TRAIN_SNAPSHOT
    saved = sorted(p.name for p in train.glob("*checkpoint_*") if p.is_dir())  # run<i>_: a shared Train run
    if not snapshot.is_file():
        if saved:
            raise UserInputError(
                f"cannot resume: {snapshot} (trial {trial_id}'s checkpoint list) is missing, so Ray Train would "
                f"train the trial again from step 0 beside its checkpoints ({', '.join(saved)}); restore it, or "
                f"move {train} away to train that trial again"
            )
        return
    try:
        latest = json.loads(snapshot.read_text(encoding="utf-8")).get("latest_checkpoint_result")
        name = latest["checkpoint_dir_name"] if latest else None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise _damaged(snapshot, f"{type(err).__name__}: {err}", what=f"trial {trial_id}'s checkpoint list") from None
    if name is None:
        return
    found = checkpoint_problem(train / name)
    if found:
        path, problem = found
        raise UserInputError(
            f"cannot resume: {path} (the latest checkpoint of trial {trial_id}) is damaged: {problem}; restore "
            f"it, or move {train} away to train that trial again from step 0"
        )
