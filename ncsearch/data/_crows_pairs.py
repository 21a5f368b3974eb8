"""CrowS-Pairs (Nangia et al. 2020): minimal sentence pairs, the more and less stereotyping one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["CrowsPair", "load_crows_pairs"]

_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


@dataclass
class CrowsPair:
    """One pair. `stereo_antistereo` says whether `sent_more` is the stereotype ("stereo") or violates it.
    `id` is the 0-based row of the pair in the file (-1 for pairs built by hand): the file has no ids,
    and two of its rows are the same pair, so the text alone does not identify an example."""

    sent_more: str
    sent_less: str
    stereo_antistereo: str
    bias_type: str
    id: int = -1


def load_crows_pairs(root: str | Path) -> list[CrowsPair]:
    """All 1,508 pairs of `crows_pairs/crows_pairs_anonymized.csv`, in file order."""
    import pandas as pd

    path = require_file(root, "crows_pairs/crows_pairs_anonymized.csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{str(path)!r} lacks column(s) {missing!r}")
    bad = sorted(set(frame["stereo_antistereo"]) - {"stereo", "antistereo"})
    if bad:
        raise DataError(f"{str(path)!r}: stereo_antistereo must be 'stereo' or 'antistereo', got {bad[0]!r}")
    return [CrowsPair(*row, id=i) for i, row in enumerate(frame[list(_COLUMNS)].itertuples(index=False, name=None))]
