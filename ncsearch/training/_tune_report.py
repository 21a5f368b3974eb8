"""The Ray Train callback of a search's trial: reports to Tune, counts worker-group restarts.

It runs in the trial's Train controller. Every report of the workers goes on to the Tune trial (as
Ray's `TuneReportCallback` does) with `train/worker_restarts`: how many times Ray Train has restarted
the worker group in this attempt of the trial (each restart resumes from the last checkpoint; the
budget is `search.worker_restarts`). A failure raised by ncsearch's own checks on every failed
worker (`NcsearchError`: a non-finite loss, an unusable vocabulary) would happen again after a
restart, so it ends the attempt at once instead: raised here, it fails the Train run with the
workers' reason, and Tune's `search.max_failures` decides what follows.

Ray's callback hands each report to the Tune session through a Ray queue: one more actor (a Python
process that imports Ray) per trial, because it assumes the controller is an actor of its own. A
search's trial runs the controller in its own process (`_lean_trainer.controller_runs_here`), so
there the report goes straight to the Tune session, from the thread that runs the controller: the
function trainable's own thread, the one Ray's `tune.report` expects. Where the controller is an actor
(a Ray release that moved it), Ray's queue is kept.

Import only after Ray Train V2 is selected (`enable_train_v2`).
"""

from __future__ import annotations

from typing import Any

from ray.train._internal.session import get_session
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.trainable.trainable_fn_utils import _in_tune_session

from ncsearch.errors import NcsearchError, TrialError

__all__ = ["WORKER_RESTARTS_KEY", "TrialReport", "deterministic_reason"]

WORKER_RESTARTS_KEY = "train/worker_restarts"


class TrialReport(TuneReportCallback):
    """`TuneReportCallback` plus `train/worker_restarts`; see the module docstring."""

    def __init__(self) -> None:
        from ncsearch.training._lean_trainer import controller_runs_here

        if controller_runs_here() and _in_tune_session():
            self._training_actor_item_queue = _TuneSession()  # no queue actor; see the module docstring
        else:
            super().__init__()  # outside a Tune session, Ray's own error
        self.restarts = 0

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        reason = deterministic_reason(worker_exceptions)
        if reason is not None:
            raise TrialError(reason)
        self.restarts += 1  # Ray Train restarts the group now, or fails the run when its budget is spent

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics:
            metrics = [{**metrics[0], WORKER_RESTARTS_KEY: float(self.restarts)}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


class _TuneSession:
    """Takes the place of `TuneReportCallback`'s queue when the controller runs in the trial's
    process: `put` reports to the Tune session there, as the trainable's own `tune.report` would."""

    def put(self, metrics: dict[str, Any]) -> None:
        get_session().report(metrics)


def deterministic_reason(worker_exceptions: dict[int, Exception]) -> str | None:
    """The reason when every failed worker stopped on an `NcsearchError` (the same input fails the
    same way again), else None (a dead process, a lost node, anything else: worth a restart). The text
    is what `failure_reason` gives for the same failure without this shortcut."""
    from ncsearch.training._trial import _first_line

    reasons = []
    for rank in sorted(worker_exceptions):
        found = _ncsearch_error(worker_exceptions[rank])
        if found is None:
            return None
        reasons.append(str(found) if isinstance(found, TrialError) else f"worker {rank} failed: {_first_line(found)}")
    return reasons[0] if reasons else None


def _ncsearch_error(error: BaseException) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NcsearchError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return None
