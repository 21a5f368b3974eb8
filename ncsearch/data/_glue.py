"""GLUE tasks (Wang et al. 2019) normalized to sentence1 / sentence2 / label."""

from __future__ import annotations

import csv
from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["GLUE_SPLITS", "GLUE_TASKS", "load_glue"]

GLUE_TASKS = ("CoLA", "MRPC", "RTE", "STS-B", "WNLI")
GLUE_SPLITS = ("train", "dev")
# RTE labels as in the HF `glue` dataset: 0 = entailment, 1 = not_entailment.
_RTE_LABELS = {"entailment": 0, "not_entailment": 1}


def _task_name(task: str) -> str:
    for name in GLUE_TASKS:
        if task.lower().replace("-", "") == name.lower().replace("-", ""):
            return name
    raise DataError(f"unknown GLUE task {task!r}; choose from {', '.join(GLUE_TASKS)}")


def load_glue(root: str | Path, task: str, split: str):
    """One GLUE task split as a DataFrame with columns sentence1, sentence2, label.

    sentence2 is None for single-sentence tasks (CoLA); label is int (float for STS-B's similarity
    score). Task names match case-insensitively ("sts-b", "stsb"). Files are read without quote
    handling because GLUE sentences contain bare quote characters.
    """
    import pandas as pd

    name = _task_name(task)
    if split not in GLUE_SPLITS:
        raise DataError(f"unknown GLUE split {split!r}; choose train or dev")
    path = require_file(root, f"glue/{name}/{split}.tsv")
    read = dict(sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    try:
        if name == "CoLA":
            # No header: source, label, original annotation, sentence.
            raw = pd.read_csv(path, header=None, names=["source", "label", "annotation", "sentence"], **read)
            frame = pd.DataFrame({"sentence1": raw["sentence"], "sentence2": None, "label": raw["label"].astype(int)})
        elif name == "MRPC":
            raw = pd.read_csv(path, **read)
            frame = pd.DataFrame(
                {"sentence1": raw["#1 String"], "sentence2": raw["#2 String"], "label": raw["Quality"].astype(int)}
            )
        elif name == "STS-B":
            raw = pd.read_csv(path, **read)
            frame = pd.DataFrame(
                {"sentence1": raw["sentence1"], "sentence2": raw["sentence2"], "label": raw["score"].astype(float)}
            )
        else:  # RTE, WNLI
            raw = pd.read_csv(path, **read)
            labels = raw["label"].map(_RTE_LABELS) if name == "RTE" else raw["label"].astype(int)
            if labels.isna().any():
                bad = raw["label"][labels.isna()].iloc[0]
                raise DataError(f"{str(path)!r}: unexpected label {bad!r}")
            frame = pd.DataFrame({"sentence1": raw["sentence1"], "sentence2": raw["sentence2"], "label": labels.astype(int)})
    except (KeyError, ValueError) as err:
        raise DataError(f"{str(path)!r} is not in the GLUE {name} format: {err}") from None
    frame["sentence2"] = frame["sentence2"].astype(object).where(frame["sentence2"].notna(), None)
    return frame.reset_index(drop=True)
