"""Entailment sentence pairs (premise, hypothesis) for MABEL-style training.

MABEL (He et al. 2022) trains on the entailment pairs of SNLI (Bowman et al. 2015) and MultiNLI
(Williams et al. 2018). Neither is in the offline mirror, so two corpora are offered:

- ``"offline"`` (default): the entailment-like pairs of the GLUE files already in the mirror, RTE
  train pairs labelled ``entailment`` and MRPC train pairs labelled 1 (paraphrase: mutual
  entailment). A stand-in, much smaller than SNLI+MNLI (about 1,250 + 2,470 pairs before any
  filtering), recorded as a substitute by the baseline that uses it.
- ``"snli_mnli"``: the paper's data, read from ``<root>/nli/snli_1.0_train.jsonl`` and
  ``<root>/nli/multinli_1.0_train.jsonl`` (the files of the official SNLI 1.0 and MultiNLI 1.0
  archives; rows with ``gold_label == "entailment"``). ``ncsearch data pull --only nli`` puts them
  there: it downloads both archives from their publishers (about 320 MB), checks each archive's
  pinned sha256 and extracts the train file (the manifest's opt-in ``nli`` dataset, whose paths are
  `NLI_FILES`). Nothing here touches the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ncsearch.errors import DataError

__all__ = ["ENTAILMENT_CORPORA", "NLI_FILES", "EntailmentPair", "check_entailment_files", "load_entailment_pairs"]

ENTAILMENT_CORPORA = ("offline", "snli_mnli")
#: The paper's corpora, relative to the data root: (source name, file).
NLI_FILES = (("SNLI", "nli/snli_1.0_train.jsonl"), ("MNLI", "nli/multinli_1.0_train.jsonl"))


@dataclass(frozen=True)
class EntailmentPair:
    """One (premise, hypothesis) pair whose premise entails the hypothesis; `source` names the corpus."""

    premise: str
    hypothesis: str
    source: str


def load_entailment_pairs(root: str | Path, corpus: Literal["offline", "snli_mnli"] = "offline") -> list[EntailmentPair]:
    """Entailment pairs of `corpus` in file order (see the module docstring), empty sentences dropped."""
    if corpus == "offline":
        pairs = _glue_pairs(root, "RTE", entailment_label=0) + _glue_pairs(root, "MRPC", entailment_label=1)
    elif corpus == "snli_mnli":
        pairs = [pair for source, relative in NLI_FILES for pair in _nli_pairs(Path(root), source, relative)]
    else:
        raise DataError(f"unknown entailment corpus {corpus!r}; choose from {', '.join(ENTAILMENT_CORPORA)}")
    return [p for p in pairs if p.premise.strip() and p.hypothesis.strip()]


def check_entailment_files(root: str | Path, corpus: Literal["offline", "snli_mnli"] = "offline") -> None:
    """Raise the DataError `load_entailment_pairs` would raise for a missing file, without reading any."""
    from ncsearch.data._root import require_file

    if corpus == "offline":
        for task in ("RTE", "MRPC"):
            require_file(root, f"glue/{task}/train.tsv")
    elif corpus == "snli_mnli":
        for _, relative in NLI_FILES:
            _require_nli_file(Path(root), relative)
    else:
        raise DataError(f"unknown entailment corpus {corpus!r}; choose from {', '.join(ENTAILMENT_CORPORA)}")


def _glue_pairs(root: str | Path, task: str, *, entailment_label: int) -> list[EntailmentPair]:
    """Train pairs of a GLUE task whose label says the first sentence entails the second
    (`load_glue` maps RTE's `entailment` to 0; MRPC's quality 1 is a paraphrase)."""
    from ncsearch.data._glue import load_glue

    frame = load_glue(root, task, "train")
    chosen = frame[frame["label"] == entailment_label]
    return [EntailmentPair(str(a), str(b), task) for a, b in zip(chosen["sentence1"], chosen["sentence2"])]


def _require_nli_file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise DataError(
            f"missing NLI file {str(path)!r} (baseline_options.mabel.corpus: snli_mnli); 'ncsearch data pull "
            "--only nli' fetches it (the SNLI 1.0 and MultiNLI 1.0 archives, about 320 MB, sha256-checked) into "
            "its --data-dir (default: the cache; not the read-only mirror), or use corpus: offline"
        )
    return path


def _nli_pairs(root: Path, source: str, relative: str) -> list[EntailmentPair]:
    path = _require_nli_file(root, relative)
    pairs: list[EntailmentPair] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                label, premise, hypothesis = row["gold_label"], row["sentence1"], row["sentence2"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{str(path)!r} line {number}: not an NLI jsonl row ({err})") from None
            if label == "entailment":
                pairs.append(EntailmentPair(str(premise), str(hypothesis), source))
    return pairs
