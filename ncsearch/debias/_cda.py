"""Counterfactual data augmentation (CDA) with the gender pairs of bias_attribute_words.json.

Every gendered word of the pair list is swapped for its counterpart, in both directions ("he" <->
"she", "actor" <-> "actress"), on word boundaries ("the"/"them"/"hello" are never touched, "he's"
becomes "she's") and keeping the case of the original ("He" -> "She", "HIS" -> "HER"). Two-sided CDA
(Webster et al. 2020; bias-bench) trains on the original texts plus the swapped copy of every text
that contains a gendered word; one-sided CDA replaces each text by its swapped version.

A word listed in several pairs ("lady" for "gentleman" and "lord") maps to its counterpart in the
first pair that lists it, in file order. "her" is the one ambiguity that matters (it is both "him" and
"his"): it becomes "his" when a word follows that is not one that usually follows an object pronoun
("her mother" -> "his mother", "told her to" -> "told him to", "saw her." -> "saw him.").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ncsearch._options import StrictOptions
from ncsearch.debias._base import GENDER_WORD_FILES, Baseline, register

__all__ = ["CDA", "CDAOptions", "CounterfactualSwapper", "augment_two_sided"]

# Words that typically follow "her" used as an object ("gave her a", "told her to"), not as a determiner.
_AFTER_OBJECT = frozenset(
    "a an the and or but nor so to in into on onto at by for from with without of off out up down over "
    "back away again about as than that this these those if when while because before after until "
    "is was were are be been being has had have will would could should can may might must do did does "
    "not never also too very much well there here then now who which whom what where why how".split()
)
_NEXT_WORD = re.compile(r"\s+([A-Za-z][\w'-]*)")


class CounterfactualSwapper:
    """Swaps words by a symmetric, case-insensitive mapping built from (male, female) pairs."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        mapping: dict[str, str] = {}
        for male, female in pairs:
            male, female = male.lower(), female.lower()
            if male == female:
                continue
            mapping.setdefault(male, female)
            mapping.setdefault(female, male)
        self.mapping = mapping
        # Longest first so that "mr." wins over a shorter alternative starting the same way.
        words = sorted(mapping, key=lambda w: (-len(w), w))
        alternation = "|".join(re.escape(w) for w in words)
        # A word boundary that also holds for words ending in punctuation ("mr.", "ma'am").
        self._pattern = re.compile(rf"(?<![\w])(?:{alternation})(?![\w])", re.IGNORECASE) if words else None

    def swap(self, text: str) -> str:
        """`text` with every mapped word replaced by its counterpart, keeping its case."""
        if self._pattern is None:
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        source = match.group(0)
        target = self.mapping[source.lower()]
        if source.lower() == "her" and target in ("him", "his") and "his" in self.mapping:
            following = _NEXT_WORD.match(match.string, match.end())
            determiner = following is not None and following.group(1).lower() not in _AFTER_OBJECT
            target = "his" if determiner else "him"
        return _match_case(source, target)

    def __call__(self, text: str) -> str:
        return self.swap(text)


def augment_two_sided(texts: list[str], swap: CounterfactualSwapper) -> list[str]:
    """Two-sided CDA: the originals, then the swapped copy of every text the swap changes."""
    return list(texts) + [s for t, s in zip(texts, (swap(t) for t in texts)) if s != t]


def _match_case(source: str, target: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return target.upper()
    if letters and letters[0].isupper():
        return target[:1].upper() + target[1:]
    return target


class CDAOptions(StrictOptions):
    """Counterfactual data augmentation over the gender pairs of bias_attribute_words.json."""

    #: Train on the originals plus their swapped copies (Webster et al. 2020); false: swapped only.
    two_sided: bool = True


@register
class CDA(Baseline):
    """MLM on the corpus with counterfactual gender augmentation (`baseline_options.cda`)."""

    name = "cda"
    Options = CDAOptions
    options: CDAOptions
    required_files = Baseline.required_files + GENDER_WORD_FILES

    def swapper(self) -> CounterfactualSwapper:
        from ncsearch.data import load_gender_words

        return CounterfactualSwapper(load_gender_words(self.data_root).pairs)

    def transform_corpus(self, texts: list[str]) -> list[str]:
        swap = self.swapper()
        if not self.options.two_sided:
            return [swap(t) for t in texts]
        return augment_two_sided(texts, swap)
