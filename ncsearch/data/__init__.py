"""Benchmark and corpus files: where they live, how to fetch and verify them, and typed loaders.

Loaders read only local files (never the network); a missing file raises `DataError` naming the path
and the `ncsearch data pull` command that fetches it. Nothing is cached globally: callers keep what
they load.
"""

from ncsearch.data._gap import GAP_SPLITS, load_gap_corpus
from ncsearch.data._root import default_data_dir, require_file, resolve_data_root
from ncsearch.data._words import GenderWords, load_attribute_words, load_gender_words

__all__ = [
    "GAP_SPLITS",
    "GenderWords",
    "default_data_dir",
    "load_attribute_words",
    "load_gap_corpus",
    "load_gender_words",
    "require_file",
    "resolve_data_root",
]
