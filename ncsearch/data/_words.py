"""Gendered and neutral word lists: the vocabulary sources of the NC3 regularizer and of CDA."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["GenderWords", "load_gender_words", "load_attribute_words"]


@dataclass
class GenderWords:
    """ADEPT male/female/neutral lists (one word a line) and bias-bench's gender pairs.

    `male[i]` and `female[i]` are counterparts in the ADEPT files, as are the two sides of each pair.
    """

    male: list[str]
    female: list[str]
    neutral: list[str]
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_attribute_words(root: str | Path) -> dict[str, list[list[str]]]:
    """`words/bias_attribute_words.json` as published: `{"gender": [[male, female], ...], "race": ...}`."""
    path = require_file(root, "words/bias_attribute_words.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r}: expected a JSON object of word groups, got {type(data).__name__}")
    return data


def load_gender_words(root: str | Path) -> GenderWords:
    """The gender word lists under `root/words`."""
    male = _read_lines(require_file(root, "words/male.txt"))
    female = _read_lines(require_file(root, "words/female.txt"))
    neutral = _read_lines(require_file(root, "words/neutral.txt"))
    pairs: list[tuple[str, str]] = []
    for entry in load_attribute_words(root).get("gender", []):
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(w, str) for w in entry)):
            raise DataError(f"bias_attribute_words.json: gender entry {entry!r} is not a [male, female] pair")
        pairs.append((entry[0], entry[1]))
    return GenderWords(male=male, female=female, neutral=neutral, pairs=pairs)
