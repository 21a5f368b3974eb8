"""Vocabulary subsets on the real MiniLM WordPiece vocabulary and the real word lists."""

from __future__ import annotations

from collections import Counter

import pytest

from ncsearch.errors import ConfigError
from ncsearch.vocab import build_vocab, word_pieces


@pytest.fixture(scope="module")
def gap_corpus(data_root):
    from ncsearch.data import load_gap_corpus

    return load_gap_corpus(data_root, ("development", "test"))


@pytest.fixture(scope="module")
def gender_single(minilm_tokenizer, data_root):
    return build_vocab(minilm_tokenizer, source="gender", data_root=data_root)


def _id(tokenizer, token: str) -> int:
    return tokenizer.convert_tokens_to_ids(token)


def test_single_policy_drops_multi_piece_words(minilm_tokenizer, gender_single):
    assert word_pieces(minilm_tokenizer, "countrywoman") == [_id(minilm_tokenizer, "country"), _id(minilm_tokenizer, "##woman")]
    assert "countrywoman" in gender_single.dropped
    assert "countrywoman" not in gender_single.words
    assert _id(minilm_tokenizer, "country") not in gender_single.token_ids  # not mapped to its first piece
    for word, token_id in zip(gender_single.words, gender_single.token_ids, strict=True):
        assert word_pieces(minilm_tokenizer, word) == [token_id]
    assert {"he", "she", "mother", "father"} <= set(gender_single.words)
    # 426 distinct words in male.txt + female.txt + the 57 gender pairs; 213 are single tokens in MiniLM
    assert len(gender_single.words) + len(gender_single.dropped) == 426
    assert len(gender_single.token_ids) == 213
    assert len(set(gender_single.token_ids)) == len(gender_single.token_ids)


def test_first_and_all_policies_map_pieces(minilm_tokenizer, data_root):
    first = build_vocab(minilm_tokenizer, source="gender", policy="first", data_root=data_root)
    every = build_vocab(minilm_tokenizer, source="gender", policy="all", data_root=data_root)
    country, woman = _id(minilm_tokenizer, "country"), _id(minilm_tokenizer, "##woman")
    assert "countrywoman" in first.words and not first.dropped
    assert country in first.token_ids and woman not in first.token_ids
    assert {country, woman} <= set(every.token_ids)
    assert set(first.token_ids) < set(every.token_ids)


def test_file_source_lowercases_for_uncased_tokenizer_and_deduplicates(minilm_tokenizer, tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# pronouns\nHe\nshe\nSHE\n\nhe\nnonexistentwordzz\n", encoding="utf-8")
    subset = build_vocab(minilm_tokenizer, source="file", file=path)
    assert subset.words == ["he", "she"]
    assert subset.token_ids == [_id(minilm_tokenizer, "he"), _id(minilm_tokenizer, "she")]
    assert subset.dropped == ["nonexistentwordzz"]
    assert subset.source == "file"


def test_size_keeps_the_most_frequent_in_the_corpus(minilm_tokenizer, data_root, gap_corpus, gender_single):
    top = build_vocab(minilm_tokenizer, source="gender", size=5, corpus=gap_corpus, data_root=data_root)
    counts = Counter(i for ids in minilm_tokenizer(gap_corpus, add_special_tokens=False)["input_ids"] for i in ids)
    expected = sorted(gender_single.token_ids, key=lambda i: -counts[i])[:5]
    assert top.token_ids == expected
    assert {"he", "she", "his", "her"} <= set(top.words)
    assert top.counts == {i: counts[i] for i in expected}
    # without a corpus: list order
    first5 = build_vocab(minilm_tokenizer, source="gender", size=5, data_root=data_root)
    assert first5.token_ids == gender_single.token_ids[:5]


def test_random_is_seeded_and_clean(minilm_tokenizer, data_root, gender_single):
    a = build_vocab(minilm_tokenizer, source="random", seed=3, data_root=data_root)
    b = build_vocab(minilm_tokenizer, source="random", seed=3, data_root=data_root)
    c = build_vocab(minilm_tokenizer, source="random", seed=4, data_root=data_root)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert len(a.token_ids) == len(gender_single.token_ids) == 213
    assert len(set(a.token_ids)) == 213
    assert not set(a.token_ids) & set(minilm_tokenizer.all_special_ids)
    assert not set(a.token_ids) & set(gender_single.token_ids)
    tokens = minilm_tokenizer.convert_ids_to_tokens(a.token_ids)
    assert not [t for t in tokens if t.startswith("##") or t.startswith("[")]
    assert all(t.isalpha() for t in tokens)
    sized = build_vocab(minilm_tokenizer, source="random", size=17, seed=3, data_root=data_root)
    assert len(sized.token_ids) == 17


def test_random_frequency_matched_follows_the_gender_profile(minilm_tokenizer, data_root, gap_corpus, gender_single):
    import math

    matched = build_vocab(
        minilm_tokenizer, source="random", frequency_matched=True, corpus=gap_corpus, seed=0, data_root=data_root
    )
    counts = Counter(i for ids in minilm_tokenizer(gap_corpus, add_special_tokens=False)["input_ids"] for i in ids)

    def profile(ids):
        return Counter(int(math.log2(counts[i] + 1)) for i in ids)

    gender_profile, random_profile = profile(gender_single.token_ids), profile(matched.token_ids)
    # same size, and the same log2-frequency histogram except where a bin ran out of candidates
    assert len(matched.token_ids) == len(gender_single.token_ids)
    differing = sum((gender_profile - random_profile).values())
    assert differing <= 3, (gender_profile, random_profile)
    plain = build_vocab(minilm_tokenizer, source="random", seed=0, data_root=data_root)
    assert sum((gender_profile - profile(plain.token_ids)).values()) > 50  # unmatched draws differ a lot


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"source": "genders"}, "'genders'"),
        ({"source": "gender", "policy": "last"}, "'last'"),
        ({"source": "gender", "size": 0}, "0"),
        ({"source": "file"}, "nc3.vocab.file"),
        ({"source": "file", "file": "/no/such/words.txt"}, "'/no/such/words.txt'"),
    ],
)
def test_bad_input_is_a_one_line_config_error(minilm_tokenizer, data_root, kwargs, needle):
    with pytest.raises(ConfigError) as err:
        build_vocab(minilm_tokenizer, data_root=data_root, **kwargs)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
