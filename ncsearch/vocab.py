"""Vocabulary subsets V for the NC3 regularizer: which token ids count as "gender words" (or a control).

A word counts under policy `single` only when the tokenizer keeps it whole (one token). The NC3 paper's
index files instead map multi-piece words to their first piece ("countrywoman" -> "country"), which
regularizes a neutral token as if it were gendered; `first` reproduces that on request and `all` takes
every piece. Words are tokenized with a leading space, as they appear inside a sentence, so byte-level
BPE (RoBERTa) and SentencePiece vocabularies give their word-initial form.

`random` is the control set: seeded, the size of the gender set under the same policy (or `size`),
whole-word alphabetic tokens only (no special tokens, no `[unused]` slots, no `##` continuation pieces,
none of the gender ids), optionally matched to the gender set's frequency profile in a corpus.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ncsearch.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerBase

__all__ = ["POLICIES", "SOURCES", "VocabSubset", "build_vocab", "word_pieces"]

SOURCES = ("gender", "random", "file")
POLICIES = ("single", "first", "all")
_BRACKETED = re.compile(r"^\[.*\]$|^<.*>$")
_WORD_START = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark word-initial pieces


@dataclass
class VocabSubset:
    """Token ids of the subset and the words behind them.

    `words` are the source words kept, in order; under policy `single` they align one to one with
    `token_ids`. `dropped` are the source words the policy could not represent (e.g. multi-piece words
    under `single`, or words that map to the unknown token). `token_ids` are unique.
    """

    token_ids: list[int]
    words: list[str]
    dropped: list[str]
    source: str
    policy: str = "single"
    counts: dict[int, int] = field(default_factory=dict, repr=False)


def build_vocab(
    tokenizer: PreTrainedTokenizerBase,
    *,
    source: str,
    size: int | None = None,
    policy: str = "single",
    file: str | Path | None = None,
    seed: int = 0,
    frequency_matched: bool = False,
    corpus: list[str] | None = None,
    data_root: str | Path | None = None,
) -> VocabSubset:
    """The subset V for one run.

    `size: k` keeps the k most frequent token ids in `corpus` (list order when no corpus is given).
    `frequency_matched` (random only) needs a corpus; without one it uses GAP development+test from
    `data_root`. `data_root` also locates the gender word lists.
    """
    if source not in SOURCES:
        raise ConfigError(f"nc3.vocab.source must be one of {', '.join(SOURCES)}, but got {source!r}")
    if policy not in POLICIES:
        raise ConfigError(f"nc3.vocab.policy must be one of {', '.join(POLICIES)}, but got {policy!r}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ConfigError(f"nc3.vocab.size must be a positive integer, but got {size!r}")
    if source == "file":
        if file is None:
            raise ConfigError("nc3.vocab.source 'file' needs nc3.vocab.file (a file with one word a line)")
        return _from_words(tokenizer, _read_word_file(file), "file", policy, size, corpus)
    if source == "gender":
        return _from_words(tokenizer, _gender_words(data_root), "gender", policy, size, corpus)
    return _random(tokenizer, policy, size, seed, frequency_matched, corpus, data_root)


def word_pieces(tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    """The token ids of `word` as it appears inside a sentence (after a space)."""
    return list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])


# --- word-list sources ---------------------------------------------------------------------------

def _from_words(
    tokenizer: PreTrainedTokenizerBase,
    raw_words: Iterable[str],
    source: str,
    policy: str,
    size: int | None,
    corpus: list[str] | None,
) -> VocabSubset:
    words = _normalise(tokenizer, raw_words)
    special = set(tokenizer.all_special_ids)
    kept: list[str] = []
    dropped: list[str] = []
    ids_of: dict[str, list[int]] = {}
    for word in words:
        pieces = word_pieces(tokenizer, word)
        if not pieces or any(p in special for p in pieces) or (policy == "single" and len(pieces) != 1):
            dropped.append(word)
            continue
        ids_of[word] = pieces[:1] if policy in ("single", "first") else pieces
        kept.append(word)
    token_ids = list(dict.fromkeys(i for w in kept for i in ids_of[w]))
    counts: dict[int, int] = {}
    if size is not None:
        if corpus is not None:
            counts = _token_counts(tokenizer, corpus, token_ids)
            # stable sort: ties keep list order
            token_ids = sorted(token_ids, key=lambda i: -counts.get(i, 0))
        token_ids = token_ids[:size]
        chosen = set(token_ids)
        counts = {i: counts[i] for i in token_ids if i in counts}
        kept = [w for w in kept if any(i in chosen for i in ids_of[w])]
    return VocabSubset(token_ids=token_ids, words=kept, dropped=dropped, source=source, policy=policy, counts=counts)


def _normalise(tokenizer: PreTrainedTokenizerBase, words: Iterable[str]) -> list[str]:
    """Strip, turn word2vec-style phrases ("ballet_dancer") into text, lowercase for uncased
    tokenizers (their vocabulary holds no capitals), and de-duplicate keeping the first occurrence."""
    lower = _is_uncased(tokenizer)
    out: dict[str, None] = {}
    for raw in words:
        word = raw.strip().replace("_", " ")
        if lower:
            word = word.lower()
        if word:
            out.setdefault(word)
    return list(out)


def _is_uncased(tokenizer: PreTrainedTokenizerBase) -> bool:
    return word_pieces(tokenizer, "He Mother") == word_pieces(tokenizer, "he mother")


def _gender_words(data_root: str | Path | None) -> list[str]:
    """Male and female ADEPT lists, then the bias-bench gender pairs, each interleaved male/female so
    that list order (used by `size` without a corpus) stays balanced between the two genders."""
    from ncsearch.data import load_gender_words, resolve_data_root

    lists = load_gender_words(resolve_data_root(data_root))
    words: list[str] = []
    for male, female in zip(lists.male, lists.female, strict=False):
        words += [male, female]
    longer = lists.male if len(lists.male) > len(lists.female) else lists.female
    words += longer[min(len(lists.male), len(lists.female)) :]
    for male, female in lists.pairs:
        words += [male, female]
    return words


def _read_word_file(file: str | Path) -> list[str]:
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(f"nc3.vocab.file {str(file)!r} does not exist")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w and not w.startswith("#")]
    if not words:
        raise ConfigError(f"nc3.vocab.file {str(file)!r} holds no words (one word a line expected)")
    return words


def _token_counts(tokenizer: PreTrainedTokenizerBase, corpus: Sequence[str], ids: Iterable[int] | None = None) -> dict[int, int]:
    from ncsearch._tokenized import encode_corpus

    counts: Counter[int] = Counter()
    for encoded in encode_corpus(corpus, tokenizer):  # the same cached ids as the training chunks
        counts.update(encoded)
    if ids is None:
        return dict(counts)
    return {i: counts.get(i, 0) for i in ids}


# --- random control ------------------------------------------------------------------------------

def _random(
    tokenizer: PreTrainedTokenizerBase,
    policy: str,
    size: int | None,
    seed: int,
    frequency_matched: bool,
    corpus: list[str] | None,
    data_root: str | Path | None,
) -> VocabSubset:
    if frequency_matched and corpus is None:
        from ncsearch.data import load_gap_corpus, resolve_data_root

        corpus = load_gap_corpus(resolve_data_root(data_root), ("development", "test"))
    reference = _from_words(tokenizer, _gender_words(data_root), "gender", policy, size, corpus)
    candidates = _candidates(tokenizer, exclude=set(reference.token_ids))
    n = size if size is not None else len(reference.token_ids)
    if n > len(candidates):
        raise ConfigError(f"nc3.vocab.size {n} exceeds the {len(candidates)} eligible random tokens")
    rng = random.Random(seed)
    if frequency_matched:
        counts = _token_counts(tokenizer, corpus or [])
        targets = [counts.get(i, 0) for i in reference.token_ids][:n]
        while len(targets) < n:  # size larger than the gender set: cycle through its profile
            targets.append(targets[len(targets) % max(1, len(reference.token_ids))] if targets else 0)
        token_ids = _match_frequencies(candidates, counts, targets, rng)
    else:
        token_ids = rng.sample(candidates, n)
    words = tokenizer.convert_ids_to_tokens(token_ids)
    return VocabSubset(token_ids=token_ids, words=[_strip_marker(w) for w in words], dropped=[], source="random",
                       policy=policy)


def _candidates(tokenizer: PreTrainedTokenizerBase, *, exclude: set[int]) -> list[int]:
    """Whole-word alphabetic tokens: no specials, no [unused] slots, no continuation pieces."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids) | exclude
    marked = sum(1 for t in vocab if t.startswith(_WORD_START)) > 0.3 * len(vocab)
    out = []
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        if idx in special or token.startswith("##") or _BRACKETED.match(token):
            continue
        if marked and not token.startswith(_WORD_START):
            continue  # a BPE piece that only occurs inside words
        if _strip_marker(token).isalpha():
            out.append(idx)
    return out


def _strip_marker(token: str) -> str:
    return token[1:] if token.startswith(_WORD_START) else token


def _match_frequencies(candidates: list[int], counts: dict[int, int], targets: list[int], rng: random.Random) -> list[int]:
    """For each target count, a random unused candidate from the same log2-frequency bin (the nearest
    non-empty bin when that one is used up), so the control set has the gender set's profile."""
    bins: dict[int, list[int]] = {}
    for idx in candidates:
        bins.setdefault(_bin(counts.get(idx, 0)), []).append(idx)
    for members in bins.values():
        rng.shuffle(members)
    chosen: list[int] = []
    for target in targets:
        want = _bin(target)
        for distance in range(0, 64):
            pool = next((bins[b] for b in (want - distance, want + distance) if bins.get(b)), None)
            if pool:
                chosen.append(pool.pop())
                break
    return chosen


def _bin(count: int) -> int:
    return int(math.log2(count + 1))
