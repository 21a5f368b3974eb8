"""One evaluated checkpoint on disk: its metrics, intervals, identity and per-example tables.

A trial's workers write this folder into the trial's final checkpoint (`eval/`, training/_evaluate.py);
the search's tracking callback makes it `RunLayout.trial_eval_dir` on the driver's node (a link, or a
copy when the checkpoint is in remote storage: `local_eval_dir`) and logs it to the trial's MLflow run
as the artifact folder `eval/`; `ncsearch compare` and the search analysis read it back from either place. Keeping
the per-example tables is what lets two checkpoints be compared example by example, long after the
models are gone.

    metrics.json      {metric: value}
    intervals.json    {metric: [low, high]}  (95% percentile bootstrap over each benchmark's unit)
    identity.json     what was evaluated: role, group, replicate, seed, searched params, tokenizer, ...
    <benchmark>/<table>.json   one per-example table each (pandas "records" orient)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ncsearch._atomic import atomic_write
from ncsearch.errors import UserInputError

__all__ = ["EvalRecord", "local_eval_dir", "read_eval", "write_eval"]

METRICS_FILE = "metrics.json"
INTERVALS_FILE = "intervals.json"
IDENTITY_FILE = "identity.json"


def _atomic_json(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, indent=1, sort_keys=True, default=str))


def write_eval(folder: str | Path, *, metrics: Mapping[str, float], intervals: Mapping[str, tuple[float, float]],
               details: Mapping[str, pd.DataFrame], identity: Mapping[str, Any]) -> Path:
    """Write one evaluated checkpoint into `folder` (created); `details` keyed "<benchmark>/<table>"."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for key, frame in details.items():
        path = out / (key.replace("..", "_") + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_json(path, orient="records", indent=1, default_handler=str)
    _atomic_json(out / INTERVALS_FILE, {k: list(v) for k, v in intervals.items()})
    _atomic_json(out / IDENTITY_FILE, dict(identity))
    _atomic_json(out / METRICS_FILE, dict(metrics))  # last: its presence marks a complete folder
    return out


@dataclass
class EvalRecord:
    """An evaluated checkpoint read back; per-example tables load on first use."""

    folder: Path
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    identity: dict[str, Any]
    _details: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict, repr=False)

    @property
    def benchmarks(self) -> list[str]:
        return sorted({key.split("/", 1)[0] for key in self.metrics} - {"train", "time", "suite"})

    def details(self, benchmark: str) -> dict[str, pd.DataFrame]:
        """{table name: per-example table} of one benchmark."""
        if benchmark not in self._details:
            folder = self.folder / benchmark
            tables = {}
            if folder.is_dir():
                for path in sorted(folder.glob("*.json")):
                    tables[path.stem] = pd.read_json(path, orient="records", dtype=False)
            self._details[benchmark] = tables
        return self._details[benchmark]


def read_eval(folder: str | Path) -> EvalRecord:
    """The evaluated checkpoint in `folder`; a folder without metrics.json is not one (exit 2)."""
    root = Path(folder)
    metrics_path = root / METRICS_FILE
    if not metrics_path.is_file():
        raise UserInputError(f"{root}: no evaluation here (no {METRICS_FILE})")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    spans_path, identity_path = root / INTERVALS_FILE, root / IDENTITY_FILE
    spans = json.loads(spans_path.read_text(encoding="utf-8")) if spans_path.is_file() else {}
    identity = json.loads(identity_path.read_text(encoding="utf-8")) if identity_path.is_file() else {}
    return EvalRecord(root, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                      {k: (float(v[0]), float(v[1])) for k, v in spans.items()}, identity)


def local_eval_dir(location: str | Path, folder: str | Path) -> Path:
    """The evaluation folder at `location` (a trial's, in its final checkpoint) made available as
    `folder` on this machine, which is returned: a symbolic link when `location` is a local or mounted
    path, else (an s3:// or gs:// URI) a copy made through pyarrow once (a complete copy holds
    metrics.json, written last)."""
    import os

    target = Path(folder)
    text = str(location)
    if "://" not in text:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(text, target.parent), target)
        return target
    if not (target / METRICS_FILE).is_file():
        from pyarrow import fs

        source, path = fs.FileSystem.from_uri(text)
        target.mkdir(parents=True, exist_ok=True)
        fs.copy_files(path, str(target), source_filesystem=source, destination_filesystem=fs.LocalFileSystem())
    return target
