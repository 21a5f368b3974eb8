"""SEAT / WEAT tests (May et al. 2019, as shipped by bias-bench): two target and two attribute sets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ncsearch.data._root import require_file
from ncsearch.errors import DataError

__all__ = ["SeatSet", "SeatTest", "load_seat", "seat_tests"]


@dataclass
class SeatSet:
    """A named set of words or sentences, e.g. category "MaleNames"."""

    category: str
    examples: list[str]


@dataclass
class SeatTest:
    """Targets X, Y and attributes A, B of one association test (file `seat/<name>.jsonl`)."""

    name: str
    targ1: SeatSet
    targ2: SeatSet
    attr1: SeatSet
    attr2: SeatSet


def seat_tests(root: str | Path) -> list[str]:
    """Names of the SEAT tests present under `root/seat` (file stems, sorted), e.g. "weat6", "sent-weat6"."""
    folder = Path(root) / "seat"
    if not folder.is_dir():
        require_file(root, "seat/weat6.jsonl")  # raises the usual missing-file error
    return sorted(p.name[: -len(".jsonl")] for p in folder.glob("*.jsonl"))


def load_seat(root: str | Path, test: str) -> SeatTest:
    """One SEAT test by name (see `seat_tests`). The file is a single JSON object despite `.jsonl`."""
    path = Path(root) / "seat" / f"{test}.jsonl"
    if not path.is_file():
        names = seat_tests(root)
        if test not in names:
            raise DataError(f"unknown SEAT test {test!r}; available: {', '.join(names)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{str(path)!r} is not valid JSON: {err}") from None
    sets = {}
    for key in ("targ1", "targ2", "attr1", "attr2"):
        entry = data.get(key) if isinstance(data, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("examples"), list)):
            raise DataError(f"{str(path)!r}: {key!r} must be an object with 'category' and 'examples'")
        sets[key] = SeatSet(category=str(entry.get("category", key)), examples=[str(e) for e in entry["examples"]])
    return SeatTest(name=test, **sets)
