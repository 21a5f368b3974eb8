"""A TorchTrainer without the helper processes a trial does not use.

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

The callbacks are found by their class, from Ray's private modules: if a Ray release moves them,
the plain TorchTrainer is used, and tests/test_train.py's lean-trainer tests fail, so the loss is
noticed.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

__all__ = ["lean_trainer_class", "state_api_reachable"]

logger = logging.getLogger(__name__)


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


@functools.cache
def lean_trainer_class() -> Any:
    """`TorchTrainer`, less the `DatasetsCallback` and, where `state_api_reachable()` is false when
    `fit()` runs, the `PlacementGroupCleanerCallback` (see the module docstring). The cluster is
    asked at `fit()`, not when the trainer is built: building one needs no Ray connection."""
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    except ImportError as err:  # a Ray release that moved them: keep Ray's defaults
        logger.warning("Ray Train's default callbacks moved (%s); every trial starts Ray's helper actors", err)
        return TorchTrainer

    class LeanTorchTrainer(TorchTrainer):
        """TorchTrainer whose fit() starts no DatasetManager (and, without a dashboard, no
        PlacementGroupCleaner) actor."""

        def _create_default_callbacks(self) -> list[Any]:
            unused: tuple[type, ...] = () if state_api_reachable() else (PlacementGroupCleanerCallback,)
            if not self.datasets:  # ncsearch passes no Ray datasets; if it ever does, Ray's data plumbing stays
                unused = (*unused, DatasetsCallback)
            return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, unused)]

    return LeanTorchTrainer
