"""The corpus tokenization cache: the ids a trial reads back are the tokenizer's own, keyed by both."""

from __future__ import annotations

import copy

import pytest

from ncsearch._tokenized import encode_corpus

TEXTS = ["The nurse said she would come.", "He is an engineer; his plans were late.", "", "x " * 300]


def _plain(tokenizer, texts):
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path))
    return tmp_path / "tokenized"


def test_cached_ids_equal_the_tokenizers(minilm_tokenizer, cache, monkeypatch):
    first = encode_corpus(TEXTS, minilm_tokenizer)
    assert first == _plain(minilm_tokenizer, TEXTS) and len(first[3]) == 300  # no truncation
    assert len(list(cache.glob("*.npz"))) == 1

    class Refusing:  # a second call must not tokenize: it reads the file
        def __getattr__(self, name):
            return getattr(minilm_tokenizer, name)

        def __len__(self):  # a dunder: not found through __getattr__
            return len(minilm_tokenizer)

        def __call__(self, *args, **kwargs):
            raise AssertionError("tokenized again")

    assert encode_corpus(TEXTS, Refusing()) == first


def test_other_text_or_tokenizer_is_another_entry(minilm_tokenizer, cache):
    encode_corpus(TEXTS, minilm_tokenizer)
    encode_corpus(TEXTS[:2], minilm_tokenizer)
    other = copy.deepcopy(minilm_tokenizer)
    other.add_tokens(["nurse-engineer"])
    assert encode_corpus(["a nurse-engineer"], other) == _plain(other, ["a nurse-engineer"])
    assert len(list(cache.glob("*.npz"))) == 3


def test_damaged_cache_file_is_replaced(minilm_tokenizer, cache):
    encode_corpus(TEXTS, minilm_tokenizer)
    (path,) = cache.glob("*.npz")
    path.write_bytes(b"not a numpy file")
    assert encode_corpus(TEXTS, minilm_tokenizer) == _plain(minilm_tokenizer, TEXTS)
    assert path.read_bytes()[:2] == b"PK"  # rewritten as an npz (zip) archive
