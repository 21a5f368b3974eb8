"""A trial's Ray Train V2 trainer, without the helper processes and imports a trial does not use.

Ray Train V2 starts, for every `fit()`, a controller and the workers, and also:

- a `DatasetManager` actor (its `DatasetsCallback` builds one even when the trainer has no Ray
  datasets; ncsearch's workers read their own corpus, so it is never asked for a shard);
- a detached `PlacementGroupCleaner` actor, which removes the run's placement group if the
  controller dies without doing so. It learns whether the controller is alive from Ray's state API,
  which the Ray dashboard serves. ncsearch installs `ray[tune,train]`, without the dashboard, so
  there the cleaner can only poll, log "Failed to query Ray Train Controller actor state" and exit
  when stopped (its stop alone holds `fit()` for about 0.6 s).

Each is a Python process that imports Ray Train and torch: about 1.5 CPU-seconds apiece at
start-up, paid again by every trial. So `lean_trainer_class` drops the `DatasetsCallback` when the
trainer has no datasets, and the cleaner only when the state API does not answer when `fit()` runs;
on a cluster with the dashboard (e.g. the rayproject/ray images of cluster/kuberay.yaml) the cleaner
stays and does its job. A third helper, the per-worker-group PreemptionWatcher, is switched off with
Ray's own setting on a local instance (`ncsearch.search.set_train_env`). On the 2-core machine, two
bare trials starting at once took 12.1-12.6 s from `fit()` to the training loop and back with all
three helpers, and 7.6-8.8 s without; bench/trial_cost.py measures it inside a real search.

**One CPU worker runs without Ray's torch backend.** `TorchConfig` sets up a torch.distributed
process group and, on a GPU, selects the worker's device. A run on one CPU worker needs neither:
every collective in ncsearch is skipped at world size 1 (`_recipe.py`, `collapse/_regularizer.py`,
`evaluate/_shard.py`, the baselines), and `ray.train.torch.prepare_model` does not wrap a single
worker's model. But the controller unpickles the backend config, and `ray.train.torch.config`
imports torch at its top: 1.2-1.4 s of the controller's start, before it starts the worker. So a
run on one CPU worker uses Ray Train V2's `DataParallelTrainer` with the default, empty
`BackendConfig`, whose controller never imports torch (nor do the run's callbacks: the
`ncsearch.training` package loads its modules lazily); every other run keeps `TorchTrainer`. The
arithmetic of the training step is the same (a one-member all-reduce changes no value);
tests/test_baseline_contract.py compares two DDP workers (TorchTrainer) with one (this trainer).

**Inside a Ray actor (a search's trial), Ray Train's controller runs in that process.** `fit()`
normally starts the controller as one more actor, pinned to the node of the process that calls
`fit()`, and waits on it. Its process is started through Ray's runtime-environment setup (Train
gives it `env_vars`) and imports Ray Train before it can start the workers: 3.3-3.7 s of every
trial on the 2-core machine, a quarter of the fixed costs, spent while the trial's own process, on
the same node with Ray Train already imported, only waits. So where `fit()` is called from inside
an actor, the trainer builds Ray's own `TrainController` with the same arguments in that process and
runs its control loop there (`asyncio.run(controller.run())`); the scaling and failure policies,
worker-group restarts, checkpoint bookkeeping and callbacks are Ray's, unchanged. What differs:
- the worker actors are owned by the trial's process instead of a controller actor that the trial's
  process owned, so they still end with the trial;
- the handle the workers are given for `ray.train.get_all_reported_checkpoints()` is the trial's
  actor, not a controller (ncsearch's training loop does not call it);
- Ray's Ctrl-C handler is not installed (`fit()` in a Tune trial runs off the main thread, where Ray
  installs none either).
A `fit()` from a driver (`ncsearch train`, the tests) keeps the controller actor.

**On a Ray instance with no autoscaler, a trial asks none for resources.** Ray Train's scaling
policy sends every run's resource request to a cluster-wide `AutoscalingCoordinator`: a detached
actor that the first run of a cluster creates and waits for, in a process that imports Ray Data
(about 2 s before the first trial's workers start, on the 2-core machine). Only an autoscaler reads
those requests. A Ray instance that ncsearch starts itself has none (`search.set_train_env` sets
`NCSEARCH_NO_AUTOSCALER=1` there; a user may set it for a fixed cluster), so there the in-process
controller gets the same `FixedScalingPolicy` less its requests. Its scaling decisions are Ray's.

The callbacks and the controller are found by their class, from Ray's private modules: if a Ray
release moves them, the plain behaviour is kept, and tests/test_train.py's lean-trainer tests fail,
so the loss is noticed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any

__all__ = [
    "NO_AUTOSCALER_ENV",
    "controller_runs_here",
    "inside_an_actor",
    "lean_single_worker_trainer_class",
    "lean_trainer",
    "lean_trainer_class",
    "needs_torch_backend",
    "state_api_reachable",
]

logger = logging.getLogger(__name__)

#: Set to "1" where the Ray cluster has no autoscaler (ncsearch's own local instances): trials then
#: send Ray Train's scaling policy's resource requests nowhere (see the module docstring).
NO_AUTOSCALER_ENV = "NCSEARCH_NO_AUTOSCALER"


def state_api_reachable(timeout_s: float = 2.0) -> bool:
    """Whether this Ray cluster's dashboard answers HTTP, so that Ray's state API (and with it the
    placement-group cleaner's liveness check) works. Connection refused comes back at once."""
    import urllib.request

    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    address = _internal_kv_get(ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    if not address:
        return False
    try:
        with urllib.request.urlopen(f"http://{address.decode()}/api/version", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def needs_torch_backend(scaling_config: Any) -> bool:
    """Whether a run needs Ray's torch backend (`TorchConfig`): a process group to join, or a GPU to
    select. One CPU worker needs neither (see the module docstring)."""
    return scaling_config.num_workers > 1 or bool(scaling_config.use_gpu)


def lean_trainer(train_loop_per_worker: Any, *, scaling_config: Any, **kwargs: Any) -> Any:
    """The trainer of one run (not started): `lean_trainer_class()` where `needs_torch_backend`,
    else `lean_single_worker_trainer_class()`. `kwargs` are the trainers' shared keyword arguments
    (`train_loop_config`, `run_config`)."""
    trainer_class = lean_trainer_class() if needs_torch_backend(scaling_config) else lean_single_worker_trainer_class()
    return trainer_class(train_loop_per_worker, scaling_config=scaling_config, **kwargs)


@functools.cache
def _unused_helpers() -> tuple[type, type] | None:
    """The default callback classes to drop (`DatasetsCallback`, `PlacementGroupCleanerCallback`; see
    the module docstring), or None when a Ray release moved them."""
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError as err:  # a Ray release that moved them: keep Ray's defaults
        logger.warning("Ray Train's default callbacks moved (%s); every trial starts Ray's helper actors", err)
        return None
    return DatasetsCallback, PlacementGroupCleanerCallback


class _WithoutUnusedHelpers:
    """Mixin for a Train V2 trainer whose fit() starts no DatasetManager (and, without a dashboard,
    no PlacementGroupCleaner) actor. Used only where `_unused_helpers()` found both classes."""

    datasets: dict[str, Any]

    def _create_default_callbacks(self) -> list[Any]:
        datasets_callback, cleaner_callback = _unused_helpers()  # type: ignore[misc]
        unused: tuple[type, ...] = () if state_api_reachable() else (cleaner_callback,)
        if not self.datasets:  # ncsearch passes no Ray datasets; if it ever does, Ray's data plumbing stays
            unused = (*unused, datasets_callback)
        defaults = super()._create_default_callbacks()  # type: ignore[misc]
        return [callback for callback in defaults if not isinstance(callback, unused)]


@functools.cache
def _train_controller_class() -> type | None:
    """Ray Train V2's `TrainController`, as its `DataParallelTrainer` imports it, or None when a Ray
    release moved it."""
    from ray.train.v2.api import data_parallel_trainer

    controller_class = getattr(data_parallel_trainer, "TrainController", None)
    if controller_class is None or not hasattr(data_parallel_trainer.DataParallelTrainer, "_initialize_and_run_controller"):
        logger.warning("Ray Train's controller moved; every trial starts a controller actor")
        return None
    return controller_class


def inside_an_actor() -> bool:
    """Whether this process is a Ray actor (a Tune trial's process is one; a driver is not)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def controller_runs_here() -> bool:
    """Whether a lean trainer's `fit()` called from this process runs Ray Train's controller in this
    process (inside an actor, where this Ray release still has the controller class)."""
    return inside_an_actor() and _train_controller_class() is not None


class _ControllerInTheCallingActor:
    """Mixin for a Train V2 trainer whose fit(), called inside a Ray actor, runs Ray Train's
    controller in that actor's process instead of starting a controller actor (see the module
    docstring). Used only where `_train_controller_class()` found it."""

    def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:
        if not controller_runs_here():
            return super()._initialize_and_run_controller(**controller_init_kwargs)  # type: ignore[misc]
        if os.environ.get(NO_AUTOSCALER_ENV) == "1":
            controller_init_kwargs["scaling_policy"] = _without_resource_requests(controller_init_kwargs["scaling_policy"])
        controller = _train_controller_class()(**controller_init_kwargs)  # type: ignore[misc]
        asyncio.run(controller.run())
        return controller.get_result()


@functools.cache
def _fixed_policy_without_requests() -> type | None:
    """Ray Train's `FixedScalingPolicy` with its three resource-request methods made no-ops, or None
    where a Ray release changed them."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    names = ("_send_resource_request", "_maybe_send_resource_request", "_cancel_resource_request")
    if not all(callable(getattr(FixedScalingPolicy, name, None)) for name in names):
        logger.warning("Ray Train's scaling policy changed; every search's first trial starts an AutoscalingCoordinator")
        return None

    def no_request(self: Any) -> None:
        """No autoscaler reads resource requests on this cluster (`NCSEARCH_NO_AUTOSCALER=1`)."""

    return type("FixedScalingPolicyWithoutAutoscaler", (FixedScalingPolicy,),
                {"__doc__": "FixedScalingPolicy for a cluster with no autoscaler (training/_lean_trainer.py).",
                 **{name: no_request for name in names}})


def _without_resource_requests(policy: Any) -> Any:
    """`policy` itself unless it is Ray's plain `FixedScalingPolicy`; then the same policy (same
    scaling config, same decisions) less its resource requests."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    quiet = _fixed_policy_without_requests()
    if quiet is None or type(policy) is not FixedScalingPolicy:
        return policy
    return quiet(policy.scaling_config)


def _lean(trainer_class: type) -> type:
    """`trainer_class` with `_WithoutUnusedHelpers` and `_ControllerInTheCallingActor`, each where
    this Ray release still has what it relies on; `trainer_class` itself where it has neither."""
    mixins = ((() if _unused_helpers() is None else (_WithoutUnusedHelpers,))
              + (() if _train_controller_class() is None else (_ControllerInTheCallingActor,)))
    if not mixins:
        return trainer_class
    return type(f"Lean{trainer_class.__name__}", (*mixins, trainer_class), {
        "__doc__": f"{trainer_class.__name__} less the helper processes a trial does not use (training/_lean_trainer.py).",
    })


@functools.cache
def lean_trainer_class() -> Any:
    """`TorchTrainer`, less the `DatasetsCallback` and, where `state_api_reachable()` is false when
    `fit()` runs, the `PlacementGroupCleanerCallback` (see the module docstring). The cluster is
    asked at `fit()`, not when the trainer is built: building one needs no Ray connection."""
    from ray.train.torch import TorchTrainer

    return _lean(TorchTrainer)


@functools.cache
def lean_single_worker_trainer_class() -> Any:
    """Ray Train V2's `DataParallelTrainer` with its default, empty `BackendConfig`, made lean as
    `lean_trainer_class`: the trainer of a run on one CPU worker, whose controller never imports
    torch (see the module docstring)."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return _lean(DataParallelTrainer)
