"""BEC-Pro, the Bias Evaluation Corpus with Professions (Bartl et al. 2020).

Each row is a template sentence "<person> ... <profession>" in three forms: `Sentence` (plain),
`Sent_TM` (person masked) and `Sent_TAM` (person and every word of the profession masked). The
association of the person word with the profession is

    log( P(person | Sent_TM) / P(person | Sent_TAM) ),

the probability of the person word at its mask when the profession is visible, normalised by its
prior when the profession is hidden too. Reported: the mean association over rows whose person word
is male and over rows whose person word is female, for each profession group (`Prof_Gender`: male,
female, balanced, the profession's share of women in US labour statistics), and male - female.

As in the reference (marionbartl/gender-bias-BERT, `bias_utils/utils.py`: `model_evaluation`,
`prob_with_prior`): the person word is the first mask of `Sent_TAM` (every template puts the person
first); the target token is the token of the tokenised plain `Sentence` at that position, and the
probability is read at the same position in `Sent_TM` and `Sent_TAM`. The person word has one mask in
the data, so a person word that the tokenizer splits into several pieces is scored by its first piece
only; the per-row table records the piece count (every BEC-Pro person word is one piece in the BERT
uncased vocabulary). We differ from the reference in two mechanical ways: sequences are padded with
the pad token and masked out of attention (the reference pads with attended [MASK] tokens to a power
of two), and the log-ratio is computed from float64 log-softmax values.

Uncertainty: sentences are resampled within their (profession group, person gender) cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ncsearch.errors import DataError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, register, unit_weight_metrics

__all__ = ["GROUPS", "BecProBenchmark", "bec_pro_metrics", "bec_pro_requests", "summarise"]

GROUPS = ("male", "female", "balanced")
_MASK_IN_DATA = "[MASK]"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text.replace(_MASK_IN_DATA, tokenizer.mask_token), add_special_tokens=True)["input_ids"])


def bec_pro_requests(frame: pd.DataFrame, tokenizer: Any) -> tuple[list, list, list[int]]:
    """Masked requests for every row: (Sent_TM requests, Sent_TAM requests, person-word piece counts).

    Each request asks for the log-probability of the person word's (first) token at the person mask.
    """
    from ncsearch.evaluate._scoring import MaskedRequest

    mask_id = tokenizer.mask_token_id
    tm_requests, tam_requests, pieces = [], [], []
    for row in frame.itertuples(index=False):
        plain, tm, tam = _ids(tokenizer, row.Sentence), _ids(tokenizer, row.Sent_TM), _ids(tokenizer, row.Sent_TAM)
        tam_masks = [i for i, token in enumerate(tam) if token == mask_id]
        tm_masks = [i for i, token in enumerate(tm) if token == mask_id]
        if not tam_masks or not tm_masks or tm_masks[0] != tam_masks[0]:
            raise DataError(f"BEC-Pro row {row.Sentence!r}: the person mask is not the first mask of both "
                            f"{row.Sent_TM!r} and {row.Sent_TAM!r}")
        position = tam_masks[0]
        if plain[:position] != tam[:position] or position >= len(plain):
            raise DataError(f"BEC-Pro row {row.Sentence!r}: the person word is not at the mask of {row.Sent_TAM!r}")
        target = plain[position]
        tm_requests.append(MaskedRequest(tm, [position], [target]))
        tam_requests.append(MaskedRequest(tam, [position], [target]))
        pieces.append(len(tokenizer(str(row.Person), add_special_tokens=False)["input_ids"]))
    return tm_requests, tam_requests, pieces


def bec_pro_metrics(table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """bec_pro/<group>/{male,female,diff} and bec_pro/mean_abs_diff from per-row associations
    (columns Prof_Gender, Gender, association) with row weights (B, rows): the weighted mean
    association of male and of female person words per profession group, their difference, and the
    mean of |difference| over the groups present."""
    association = table["association"].to_numpy(dtype=np.float64)
    gender = table["Gender"].to_numpy()
    profession = table["Prof_Gender"].to_numpy()
    metrics: dict[str, np.ndarray] = {}
    diffs = []
    for group in GROUPS:
        in_group = profession == group
        if not in_group.any():
            continue
        means = {}
        for person in ("male", "female"):
            rows = (in_group & (gender == person)).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                means[person] = (weights @ (rows * association)) / (weights @ rows)
        metrics[f"bec_pro/{group}/male"] = means["male"]
        metrics[f"bec_pro/{group}/female"] = means["female"]
        metrics[f"bec_pro/{group}/diff"] = means["male"] - means["female"]
        diffs.append(np.abs(metrics[f"bec_pro/{group}/diff"]))
    metrics["bec_pro/mean_abs_diff"] = np.mean(diffs, axis=0) if diffs else np.full(weights.shape[0], np.nan)
    return metrics


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """The published metrics of a per-row table (see `bec_pro_metrics`)."""
    return unit_weight_metrics(bec_pro_metrics, table)


@register
class BecProBenchmark(Benchmark):
    """BEC-Pro association scores by profession group and person gender.

    `limit` keeps about `limit` rows: an equal seeded sample from each (profession group, person
    gender) cell, file order kept, so every reported mean has rows behind it.
    """

    name = "bec_pro"
    resampling = Resampling("rows", "sentences", key=("Sentence",), strata=("Prof_Gender", "Gender"))
    headline = ("bec_pro/*/diff", "bec_pro/mean_abs_diff")
    bias_measures = ("bec_pro/mean_abs_diff",)

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        return bec_pro_metrics(table, weights)

    def _rows(self) -> pd.DataFrame:
        from ncsearch.data import load_bec_pro

        frame = load_bec_pro(self.data_root)
        missing = {"Sentence", "Sent_TM", "Sent_TAM", "Person", "Gender", "Prof_Gender"} - set(frame.columns)
        if missing:
            raise DataError(f"BEC-Pro file lacks columns {sorted(missing)}")
        if self.limit is None:
            return frame.reset_index(drop=True)
        cells = frame.groupby(["Prof_Gender", "Gender"], sort=True).indices
        per_cell = max(1, self.limit // max(1, len(cells)))
        rng = np.random.default_rng(self.seed)
        keep: list[int] = []
        for _, positions in sorted(cells.items()):
            keep.extend(rng.choice(positions, size=min(per_cell, len(positions)), replace=False).tolist())
        return frame.iloc[sorted(keep)].reset_index(drop=True)

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        from ncsearch.evaluate._scoring import score_masked

        frame = self._rows()
        tm_requests, tam_requests, pieces = bec_pro_requests(frame, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        logprobs = score_masked(model, tm_requests + tam_requests, batch_size=self.batch_size, pad_id=pad_id,
                                fast_path=self.fast_path)
        n = len(frame)
        table = frame[[c for c in ("Sentence", "Sent_TM", "Sent_TAM", "Person", "Gender", "Profession",
                                 "Prof_Gender", "Template")
                       if c in frame.columns]].copy()
        table["log_p_tm"] = [float(lp[0]) for lp in logprobs[:n]]
        table["log_p_tam"] = [float(lp[0]) for lp in logprobs[n:]]
        table["association"] = table["log_p_tm"] - table["log_p_tam"]
        table["person_pieces"] = pieces
        return BenchmarkResult(summarise(table), {"rows": table})
