"""Benchmark and corpus files: where they live, how to fetch and verify them, and typed loaders.

Loaders read only local files (never the network); a missing file raises `DataError` naming the path
and the `ncsearch data pull` command that fetches it. Nothing is cached globally: callers keep what
they load. pandas is imported inside the loaders that return frames, so importing this package stays
cheap.
"""

from ncsearch.data._bec_pro import BEC_PRO_COLUMNS, load_bec_pro
from ncsearch.data._crows_pairs import CrowsPair, load_crows_pairs
from ncsearch.data._entailment import ENTAILMENT_CORPORA, EntailmentPair, load_entailment_pairs
from ncsearch.data._fetch import DatasetStatus, FileStatus, check, file_sha256, pull
from ncsearch.data._gap import GAP_SPLITS, load_gap_corpus
from ncsearch.data._glue import GLUE_SPLITS, GLUE_TASKS, load_glue
from ncsearch.data._manifest import DATASETS, MANIFEST, ManifestEntry, manifest_entries
from ncsearch.data._root import default_data_dir, require_file, resolve_data_root
from ncsearch.data._seat import SeatSet, SeatTest, load_seat, seat_tests
from ncsearch.data._stereoset import GOLD_LABELS, StereoSetItem, load_stereoset
from ncsearch.data._winobias import WinoBiasSentence, load_winobias, parse_winobias_line
from ncsearch.data._words import GenderWords, load_attribute_words, load_gender_words

__all__ = [
    "DATASETS",
    "MANIFEST",
    "DatasetStatus",
    "FileStatus",
    "ManifestEntry",
    "check",
    "file_sha256",
    "manifest_entries",
    "pull",
    "BEC_PRO_COLUMNS",
    "GAP_SPLITS",
    "GLUE_SPLITS",
    "GLUE_TASKS",
    "GOLD_LABELS",
    "CrowsPair",
    "ENTAILMENT_CORPORA",
    "EntailmentPair",
    "GenderWords",
    "SeatSet",
    "SeatTest",
    "StereoSetItem",
    "WinoBiasSentence",
    "default_data_dir",
    "load_attribute_words",
    "load_bec_pro",
    "load_crows_pairs",
    "load_entailment_pairs",
    "load_gap_corpus",
    "load_gender_words",
    "load_glue",
    "load_seat",
    "load_stereoset",
    "load_winobias",
    "parse_winobias_line",
    "require_file",
    "resolve_data_root",
    "seat_tests",
]
