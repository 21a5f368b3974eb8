"""A Ray Train callback that keeps every report of a run as one JSON line.

Ray Train V2 keeps only the last metrics in `Result.metrics` (and one row per checkpoint in
`metrics_dataframe`); `ncsearch train` and the tests want the whole curve. The callback runs in the
Train controller process (on the driver's node), so `path` must be a local path of that node.

Import this module only after `enable_train_v2()`: it subclasses `ray.train.UserCallback`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ray.train import UserCallback

__all__ = ["MetricsLog"]


class MetricsLog(UserCallback):
    """Appends rank 0's metrics of each `ray.train.report` (plus the checkpoint path) to `path`."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        row = {k: _plain(v) for k, v in (metrics[0] if metrics else {}).items()}
        if checkpoint is not None:
            row["checkpoint"] = checkpoint.path
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; read back with float()
    return value
