"""Data-root resolution, the GAP corpus and the gender word lists (the parts other modules build on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ncsearch.data import load_gap_corpus, load_gender_words, resolve_data_root
from ncsearch.errors import DataError


def test_explicit_root_wins_over_env(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("NCSEARCH_DATA_DIR", str(data_root))
    assert resolve_data_root(tmp_path) == tmp_path.resolve()


def test_env_root_used_when_no_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("NCSEARCH_DATA_DIR", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()


def test_named_root_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        resolve_data_root(missing)
    monkeypatch.setenv("NCSEARCH_DATA_DIR", str(missing))
    with pytest.raises(DataError, match="NCSEARCH_DATA_DIR"):
        resolve_data_root()


def test_cache_then_mirror_fallback(tmp_path, monkeypatch, data_root):
    monkeypatch.delenv("NCSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    # Empty cache: the mirror beside the checkout is found.
    assert resolve_data_root() == data_root.resolve()
    # A cache that holds files wins over the mirror.
    words = tmp_path / "cache" / "data" / "words"
    words.mkdir(parents=True)
    (words / "male.txt").write_text("he\n")
    assert resolve_data_root() == (tmp_path / "cache" / "data").resolve()


def test_mirror_found_from_cwd_too(tmp_path, monkeypatch, data_root):
    # From a cwd inside the checkout the walk-up finds ../shared/data as well.
    monkeypatch.delenv("NCSEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(Path(__file__).parent)
    assert resolve_data_root() == data_root.resolve()


def test_gap_corpus_counts(data_root):
    dev = load_gap_corpus(data_root, ("development",))
    test = load_gap_corpus(data_root, ("test",))
    val = load_gap_corpus(data_root, ("validation",))
    assert (len(dev), len(test), len(val)) == (2000, 2000, 454)
    assert load_gap_corpus(data_root) == dev + test
    assert dev[0].startswith("Zoe Telford -- played the police officer girlfriend of Simon")


def test_gap_flipped_is_gender_swapped(data_root):
    flipped = load_gap_corpus(data_root, ("development", "test", "validation"), flipped=True)
    assert len(flipped) == 4454
    assert len(load_gap_corpus(data_root, flipped=True)) == 4000
    assert flipped[0].startswith("Karl Telford -- played the police officer boyfriend of Estelle")


def test_gap_unknown_split(data_root):
    with pytest.raises(DataError, match="'train'"):
        load_gap_corpus(data_root, ("train",))


def test_gender_words(data_root):
    words = load_gender_words(data_root)
    assert (len(words.male), len(words.female), len(words.neutral), len(words.pairs)) == (230, 230, 209, 57)
    assert words.male[0] == "countryman" and words.female[0] == "countrywoman"
    assert words.pairs[0] == ("actor", "actress")
    assert ("boy", "girl") in words.pairs


def test_missing_file_names_path_and_pull(tmp_path):
    with pytest.raises(DataError, match=r"words/male\.txt.*ncsearch data pull"):
        load_gender_words(tmp_path)
    with pytest.raises(DataError, match=r"gap-development\.tsv"):
        load_gap_corpus(tmp_path)
