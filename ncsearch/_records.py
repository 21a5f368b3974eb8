"""A finished (or running) search read back from MLflow: its spec, groups and runs, for the analysis.

`ncsearch report`, `ncsearch pareto`, `ncsearch compare` and the end of `ncsearch run` all read a
search this way, so the report written at the end of a run and one written later from the tracking
server are computed from the same records. Evaluation folders (per-example tables) come from each
seed run's `eval/` artifact: read in place from a local artifact store, downloaded otherwise.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ncsearch.analysis import GroupInfo, RunRecord, label_of
from ncsearch.config import SearchSpec, parse_spec
from ncsearch.errors import UserInputError
from ncsearch.tracking import (
    CONFIGURATION,
    CONTROL,
    CONTROL_TAG,
    GROUP_TAG,
    KIND_TAG,
    LABEL_TAG,
    REASON_TAG,
    REPLICATE_TAG,
    ROLE_TAG,
    SEED,
    TRIAL_TAG,
    VALUES_TAG,
    parent_run,
)

__all__ = ["SearchRecord", "eval_loader", "load_search"]


@dataclass
class SearchRecord:
    """Everything the analysis needs about one search run, read from MLflow."""

    experiment: str
    tracking_uri: str
    parent: Any  # the mlflow Run of the search
    spec: SearchSpec
    groups: dict[str, GroupInfo]
    runs: list[RunRecord]
    _downloads: list[tempfile.TemporaryDirectory] = field(default_factory=list, repr=False)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [(o.metric, o.mode) for o in self.spec.objectives]


def _local_artifacts(artifact_uri: str) -> Path | None:
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def eval_loader(client: Any, run: Any, downloads: list) -> Any:
    """A zero-argument callable returning the run's evaluation (`EvalRecord`), read in place for a
    local artifact store, downloaded into a temporary folder otherwise."""
    from ncsearch._eval_store import read_eval

    def load() -> Any:
        local = _local_artifacts(run.info.artifact_uri)
        if local is not None and (local / "eval").is_dir():
            return read_eval(local / "eval")
        folder = tempfile.TemporaryDirectory(prefix="ncsearch-eval-")
        downloads.append(folder)
        path = client.download_artifacts(run.info.run_id, "eval", folder.name)
        return read_eval(path)

    return load


def load_search(experiment: str, *, tracking_uri: str, parent_run_id: str | None = None) -> SearchRecord:
    """The latest (or the given) search run of `experiment` with its groups and seed runs."""
    import os

    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in our output
    client, parent = parent_run(experiment, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    experiment_id = parent.info.experiment_id
    try:
        with tempfile.TemporaryDirectory(prefix="ncsearch-spec-") as folder:
            spec_path = client.download_artifacts(parent.info.run_id, "spec.yaml", folder)
            text = Path(spec_path).read_text(encoding="utf-8")
    except Exception as err:  # MLflow raises its own exception types for a missing artifact
        raise UserInputError(f"search run {parent.info.run_id} of {experiment!r} has no readable spec.yaml ({err})") from None
    spec = parse_spec(yaml.safe_load(text), source=f"{experiment}: spec.yaml")
    children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=50000)
    groups: dict[str, GroupInfo] = {}
    group_of_run: dict[str, str] = {}
    seed_runs = []
    for run in children:
        tags = run.data.tags
        role = tags.get(ROLE_TAG)
        if role in (CONFIGURATION, CONTROL):
            values = json.loads(tags.get(VALUES_TAG, "{}"))
            group = tags.get(GROUP_TAG, run.info.run_id)
            groups[group] = GroupInfo(group, "trial" if role == CONFIGURATION else "control", values,
                                      tags.get(LABEL_TAG) or label_of(values), tags.get(CONTROL_TAG), run.info.run_id)
            group_of_run[run.info.run_id] = group
        elif role in (SEED, "trial"):  # "trial": a search from before configurations had runs of their own
            seed_runs.append(run)
    if group_of_run:
        nested = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = '{SEED}'",
                                    order_by=["attributes.start_time ASC"], max_results=50000)
        seed_runs += [r for r in nested if r.data.tags.get("mlflow.parentRunId") in group_of_run]
    record = SearchRecord(experiment, tracking_uri, parent, spec, groups, [])
    for run in seed_runs:
        tags = run.data.tags
        trial_id = tags.get(TRIAL_TAG, run.info.run_name)
        group = tags.get(GROUP_TAG) or trial_id
        if group not in groups:  # a search from before configurations had runs of their own
            values = {k: _typed(run.data.params.get(k)) for k in spec.distributions()}
            groups[group] = GroupInfo(group, "trial", values, label_of(values), None, None)
        record.runs.append(RunRecord(
            trial_id=trial_id,
            role=tags.get(KIND_TAG, "trial"),
            group=group,
            replicate=int(tags.get(REPLICATE_TAG, 0)),
            status=run.info.status,
            metrics=dict(run.data.metrics),
            evaluation=eval_loader(client, run, record._downloads),
            run_id=run.info.run_id,
            error=tags.get(REASON_TAG),
        ))
    return record


def _typed(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
