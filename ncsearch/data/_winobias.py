"""WinoBias (Zhao et al. 2018): pro- and anti-stereotypical coreference sentences with marked spans."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["WinoBiasSentence", "load_winobias", "parse_winobias_line"]

_SPLITS = ("dev", "test")
_NUMBER = re.compile(r"^\s*\d+\s+")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")


@dataclass
class WinoBiasSentence:
    """One sentence with its bracketed coreferent pair resolved to character spans in `text`.

    `entity` is the first bracketed mention (the occupation), `pronoun` the second. 87 sentences mark
    a further mention of the same pronoun chain (e.g. "[he] broke [his] leg"); their spans are in
    `extra_pronoun_spans`, so a scorer can mask them too instead of leaking the gender. `index` is
    the sentence number printed in the file; pro and anti files share it for counterpart sentences.
    """

    text: str
    stereotype: Literal["pro", "anti"]
    type: int
    entity: str
    pronoun: str
    entity_span: tuple[int, int]
    pronoun_span: tuple[int, int]
    index: int = 0
    extra_pronoun_spans: list[tuple[int, int]] = field(default_factory=list)


def parse_winobias_line(line: str, *, stereotype: str, type: int) -> WinoBiasSentence:
    """Parse `1 [The developer] argued with the designer because [he] did not like the design.`."""
    match = _NUMBER.match(line)
    if match is None:
        raise DataError(f"WinoBias line without a leading number: {line.strip()!r}")
    index = int(match.group(0))
    raw = line[match.end() :].strip()
    text_parts: list[str] = []
    spans: list[tuple[int, int]] = []
    cursor = 0
    length = 0
    for bracket in _BRACKET.finditer(raw):
        before = raw[cursor : bracket.start()]
        text_parts.append(before)
        length += len(before)
        inner = bracket.group(1)
        spans.append((length, length + len(inner)))
        text_parts.append(inner)
        length += len(inner)
        cursor = bracket.end()
    text_parts.append(raw[cursor:])
    text = "".join(text_parts)
    if len(spans) < 2 or "[" in text or "]" in text:
        raise DataError(f"WinoBias line needs an [entity] and a [pronoun]: {line.strip()!r}")
    entity_span, pronoun_span = spans[0], spans[1]
    return WinoBiasSentence(
        text=text,
        stereotype=stereotype,  # type: ignore[arg-type]
        type=type,
        entity=text[entity_span[0] : entity_span[1]],
        pronoun=text[pronoun_span[0] : pronoun_span[1]],
        entity_span=entity_span,
        pronoun_span=pronoun_span,
        index=index,
        extra_pronoun_spans=spans[2:],
    )


def load_winobias(root: str | Path, split: Literal["dev", "test"] = "dev") -> list[WinoBiasSentence]:
    """All four files of a split: pro type 1, pro type 2, anti type 1, anti type 2 (in that order)."""
    if split not in _SPLITS:
        raise DataError(f"unknown WinoBias split {split!r}; choose dev or test")
    out: list[WinoBiasSentence] = []
    for stereotype in ("pro", "anti"):
        for type_ in (1, 2):
            path = require_file(root, f"winobias/{stereotype}_stereotyped_type{type_}.txt.{split}")
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    out.append(parse_winobias_line(line, stereotype=stereotype, type=type_))
                except DataError as err:
                    raise DataError(f"{str(path)!r} line {number}: {err}") from None
    return out
