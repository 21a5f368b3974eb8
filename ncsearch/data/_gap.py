"""GAP (Wikipedia passages): the general text corpus for MLM adaptation, training and pseudo-perplexity."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["GAP_SPLITS", "load_gap_corpus"]

GAP_SPLITS = ("development", "test", "validation")


def _read_text_column(path: Path) -> list[str]:
    # GAP text holds quotes and apostrophes freely: read as plain tab-separated fields, no quoting.
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or "Text" not in header:
            raise DataError(f"{str(path)!r} has no 'Text' column (header: {header!r})")
        column = header.index("Text")
        texts: list[str] = []
        for row in reader:
            if len(row) <= column:
                continue
            text = row[column].strip()
            if text:
                texts.append(text)
    return texts


def load_gap_corpus(
    root: str | Path,
    splits: Sequence[str] = ("development", "test"),
    *,
    flipped: bool = False,
) -> list[str]:
    """GAP passages (the `Text` column), in file order.

    `splits` picks among development/test/validation (validation is the held-out split for
    pseudo-perplexity). `flipped=True` reads `gap_flipped.tsv` instead, the gender-swapped corpus the
    BEC baseline fine-tunes on; it is one file covering the original splits, so `splits` then filters
    by the split prefix of its `ID` column (e.g. `development-1`).
    """
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [s for s in splits if s not in GAP_SPLITS]
    if unknown:
        raise DataError(f"unknown GAP split {unknown[0]!r}; choose from {', '.join(GAP_SPLITS)}")
    if not flipped:
        texts: list[str] = []
        for split in splits:
            texts.extend(_read_text_column(require_file(root, f"gap/gap-{split}.tsv")))
        return texts
    path = require_file(root, "gap/gap_flipped.tsv")
    wanted = set(splits)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or "Text" not in header or "ID" not in header:
            raise DataError(f"{str(path)!r} lacks the 'ID'/'Text' columns (header: {header!r})")
        id_col, text_col = header.index("ID"), header.index("Text")
        out = []
        for row in reader:
            if len(row) <= max(id_col, text_col):
                continue
            if row[id_col].rsplit("-", 1)[0] in wanted and row[text_col].strip():
                out.append(row[text_col].strip())
    return out
