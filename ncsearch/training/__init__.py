"""Training on Ray Train V2: the per-worker recipe, checkpoints and one trial's TorchTrainer.

Re-exported by `ncsearch.train`, the public module name of the contract. The masked-LM toolkit shared
with MLM adaptation, GLUE and the collapse study lives here too: `mlm_mask` (BERT masking) and
`adamw` / `linear_warmup_decay` (the optimizer and its schedule).

The names below are loaded when first used (PEP 562), so that importing one submodule does not
import the others. That matters in a trial's Ray Train controller: it unpickles the run's callbacks
(`_tune_report.TrialReport`, `_callbacks.MetricsLog`), whose modules import Ray Train only. Were this
package to import its recipe eagerly, every controller would import torch (1.2-1.4 s) for nothing
(training/_lean_trainer.py). Using any name of the toolkit loads torch as before; Ray is imported
inside the functions that start trials.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncsearch.training._checkpoint import (
        MODEL_DIR,
        TrainState,
        read_meta,
        read_state,
        write_checkpoint,
    )
    from ncsearch.training._data import (
        MLMBatches,
        StepSampler,
        chunk_corpus,
        special_affixes,
    )
    from ncsearch.training._masking import IGNORE_INDEX, maskable, mlm_mask
    from ncsearch.training._optim import adamw, decay_groups, linear_warmup_decay
    from ncsearch.training._recipe import TrainingRecipe, train_loop_per_worker
    from ncsearch.training._seeding import derive_seed, seed_everything
    from ncsearch.training._trial import (
        TrainOutcome,
        build_trainer,
        enable_train_v2,
        failure_reason,
        fit_runs,
        fit_trial,
        metrics_log,
        read_metrics_log,
    )

#: Each public name and the submodule that defines it.
_SOURCES: dict[str, str] = {
    **dict.fromkeys(("MODEL_DIR", "TrainState", "read_meta", "read_state", "write_checkpoint"), "_checkpoint"),
    **dict.fromkeys(("MLMBatches", "StepSampler", "chunk_corpus", "special_affixes"), "_data"),
    **dict.fromkeys(("IGNORE_INDEX", "maskable", "mlm_mask"), "_masking"),
    **dict.fromkeys(("adamw", "decay_groups", "linear_warmup_decay"), "_optim"),
    **dict.fromkeys(("TrainingRecipe", "train_loop_per_worker"), "_recipe"),
    **dict.fromkeys(("derive_seed", "seed_everything"), "_seeding"),
    **dict.fromkeys(("TrainOutcome", "build_trainer", "enable_train_v2", "failure_reason", "fit_runs",
                     "fit_trial", "metrics_log", "read_metrics_log"), "_trial"),
}

__all__ = [
    "IGNORE_INDEX",
    "MODEL_DIR",
    "MLMBatches",
    "StepSampler",
    "TrainOutcome",
    "TrainState",
    "TrainingRecipe",
    "adamw",
    "build_trainer",
    "chunk_corpus",
    "decay_groups",
    "derive_seed",
    "enable_train_v2",
    "failure_reason",
    "fit_runs",
    "fit_trial",
    "linear_warmup_decay",
    "maskable",
    "metrics_log",
    "mlm_mask",
    "read_meta",
    "read_metrics_log",
    "read_state",
    "seed_everything",
    "special_affixes",
    "train_loop_per_worker",
    "write_checkpoint",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
