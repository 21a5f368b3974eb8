"""Pseudo-perplexity (Salazar et al. 2020) on held-out GAP validation passages.

Each passage is tokenized (special tokens added, truncated to `max_length` tokens); every non-special
token is masked once, alone, and its log-probability read. PPPL = exp(-(sum of those log-probabilities
over all passages) / (number of scored tokens)). It measures how much a debiasing run costs the model
as a language model; the GAP validation split is used by no training path, so the text is held out.

Cost grows with (tokens per passage)^2, which is why passages are truncated; `limit` is the number of
passages (first N in file order).

Uncertainty: passages are resampled, and PPPL is recomputed as the ratio of the resampled sums (a
passage contributes all of its tokens, which are not independent of each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register
from ncsearch.evaluate._scoring import MaskedRequest, score_masked

__all__ = ["PerplexityBenchmark", "pppl_requests", "pseudo_perplexity"]


def pppl_requests(
    texts: Sequence[str], tokenizer: Any, *, max_length: int
) -> tuple[list[MaskedRequest], list[int]]:
    """One request per scorable token (special tokens excluded), and the passage index per request."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    mask_id = tokenizer.mask_token_id
    requests: list[MaskedRequest] = []
    owners: list[int] = []
    for i, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"])):
        for position, (token, is_special) in enumerate(zip(ids, special)):
            if is_special:
                continue
            masked = list(ids)
            masked[position] = mask_id
            requests.append(MaskedRequest(masked, [position], [token]))
            owners.append(i)
    return requests, owners


def pseudo_perplexity(token_logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-probability over all scored tokens."""
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(np.exp(-values.mean()))


@register
class PerplexityBenchmark(Benchmark):
    """Pseudo-perplexity of the masked LM on GAP validation passages (lower is better)."""

    name = "perplexity"
    max_length: ClassVar[int] = 64
    resampling = Resampling("passages", "passages", key=("passage",))
    headline = ("perplexity/pppl",)

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """PPPL = exp(−Σ log-probabilities / Σ scored tokens) over the weighted passages."""
        tokens = weights @ table["tokens"].to_numpy(dtype=np.float64)
        total = weights @ table["sum_logprob"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"perplexity/pppl": np.where(tokens > 0, np.exp(-total / tokens), np.nan)}

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        from ncsearch.data import load_gap_corpus

        texts = load_gap_corpus(self.data_root, splits=("validation",))
        if self.limit is not None:
            texts = texts[: self.limit]
        requests, owners = pppl_requests(texts, tokenizer, max_length=self.max_length)
        logprobs = score_masked(model, requests, batch_size=self.batch_size, pad_id=tokenizer.pad_token_id or 0)
        flat = np.array([float(values[0]) for values in logprobs], dtype=np.float64)
        per_passage = pd.DataFrame({"passage": owners, "logprob": flat}).groupby("passage")["logprob"]
        table = pd.DataFrame(
            {
                "passage": np.arange(len(texts)),
                "text": texts,
                "tokens": per_passage.count().reindex(range(len(texts)), fill_value=0).to_numpy(),
                "sum_logprob": per_passage.sum().reindex(range(len(texts)), fill_value=0.0).to_numpy(),
            }
        )
        table["pppl"] = np.exp(-table["sum_logprob"] / table["tokens"].where(table["tokens"] > 0))
        return BenchmarkResult(point_metrics(type(self), table), {"passages": table})
