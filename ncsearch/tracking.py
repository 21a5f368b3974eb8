"""MLflow layout of a search (DESIGN.md §8), written from the driver process only.

Three levels, so that the run table reads the same whatever the number of seeds:

- **Search** (parent run, `ncsearch.role=parent`), one per search run directory (a `--resume`
  continues it): the YAML as an artifact (`search_space.yaml`, plus `spec.yaml`, the effective spec
  after overrides), tags `ncsearch.git_sha`, `ncsearch.ray_address`, `ncsearch.version`,
  `ncsearch.run_dir`, and the objectives as the tag `ncsearch.objectives` (JSON). At the end:
  `pareto/` (pareto.csv, configurations.csv, all_trials.csv, pareto.png, pareto.html), `report/`
  (report.html, report.md) and the metrics `pareto/hypervolume` (+ `.ci_low`/`.ci_high`).
- **Configuration** (`ncsearch.role=configuration`), nested under the search: one per configuration
  Optuna proposed, named by its searched values ("alpha=0.1152"); and **control**
  (`ncsearch.role=control`), one per control key. Params: the resolved spec (flat, dotted, without
  the seed). Metrics, once its seeds have finished: `<m>` (mean over seeds), `<m>.ci_low/.ci_high`
  (two-level bootstrap over seeds and examples), `<m>.seed_sd`, and against the control
  `delta/<m>` with `.ci_low/.ci_high/.p_value/.p_holm` (`GroupSummary.mlflow_metrics`).
- **Seed** (`ncsearch.role=seed`), nested under its configuration or control: one per Tune trial,
  named "seed N": the run's own params, step metrics (`train/*`), the final eval metrics with their
  intervals (`<m>.ci_low/.ci_high`), the evaluation folder as the artifact `eval/` (per-example
  tables), tags `ncsearch.group`, `ncsearch.kind` (trial|control), `ncsearch.replicate`,
  `ncsearch.seed`, `ncsearch.trial_id`, `ncsearch.attempts` (Tune's attempts) and
  `ncsearch.worker_restarts` (Ray Train's worker-group restarts, all attempts; the step metric
  `train/worker_restarts` shows when). A run that fails for good ends FAILED with the reason in
  `ncsearch.failure_reason`.

Why this layout: the MLflow UI collapses nested runs under their parent, so the top level of the
search lists its configurations and control with the numbers Optuna saw (mean over seeds) and their
intervals, side by side and sortable; expanding one shows its seeds, each with its curves and
per-example tables. A flat list of seed runs would put k near-duplicate rows per configuration and
no mean anywhere; tags alone cannot group rows in the UI.

Why one writer in the driver: Tune callbacks run in the driver, so the Ray workers never import
MLflow or need the tracking URI, and a SQLite store never sees concurrent writers. The default store
is `sqlite:///<run dir>/mlflow.db` with artifacts in `<run dir>/mlartifacts`; any tracking URI works
(an `mlflow server` keeps its own artifact store).

`SearchTracker` keeps its run ids in `<run dir>/tracking.json` so a restarted driver (`--resume`)
continues the same parent run and the same configuration and seed runs.

Every write goes through one in-order `ncsearch._tracking_buffer.TrackingWriter` per tracking URI:
while a tracking server cannot be reached, writes (a run's creation included) are buffered and
replayed in order once it answers again, and the search goes on meanwhile; reads wait for the
buffered writes first. `SearchTracker.outages` says what an outage cost (the search's summary).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch.errors import NcsearchError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ncsearch.config import SearchSpec

__all__ = [
    "ROLE_TAG",
    "SearchTracker",
    "TrackingState",
    "default_tracking_uri",
    "failure_reason",
    "flatten_params",
    "parent_run",
]

ROLE_TAG = "ncsearch.role"
OBJECTIVES_TAG = "ncsearch.objectives"
TRIAL_TAG = "ncsearch.trial_id"
REASON_TAG = "ncsearch.failure_reason"
GROUP_TAG = "ncsearch.group"
KIND_TAG = "ncsearch.kind"
REPLICATE_TAG = "ncsearch.replicate"
SEED_TAG = "ncsearch.seed"
VALUES_TAG = "ncsearch.values"
CONTROL_TAG = "ncsearch.control"
LABEL_TAG = "ncsearch.label"
#: `ncsearch.role` of each level.
PARENT, CONFIGURATION, CONTROL, SEED = "parent", "configuration", "control", "seed"

_MAX_PARAM_LEN = 6000
_BATCH = 100
#: tracking.json is updated from the driver's thread and from the replay of buffered run creations.
_STATE_LOCK = threading.RLock()


def default_tracking_uri(run_dir: str | Path) -> str:
    """`sqlite:///<abs run dir>/mlflow.db` (four slashes for an absolute path)."""
    from ncsearch.paths import RunLayout

    return RunLayout(run_dir).mlflow_uri


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested plain data -> `{dotted.key: str(value)}` (lists as JSON), as MLflow params want it."""
    out: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not _is_distribution(value):
            out.update(flatten_params(value, path + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
            out[path] = text[:_MAX_PARAM_LEN]
    return out


def _is_distribution(value: Mapping[str, Any]) -> bool:
    from ncsearch.config import DIST_KINDS

    return len(value) == 1 and next(iter(value)) in DIST_KINDS


def _finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _git_sha() -> str:
    """The commit of the ncsearch checkout, '<sha>-dirty' with local changes, or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def failure_reason(error_text: str) -> str:
    """The one-line reason in a Ray/Tune error file: the last 'SomeError: message' line."""
    pattern = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):?\s*(.*)$")
    for line in reversed([ln for ln in error_text.splitlines() if ln.strip()]):
        match = pattern.match(line)
        if match:
            name = match.group(1).rsplit(".", 1)[-1]
            return f"{name}: {match.group(2)}".strip().rstrip(":")[:4000]
    lines = [ln.strip() for ln in error_text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:4000]


class TrackingState:
    """`<run dir>/tracking.json`: the tracking URI, experiment and run ids of one search run."""

    def __init__(self, run_dir: str | Path):
        from ncsearch.paths import RunLayout

        self.path = RunLayout(run_dir).tracking_file
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("trials", {})
        self.data.setdefault("groups", {})

    def save(self) -> None:
        from ncsearch._atomic import atomic_write

        atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True))


class SearchTracker:
    """MLflow client for one search run directory: creates/continues the parent and child runs.

    Uses `MlflowClient` with explicit run ids (no fluent "active run" state), so trials that run
    concurrently never log into each other's runs.
    """

    def __init__(self, run_dir: str | Path, *, tracking_uri: str | None = None, experiment: str | None = None,
                 max_outage_s: float | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.state = TrackingState(self.run_dir)
        uri = tracking_uri or self.state.data.get("tracking_uri") or default_tracking_uri(self.run_dir)
        name = experiment or self.state.data.get("experiment")
        if not name:
            raise NcsearchError(f"{self.run_dir}: no experiment name given and no {self.state.path.name} to read it from")
        self.tracking_uri, self.experiment = uri, name
        #: How long a read (or the end of the search) waits for an unreachable server; None: for ever.
        self.max_outage_s = max_outage_s
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        #: ("groups" | "trials", key) -> the PendingRun of a run whose creation is buffered
        self._pending: dict[tuple[str, str], Any] = {}

    # ----- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def writer(self) -> Any:
        """This process's `TrackingWriter` of the tracking URI (shared with other trackers of it)."""
        from ncsearch._tracking_buffer import writer_for

        return writer_for(self.tracking_uri, lambda: self.client)

    @property
    def outages(self) -> Any:
        """`ncsearch._tracking_buffer.Outages` of the tracking server so far."""
        return self.writer.outages

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered write has reached the server (False: `timeout` passed first)."""
        return self.writer.flush(self.max_outage_s if timeout is None else timeout)

    def _read(self, fn: Any) -> Any:
        return self.writer.read(fn, timeout=self.max_outage_s)

    def get_run(self, run_id: Any) -> Any:
        return self._read(lambda: self.client.get_run(str(run_id)))

    def _remember(self, kind: str, key: str, run_id: str) -> None:
        with _STATE_LOCK:
            self.state.data[kind][key] = run_id
            self.state.save()

    def _create_run(self, kind: str, key: str, **kwargs: Any) -> Any:
        """Create a run and remember its id in tracking.json under `kind`/`key`, now or on replay."""
        run_id = self.writer.create_run(self.experiment_id, on_created=lambda rid: self._remember(kind, key, rid), **kwargs)
        if not isinstance(run_id, str):
            self._pending[(kind, key)] = run_id
        return run_id

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._read(self._find_or_create_experiment)
        return self._experiment_id

    def _find_or_create_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri:
            # A local store: keep artifacts beside it rather than in ./mlruns of the cwd.
            from ncsearch.paths import RunLayout

            artifact_location = RunLayout(self.run_dir).mlflow_artifacts.as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=artifact_location)
        except Exception as err:  # created concurrently by another search with the same name
            from ncsearch._tracking_buffer import is_unreachable

            exp = None if is_unreachable(err) else self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the Tuner; the client reconnects lazily after unpickling.
        state = self.__dict__.copy()
        state["_client"] = None
        state["_pending"] = {}
        return state

    def _log(self, run_id: str, *, metrics: Mapping[str, float] | None = None, step: int = 0,
             params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v in _finite_metrics(metrics or {}).items()]
        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)[:_MAX_PARAM_LEN]) for k, v in (tags or {}).items()]
        for i in range(0, len(ms), 1000):
            self.writer.write("log_batch", run_id, metrics=ms[i:i + 1000])
        for i in range(0, len(ps), _BATCH):
            self.writer.write("log_batch", run_id, params=ps[i:i + _BATCH])
        for i in range(0, len(ts), _BATCH):
            self.writer.write("log_batch", run_id, tags=ts[i:i + _BATCH])

    # ----- parent run ----------------------------------------------------------------------------

    def start_parent(self, spec: SearchSpec, *, yaml_path: str | Path | None, ray_address: str | None,
                     resume: bool = False) -> str:
        """Create the parent run (or, on resume, reopen the one in tracking.json) and log the spec."""
        from ncsearch import __version__

        data = self.state.data
        parent = data.get("parent_run_id") if resume else None
        if parent is not None:
            self.writer.write("update_run", parent, status="RUNNING")
            self._log(parent, tags={"ncsearch.resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "ncsearch.ray_address": ray_address or "local"})
            return parent
        experiment_id = self.experiment_id
        run = self._read(lambda: self.client.create_run(
            experiment_id,
            run_name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                ROLE_TAG: PARENT,
                "ncsearch.git_sha": _git_sha(),
                "ncsearch.ray_address": ray_address or "local",
                "ncsearch.version": __version__,
                "ncsearch.run_dir": str(self.run_dir),
                OBJECTIVES_TAG: json.dumps([{"metric": o.metric, "mode": o.mode} for o in spec.objectives]),
                "mlflow.note.content": spec.description or "",
            },
        ))
        parent = run.info.run_id
        plain = spec.to_dict()
        self._log(parent, params={**flatten_params(plain), "search.num_trials": str(spec.search.num_samples)})
        import yaml

        if yaml_path is not None and Path(yaml_path).is_file():
            self.writer.write("log_text", parent, Path(yaml_path).read_text(encoding="utf-8"), "search_space.yaml")
        self.writer.write("log_text", parent, yaml.safe_dump(plain, sort_keys=False), "spec.yaml")
        data.update({"tracking_uri": self.tracking_uri, "experiment": self.experiment,
                     "experiment_id": self.experiment_id, "parent_run_id": parent, "trials": {}, "groups": {}})
        with _STATE_LOCK:
            self.state.save()
        return parent

    @property
    def parent_run_id(self) -> str:
        run_id = self.state.data.get("parent_run_id")
        if not run_id:
            raise NcsearchError("the parent run has not been started")
        return run_id

    def finish_parent(self, *, metrics: Mapping[str, float], artifacts: Mapping[str, str | Path],
                      tags: Mapping[str, str] | None = None, status: str = "FINISHED") -> None:
        """Log the search's summary metrics and artifact folders ({artifact path: local folder}) on the
        parent run and close it."""
        parent = self.parent_run_id
        self._log(parent, metrics=metrics, tags=tags)
        for artifact_path, folder in artifacts.items():
            if Path(folder).is_dir():
                self.writer.write("log_artifacts", parent, str(folder), artifact_path=artifact_path)
        self.writer.write("set_terminated", parent, status=status)

    # ----- configuration, control and seed runs ----------------------------------------------------

    def group_run_id(self, group: str) -> Any:
        """The group's run id (a `PendingRun` while its creation is buffered), None before it starts."""
        return self.state.data["groups"].get(group) or self._pending.get(("groups", group))

    def start_group(self, group: str, *, role: str, label: str, values: Mapping[str, Any],
                    params: Mapping[str, str], control: str | None = None) -> str:
        """The configuration's (or control's) run under the search, created on its first seed."""
        existing = self.group_run_id(group)
        if existing is not None:
            self.writer.write("update_run", existing, status="RUNNING")
            return existing
        tags = {"mlflow.parentRunId": self.parent_run_id, ROLE_TAG: role, GROUP_TAG: group, LABEL_TAG: label,
                VALUES_TAG: json.dumps(dict(values), default=str)}
        if control:
            tags[CONTROL_TAG] = control
        run_id = self._create_run("groups", group, run_name=label, tags=tags)
        # A group spans seeds: its params are the resolved spec without the seed.
        self._log(run_id, params={k: v for k, v in params.items() if k != "train.seed"})
        return run_id

    def finish_group(self, group: str, metrics: Mapping[str, float], *, status: str = "FINISHED") -> None:
        """Log a group's summary over its seeds (`GroupSummary.mlflow_metrics`) and close its run."""
        run_id = self.group_run_id(group)
        if run_id is None:
            return
        self._log(run_id, metrics=metrics)
        self.writer.write("set_terminated", run_id, status=status)

    def child_run_id(self, trial_id: str) -> Any:
        """The trial's run id (a `PendingRun` while its creation is buffered), None before it starts."""
        return self.state.data["trials"].get(trial_id) or self._pending.get(("trials", trial_id))

    def start_trial(self, trial_id: str, *, group: str, kind: str, replicate: int, seed: int,
                    params: Mapping[str, Any]) -> str:
        """Create the seed's run under its group's, or reopen it when the trial restarts (retry/resume)."""
        existing = self.child_run_id(trial_id)
        if existing is not None:
            run = self.get_run(existing)
            attempts = int(run.data.tags.get("ncsearch.attempts", "1")) + 1
            self.writer.write("update_run", existing, status="RUNNING")
            self._log(existing, tags={"ncsearch.attempts": str(attempts)})
            return existing
        parent = self.group_run_id(group) or self.parent_run_id
        run_id = self._create_run(
            "trials", trial_id,
            run_name=f"seed {seed}" + (" (control)" if kind == "control" else ""),
            tags={"mlflow.parentRunId": parent, ROLE_TAG: SEED, TRIAL_TAG: trial_id, GROUP_TAG: group,
                  KIND_TAG: kind, REPLICATE_TAG: str(replicate), SEED_TAG: str(seed), "ncsearch.attempts": "1"},
        )
        self._log(run_id, params=params)
        return run_id

    def log_step(self, trial_id: str, metrics: Mapping[str, Any], *, step: int) -> None:
        run_id = self.child_run_id(trial_id)
        if run_id is not None:
            self._log(run_id, metrics=metrics, step=step)

    def finish_trial(self, trial_id: str, metrics: Mapping[str, Any], *, artifact_dir: str | Path | None = None,
                     tags: Mapping[str, str] | None = None, step: int = 0) -> None:
        """Final metrics at the run's last `step` (so train/* curves do not jump back to 0), the
        evaluation folder as `eval/`, FINISHED."""
        run_id = self.child_run_id(trial_id)
        if run_id is None:
            return
        self._log(run_id, metrics=metrics, tags=tags, step=step)
        if artifact_dir is not None and Path(artifact_dir).is_dir():
            self.writer.write("log_artifacts", run_id, str(artifact_dir), artifact_path="eval")
        self.writer.write("set_terminated", run_id, status="FINISHED")

    def fail_trial(self, trial_id: str, reason: str, *, error_text: str | None = None,
                   tags: Mapping[str, str] | None = None) -> None:
        run_id = self.child_run_id(trial_id)
        if run_id is None:
            return
        self._log(run_id, tags={**(tags or {}), REASON_TAG: reason})
        if error_text:
            self.writer.write("log_text", run_id, error_text, "error.txt")
        self.writer.write("set_terminated", run_id, status="FAILED")


# ----- reading a finished search back -------------------------------------------------------------


def _parent_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = '{PARENT}'",
                              order_by=["attributes.start_time DESC"])


def parent_run(experiment: str, *, tracking_uri: str, parent_run_id: str | None = None) -> tuple[Any, Any]:
    """(MlflowClient, the latest or the given search run of `experiment`); unknown names exit 2."""
    from mlflow import MlflowClient

    from ncsearch.errors import UserInputError

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UserInputError(f"no experiment {experiment!r} at {tracking_uri} (found: {', '.join(names) or 'none'})")
    if parent_run_id is not None:
        return client, client.get_run(parent_run_id)
    parents = _parent_runs(client, exp.experiment_id)
    if not parents:
        raise UserInputError(f"experiment {experiment!r} has no ncsearch search run")
    return client, parents[0]
