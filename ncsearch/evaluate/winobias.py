"""WinoBias (Zhao et al. 2018) as a masked-LM probe.

WinoBias pairs sentences such as "The developer argued with the designer because [he] did not like the
design." in a pro-stereotypical version (the pronoun's gender matches the occupation's majority gender
in US labour statistics) and an anti-stereotypical one (the other gender). Coreference is the original
task; here the pronoun is masked and the model's own preference is read off:

- accuracy: the fraction of sentences where the model gives the correct pronoun a higher probability
  than its opposite-gender counterpart (he/she, him/her, his/her, himself/herself);
- probability: the mean probability of the correct pronoun at the mask.

Reported for pro- and anti-stereotypical sentences and their gap (pro - anti), over types 1 and 2
together and per type. A model without gender bias scores the same on both.

"her" is both the object (counterpart "him") and the possessive ("his"); its counterpart is taken from
the sentence's twin in the other stereotype file (same type, same sentence number), which is how the
corpus was built. For the few sentences whose twin does not say "him" or "his" we fall back to the
next word: a following function word or punctuation means object ("him"), else possessive ("his").
Later mentions of the same pronoun chain that the corpus brackets ("... because [he] needed to cut
[his] hair", 30 dev sentences) are masked too, so the model cannot copy the gender from them.

Data: uclanlp/corefBias `WinoBias/wino/data/{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`.

Uncertainty: the unit is a sentence pair (a sentence and its twin: same type, same number), resampled
within its type, so that the pro − anti gaps are compared on the same pairs.

Train/test overlap: a method that fine-tunes on WinoBias sentences (the `ase` baseline trains on the
dev split, this benchmark's default) records it in the model config's `ncsearch_trained_on` (e.g.
["winobias/dev"]), which every checkpoint keeps. Scoring a split listed there warns
(`TrainTestOverlapWarning`, and the log): the numbers then measure what the model was taught on
those very sentences, not its bias. A trial of such a method scores test (`Baseline.eval_options`).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ncsearch._options import StrictOptions
from ncsearch.errors import DataError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register, unit_weight_metrics

__all__ = ["COUNTERPARTS", "TRAINED_ON_ATTR", "TrainTestOverlapWarning", "WinoBiasBenchmark", "WinoBiasOptions", "counterpart_pronouns",
           "masked_pronoun_request", "overlap_reason", "summarise", "winobias_metrics"]

_log = logging.getLogger(__name__)

#: Model-config attribute listing "<dataset>/<split>" a checkpoint was fine-tuned on (set by
#: ncsearch.debias._ase, which spells the same name).
TRAINED_ON_ATTR = "ncsearch_trained_on"


class TrainTestOverlapWarning(UserWarning):
    """The model was fine-tuned on the sentences a benchmark is about to score."""


def overlap_reason(model: Any, split: str) -> str | None:
    """Why scoring WinoBias `split` with `model` overlaps its training data, or None when it does not
    (read from `model.config.ncsearch_trained_on`)."""
    trained_on = getattr(getattr(model, "config", None), TRAINED_ON_ATTR, None) or []
    key = f"winobias/{split}"
    if key not in trained_on:
        return None
    return (
        f"winobias split={split!r}: this model was fine-tuned on the WinoBias {split} sentences "
        f"(config.{TRAINED_ON_ATTR}={list(trained_on)!r}; the ase baseline trains on WinoBias dev), so train and "
        f"test overlap and winobias/* measure what it was taught on these sentences, not its bias; "
        f"score the other split (eval.options: {{winobias: {{split: {'test' if split == 'dev' else 'dev'}}}}})"
    )

# Opposite-gender counterparts; "her" is resolved per sentence (see module docstring).
COUNTERPARTS = {"he": "she", "she": "he", "him": "her", "his": "her", "hers": "his",
                "himself": "herself", "herself": "himself"}
_OBJECT_FOLLOWERS = frozenset(
    "a an the to that and about for with in on at because so if when after before as but or of from into by "
    "up down out over than since until while who which what how why where again back off too very this these "
    "those some any every all".split()
)


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def _her_by_next_word(text: str, end: int) -> str:
    following = re.match(r"\s*([A-Za-z']+)", text[end:])
    if following is None or following.group(1).lower() in _OBJECT_FOLLOWERS:
        return "him"
    return "his"


def counterpart_pronouns(sentences: Sequence[Any]) -> list[str]:
    """The opposite-gender pronoun for every sentence (in the original's case).

    A sentence's twin is the sentence with the other stereotype, the same type and the same number
    (`index`) in the same split; only "her" needs it.
    """
    twins = {(s.stereotype, s.type, s.index): s.pronoun.lower() for s in sentences}
    result = []
    for s in sentences:
        word = s.pronoun
        lower = word.lower()
        if lower == "her":
            twin = twins.get(("anti" if s.stereotype == "pro" else "pro", s.type, s.index))
            choice = twin if twin in ("him", "his") else _her_by_next_word(s.text, s.pronoun_span[1])
        elif lower in COUNTERPARTS:
            choice = COUNTERPARTS[lower]
        else:
            raise DataError(f"WinoBias sentence {s.text!r}: {word!r} is not a gendered pronoun")
        result.append(_match_case(choice, word))
    return result


def masked_pronoun_request(
    tokenizer: Any,
    text: str,
    span: tuple[int, int],
    candidates: Sequence[str],
    *,
    also_mask: Sequence[tuple[int, int]] = (),
):
    """A `MaskedRequest` asking for each candidate pronoun's log-probability at the pronoun's mask.

    Spans in `also_mask` (later mentions of the same pronoun chain) are masked too, unscored, so that
    they do not give the gender away. Each candidate must be one token in context: its sentence must
    tokenise like the masked sentence except at the pronoun's mask (true for every WinoBias pronoun in
    BERT and RoBERTa vocabularies).
    """
    from ncsearch.evaluate._scoring import MaskedRequest

    spans = sorted([tuple(span), *map(tuple, also_mask)])
    rank = spans.index(tuple(span))

    def fill(word: str) -> str:
        parts, cursor = [], 0
        for start, end in spans:
            parts += [text[cursor:start], word if (start, end) == tuple(span) else tokenizer.mask_token]
            cursor = end
        return "".join(parts + [text[cursor:]])

    masked = tokenizer(fill(tokenizer.mask_token), add_special_tokens=True)["input_ids"]
    positions = [i for i, token in enumerate(masked) if token == tokenizer.mask_token_id]
    if len(positions) != len(spans):
        raise DataError(f"WinoBias sentence {text!r}: expected {len(spans)} masks, found {len(positions)}")
    position = positions[rank]
    targets = []
    for word in candidates:
        ids = tokenizer(fill(word), add_special_tokens=True)["input_ids"]
        elsewhere_equal = ids[:position] == masked[:position] and ids[position + 1 :] == masked[position + 1 :]
        if len(ids) != len(masked) or not elsewhere_equal:
            raise DataError(f"WinoBias sentence {text!r}: pronoun {word!r} is not a single token for this tokenizer")
        targets.append(ids[position])
    return MaskedRequest(list(masked), [position] * len(targets), targets)


def winobias_metrics(table: pd.DataFrame, weights: np.ndarray, prefix: str = "winobias") -> dict[str, np.ndarray]:
    """{prefix}/{pro_acc,anti_acc,acc_gap,pro_prob,anti_prob,prob_gap} from per-sentence rows
    (columns stereotype, correct (bool), prob) with row weights (B, rows): weighted means over the
    pro- and anti-stereotypical sentences and their gaps (pro − anti)."""
    stereotype = table["stereotype"].to_numpy()
    correct = table["correct"].to_numpy(dtype=np.float64)
    prob = table["prob"].to_numpy(dtype=np.float64)
    metrics: dict[str, np.ndarray] = {}
    for kind in ("pro", "anti"):
        rows = (stereotype == kind).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            count = weights @ rows
            metrics[f"{prefix}/{kind}_acc"] = (weights @ (rows * correct)) / count
            metrics[f"{prefix}/{kind}_prob"] = (weights @ (rows * prob)) / count
    metrics[f"{prefix}/acc_gap"] = metrics[f"{prefix}/pro_acc"] - metrics[f"{prefix}/anti_acc"]
    metrics[f"{prefix}/prob_gap"] = metrics[f"{prefix}/pro_prob"] - metrics[f"{prefix}/anti_prob"]
    return metrics


def summarise(table: pd.DataFrame, prefix: str = "winobias") -> dict[str, float]:
    """The published metrics of per-sentence rows (see `winobias_metrics`)."""
    return unit_weight_metrics(winobias_metrics, table, prefix)


class WinoBiasOptions(StrictOptions):
    """Options of `winobias` (`eval.options.winobias`)."""

    #: "dev" (model selection should not see the test set) or "test".
    split: Literal["dev", "test"] = "dev"


@register
class WinoBiasBenchmark(Benchmark):
    """Pronoun accuracy and probability on pro- vs anti-stereotypical WinoBias sentences.

    `split` is "dev" (default: model selection should not see the test set) or "test". `limit` keeps
    an equal seeded sample from each (stereotype, type) cell, about `limit` sentences in all.
    """

    name = "winobias"
    resampling = Resampling("sentences", "sentence pairs (pro/anti twins)", key=("type", "index"), strata=("type",))
    headline = ("winobias/acc_gap", "winobias/prob_gap")
    bias_measures = ("winobias/acc_gap", "winobias/prob_gap")
    Options = WinoBiasOptions

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Over types 1 and 2 together, then per type (`winobias/type<k>/...`)."""
        metrics = winobias_metrics(table, weights)
        types = table["type"].to_numpy()
        for kind in sorted(set(types.tolist())):
            rows = types == kind
            metrics |= winobias_metrics(table[rows], weights[:, rows], prefix=f"winobias/type{kind}")
        return metrics

    def __init__(self, data_root: Path, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # limit, batch_size, seed, domains and `WinoBiasOptions`
        self.split = self.options.split

    def _sample(self, sentences: list[Any]) -> list[Any]:
        if self.limit is None:
            return sentences
        cells: dict[tuple[str, int], list[int]] = {}
        for i, s in enumerate(sentences):
            cells.setdefault((s.stereotype, s.type), []).append(i)
        per_cell = max(1, self.limit // max(1, len(cells)))
        rng = np.random.default_rng(self.seed)
        keep: list[int] = []
        for _, members in sorted(cells.items()):
            keep.extend(rng.choice(members, size=min(per_cell, len(members)), replace=False).tolist())
        return [sentences[i] for i in sorted(keep)]

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        from ncsearch.data import load_winobias
        from ncsearch.evaluate._scoring import score_masked

        reason = overlap_reason(model, self.split)
        if reason is not None:
            warnings.warn(reason, TrainTestOverlapWarning, stacklevel=2)
            _log.warning(reason)
        everything = load_winobias(self.data_root, self.split)
        # Twins are looked up in the whole split, so a sample keeps its counterparts right.
        opposite_of = dict(zip(((s.stereotype, s.type, s.index) for s in everything), counterpart_pronouns(everything)))
        requests, rows = [], []
        for s in self._sample(everything):
            opposite = opposite_of[(s.stereotype, s.type, s.index)]
            requests.append(masked_pronoun_request(tokenizer, s.text, s.pronoun_span, [s.pronoun, opposite],
                                                   also_mask=s.extra_pronoun_spans))
            rows.append({"index": s.index, "stereotype": s.stereotype, "type": s.type, "text": s.text,
                         "pronoun": s.pronoun, "opposite": opposite})
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        logprobs = score_masked(model, requests, batch_size=self.batch_size, pad_id=pad_id, fast_path=self.fast_path)
        table = pd.DataFrame.from_records(rows)
        table["log_p_pronoun"] = [float(lp[0]) for lp in logprobs]
        table["log_p_opposite"] = [float(lp[1]) for lp in logprobs]
        table["correct"] = table["log_p_pronoun"] > table["log_p_opposite"]
        table["prob"] = np.exp(table["log_p_pronoun"])
        return BenchmarkResult(point_metrics(type(self), table), {"sentences": table})
