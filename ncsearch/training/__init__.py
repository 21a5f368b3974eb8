"""Training on Ray Train V2: the per-worker recipe, checkpoints and one trial's TorchTrainer.

Re-exported by `ncsearch.train`, the public module name of the contract. The masked-LM toolkit shared
with MLM adaptation, GLUE and the collapse study lives here too: `mlm_mask` (BERT masking) and
`adamw` / `linear_warmup_decay` (the optimizer and its schedule). Importing this package loads torch
but not Ray (Ray is imported inside the functions that start trials).
"""

from ncsearch.training._checkpoint import MODEL_DIR, TrainState, read_meta, read_state, write_checkpoint
from ncsearch.training._data import MLMBatches, StepSampler, chunk_corpus, special_affixes
from ncsearch.training._masking import IGNORE_INDEX, maskable, mlm_mask
from ncsearch.training._optim import adamw, decay_groups, linear_warmup_decay
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
