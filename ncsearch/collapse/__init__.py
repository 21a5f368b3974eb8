"""Neural collapse on a vocabulary subset: streaming class statistics, the (U)NC3 regularizer, NC1-NC4.

DESIGN.md §4 defines every quantity. `NC3Regularizer` is what training adds to the loss,
`select_pairs` picks the (feature, label) pairs it sees, and `ClassStatistics` / `collapse_metrics` /
`bootstrap_intervals` are the analysis behind `ncsearch collapse` (run by `collapse_study`).
"""

from ncsearch.collapse._lookup import VocabIndex
from ncsearch.collapse._metrics import (
    METRIC_NAMES,
    ClassStatistics,
    ClassSummary,
    bootstrap_intervals,
    collapse_metrics,
)
from ncsearch.collapse._pairs import pair_positions, select_pairs
from ncsearch.collapse._regularizer import KINDS, MEANS, NC3Regularizer, cosine_rows
from ncsearch.collapse._study import StudyResult, collapse_study, split_sentences

__all__ = [
    "KINDS",
    "MEANS",
    "METRIC_NAMES",
    "ClassStatistics",
    "ClassSummary",
    "NC3Regularizer",
    "StudyResult",
    "VocabIndex",
    "bootstrap_intervals",
    "collapse_metrics",
    "collapse_study",
    "cosine_rows",
    "pair_positions",
    "select_pairs",
    "split_sentences",
]
