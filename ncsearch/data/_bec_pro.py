"""BEC-Pro (Bartl et al. 2020): templated sentences about professions, for gender association scores."""

from __future__ import annotations

from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["BEC_PRO_COLUMNS", "load_bec_pro"]

BEC_PRO_COLUMNS = (
    "Sentence",
    "Sent_TM",
    "Sent_AM",
    "Sent_TAM",
    "Template",
    "Person",
    "Gender",
    "Profession",
    "Prof_Gender",
)


def load_bec_pro(root: str | Path):
    """`bec_pro/BEC-Pro_EN.tsv` as a DataFrame with the published columns (the index column dropped)."""
    import pandas as pd

    path = require_file(root, "bec_pro/BEC-Pro_EN.tsv")
    frame = pd.read_csv(path, sep="\t", index_col=0, dtype=str, keep_default_na=False)
    missing = [c for c in BEC_PRO_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{str(path)!r} lacks column(s) {missing!r}")
    return frame.reset_index(drop=True)
