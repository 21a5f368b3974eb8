"""A search's MLflow runs recorded as model training, not as GenAI evaluation.

MLflow 3's UI has two views of an experiment, "GenAI" (its default) and "Model training". The GenAI
view files a run under "Training runs" only when the run has a model among its outputs (a
LoggedModel); every other run goes under "Evaluation runs", where a search's parent run, its
configurations and its seeds would all end up. So, once a search has finished, `record_training_runs`:

- tags the experiment `mlflow.experimentKind = custom_model_development` (MLflow's own label for a
  model-training experiment, which MLflow's UIs read when they do not take the kind from the view);
- records each finished seed's trained model (its final checkpoint) as a LoggedModel, an output of the
  seed's run, of its configuration's (or control's) run and of the search's parent run, at the seed's
  last training step. The model holds no copy of the weights: its tags say where the checkpoint is.

It goes through the tracker's writer like every other MLflow call of the search: reads wait out a
tracking server that cannot be reached (up to `tracking.max_outage_s`), writes are buffered.

A seed run that failed and then finished (a failed trial that `--resume` ran again) keeps its first
failure as `ncsearch.previous_failure` instead of `ncsearch.failure_reason`, which marks runs that
ended FAILED. Running it again (a `--resume`d search) only adds what is missing. `ncsearch ui` prints the link that
opens the experiment in the "Model training" view (`MODEL_TRAINING_VIEW`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncsearch.tracking import SearchTracker

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_VIEW", "MODEL_TYPE", "PREVIOUS_FAILURE_TAG",
           "record_training_runs"]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The query that opens an experiment page of the MLflow UI in its "Model training" view.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
#: A seed run that finished after failing: the reason of its failure.
PREVIOUS_FAILURE_TAG = "ncsearch.previous_failure"
#: `model_type` of the LoggedModels (MLflow lets runs and models be searched by it).
MODEL_TYPE = "masked-lm"


def record_training_runs(tracker: SearchTracker) -> int:
    """Tag the experiment and record every finished seed's model (see the module docstring); returns
    how many models were recorded now."""
    from mlflow.entities import LoggedModelOutput

    from ncsearch.tracking import GROUP_TAG, REASON_TAG, TRIAL_TAG, TrackingState

    client, writer = tracker.client, tracker.writer

    def read(fn: Any) -> Any:
        return writer.read(fn, timeout=tracker.max_outage_s)

    experiment_id = tracker.experiment_id
    if read(lambda: client.get_experiment(experiment_id)).tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        writer.write("set_experiment_tag", experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    parent = tracker.parent_run_id
    recorded = 0
    group_names: dict[str, str] = {}
    # The Tune callback's own tracker created the seed runs: their ids are in tracking.json, not in `tracker.state`.
    for run_id in list(TrackingState(tracker.run_dir).data["trials"].values()):
        run = tracker.get_run(run_id)
        if run.info.status == "FINISHED" and REASON_TAG in run.data.tags:
            writer.write("set_tag", run_id, PREVIOUS_FAILURE_TAG, run.data.tags[REASON_TAG])
            writer.write("delete_tag", run_id, REASON_TAG)
        checkpoint = run.data.tags.get("ncsearch.checkpoint")
        if run.info.status != "FINISHED" or not checkpoint or _outputs(run):
            continue
        group_run = run.data.tags.get("mlflow.parentRunId")
        if group_run and group_run not in group_names:
            group_names[group_run] = tracker.get_run(group_run).info.run_name or ""
        name = f"{group_names.get(group_run or '', '')} {run.info.run_name}".strip()
        tags = {"ncsearch.checkpoint": checkpoint, "ncsearch.tokenizer": run.data.tags.get("ncsearch.tokenizer", ""),
                TRIAL_TAG: run.data.tags.get(TRIAL_TAG, ""), GROUP_TAG: run.data.tags.get(GROUP_TAG, "")}
        step = max((m.step for m in read(lambda r=run_id: client.get_metric_history(r, "train/loss"))), default=0)

        def log_model(run_id: str = run_id, group_run: str | None = group_run, name: str = name, tags: dict = tags,
                      step: int = step) -> None:
            model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type=MODEL_TYPE,
                                               tags=tags)
            client.finalize_logged_model(model.model_id, "READY")
            for owner in dict.fromkeys([run_id, group_run, parent]):
                if owner:
                    client.log_outputs(owner, [LoggedModelOutput(model.model_id, step)])

        read(log_model)  # one unit: it needs the model's id, so it cannot wait in the write buffer
        recorded += 1
    return recorded


def _outputs(run: Any) -> list[Any]:
    outputs = getattr(run, "outputs", None)
    return list(getattr(outputs, "model_outputs", None) or [])
