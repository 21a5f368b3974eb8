"""Training on Ray Train V2: the per-worker recipe, checkpoints and one trial's TorchTrainer.

Re-exported by `ncsearch.train`, the public module name of the contract.
"""

from ncsearch.training._checkpoint import MODEL_DIR, TrainState, read_meta, read_state, write_checkpoint
from ncsearch.training._data import MLMBatches, chunk_corpus
from ncsearch.training._recipe import TrainingRecipe, train_loop_per_worker
from ncsearch.training._seeding import derive_seed, seed_everything
from ncsearch.training._trial import (
    TrainOutcome,
    build_trainer,
    enable_train_v2,
    failure_reason,
    fit_trial,
    metrics_log,
    read_metrics_log,
)

__all__ = [
    "MODEL_DIR",
    "MLMBatches",
    "TrainOutcome",
    "TrainState",
    "TrainingRecipe",
    "build_trainer",
    "chunk_corpus",
    "derive_seed",
    "enable_train_v2",
    "failure_reason",
    "fit_trial",
    "metrics_log",
    "read_meta",
    "read_metrics_log",
    "read_state",
    "seed_everything",
    "train_loop_per_worker",
    "write_checkpoint",
]
