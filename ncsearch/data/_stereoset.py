"""StereoSet (Nadeem et al. 2021): the mirror's flat JSONL and the official nested dev.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["GOLD_LABELS", "StereoSetItem", "load_stereoset"]

GOLD_LABELS = ("stereotype", "anti-stereotype", "unrelated")
_KINDS = ("intrasentence", "intersentence")
_SHORT = {"intrasentence": "intra", "intersentence": "inter"}


@dataclass
class StereoSetItem:
    """One StereoSet example: a context and its three candidate sentences keyed by gold label.

    For intrasentence items `context` holds the word `BLANK` where the candidates differ; for
    intersentence items it is the first sentence and the candidates are continuations.
    """

    id: str
    target: str
    bias_type: str
    context: str
    sentences: dict[str, str]


def _stereoset_file(root: str | Path) -> Path:
    # The official nested file carries the original ids, so it wins when both are present.
    official = Path(root) / "stereoset" / "dev.json"
    if official.is_file():
        return official
    return require_file(root, "stereoset/dev.jsonl")


def _from_official(path: Path, data: Any, kind: str) -> list[StereoSetItem]:
    try:
        examples = data["data"][kind]
    except (KeyError, TypeError):
        raise DataError(f"{str(path)!r}: expected the official layout {{'data': {{{kind!r}: [...]}}}}") from None
    items = []
    for example in examples:
        try:
            sentences = {s["gold_label"]: s["sentence"] for s in example["sentences"]}
            item = StereoSetItem(
                id=str(example["id"]),
                target=example["target"],
                bias_type=example["bias_type"],
                context=example["context"],
                sentences=sentences,
            )
        except (KeyError, TypeError) as err:
            raise DataError(f"{str(path)!r}: malformed {kind} example {example.get('id')!r}: missing {err}") from None
        _check_labels(path, item)
        items.append(item)
    return items


def _from_flat(path: Path, kind: str) -> list[StereoSetItem]:
    items = []
    with path.open(encoding="utf-8") as handle:
        for line_index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{str(path)!r} line {line_index + 1} is not JSON: {err}") from None
            if row.get("type") != kind:
                continue
            try:
                item = StereoSetItem(
                    # The flat copy lost the original ids; the line index is stable for a given file.
                    id=f"{_SHORT[kind]}-{line_index}",
                    target=row["target"],
                    bias_type=row["bias_type"],
                    context=row["context"],
                    sentences={label: row[label] for label in GOLD_LABELS},
                )
            except KeyError as err:
                raise DataError(f"{str(path)!r} line {line_index + 1}: missing key {err}") from None
            items.append(item)
    return items


def _check_labels(path: Path, item: StereoSetItem) -> None:
    if set(item.sentences) != set(GOLD_LABELS):
        raise DataError(
            f"{str(path)!r}: example {item.id!r} has gold labels {sorted(item.sentences)!r}, "
            f"expected {list(GOLD_LABELS)!r}"
        )


def load_stereoset(
    root: str | Path, *, kind: Literal["intrasentence", "intersentence"] = "intrasentence"
) -> list[StereoSetItem]:
    """StereoSet dev examples of one kind, in file order.

    Reads `stereoset/dev.json` (the official layout: `data.<kind>[]` with `id`, `target`,
    `bias_type`, `context` and `sentences[]` of `{id, sentence, labels, gold_label}`) when present,
    else the mirror's flat `stereoset/dev.jsonl` (one object a line with `type` and the three
    sentences as keys), synthesizing ids `intra-<line>` / `inter-<line>` (0-based line index).
    """
    if kind not in _KINDS:
        raise DataError(f"unknown StereoSet kind {kind!r}; choose intrasentence or intersentence")
    path = _stereoset_file(root)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{str(path)!r} is not valid JSON: {err}") from None
        return _from_official(path, data, kind)
    return _from_flat(path, kind)
