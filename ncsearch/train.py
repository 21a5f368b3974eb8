"""Training one trial on Ray Train V2 (DESIGN.md §2): `fit_trial` and `train_loop_per_worker`.

The implementation lives in the private modules of `ncsearch.training`; this module is the stable
name the search driver and the CLI import.
"""

from ncsearch.training import (
    TrainOutcome,
    build_trainer,
    fit_runs,
    fit_trial,
    train_loop_per_worker,
)

__all__ = ["TrainOutcome", "build_trainer", "fit_runs", "fit_trial", "train_loop_per_worker"]
