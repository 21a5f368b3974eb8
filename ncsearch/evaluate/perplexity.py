"""Pseudo-perplexity (Salazar et al. 2020) on held-out GAP validation passages.

Each passage is tokenized (special tokens added, truncated to `max_length` tokens); every non-special
token is masked once, alone, and its log-probability read. PPPL = exp(-(sum of those log-probabilities
over all passages) / (number of scored tokens)). It measures how much a debiasing run costs the model
as a language model; the GAP validation split is used by no training path, so the text is held out.
`limit` is the number of passages (first N in file order).

Cost is one forward pass per scored token, so the exact metric on N passages costs N x (tokens per
passage) passes. Most of its uncertainty is between passages, not between the tokens of one passage,
so the same passes buy a much tighter interval spread over more passages: with `positions: k`
(`eval.options: {perplexity: {positions: k}}`) each passage scores k of its tokens, drawn without
replacement by a generator seeded with (eval seed, passage index), hence the same tokens for every
checkpoint, and its log-probability sum is estimated as (tokens / k) x the sum over the k scored
tokens. That estimate is reported under its own name, `perplexity/pppl_sampled`, never as
`perplexity/pppl`.

Uncertainty: passages are resampled, and PPPL is recomputed as the ratio of the resampled sums (a
passage contributes all of its tokens, which are not independent of each other). With sampled
positions, resampling passages with their own estimated sums also carries the within-passage
sampling variance (the usual ultimate-cluster bootstrap of a two-stage sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from ncsearch._options import StrictOptions
from ncsearch.errors import UserInputError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register
from ncsearch.evaluate._scoring import MaskedRequest, score_masked

__all__ = ["PerplexityBenchmark", "PerplexityOptions", "held_out_passages", "passage_table", "pppl_requests",
           "prepare_reference", "pseudo_perplexity"]

EXACT, SAMPLED = "perplexity/pppl", "perplexity/pppl_sampled"


def pppl_requests(
    texts: Sequence[str], tokenizer: Any, *, max_length: int, positions: int | None = None, seed: int = 0
) -> tuple[list[MaskedRequest], list[int], list[int]]:
    """One request per scored token (special tokens excluded), the passage index per request, and
    each passage's number of scorable tokens. `positions`: score at most that many tokens per
    passage, drawn with a generator seeded by (seed, passage index); None scores every token."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    mask_id = tokenizer.mask_token_id
    requests: list[MaskedRequest] = []
    owners: list[int] = []
    scorable_counts: list[int] = []
    for i, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"])):
        scorable = [position for position, is_special in enumerate(special) if not is_special]
        scorable_counts.append(len(scorable))
        if positions is not None and len(scorable) > positions:
            chosen = np.random.default_rng([seed, i]).choice(len(scorable), size=positions, replace=False)
            scorable = [scorable[j] for j in sorted(chosen)]
        for position in scorable:
            masked = list(ids)
            masked[position] = mask_id
            requests.append(MaskedRequest(masked, [position], [ids[position]]))
            owners.append(i)
    return requests, owners, scorable_counts


def held_out_passages(data_root: Any, limit: int | None) -> list[str]:
    """The held-out GAP validation passages that pseudo-perplexity (and `heldout_mlm`) score: the
    first `limit` in file order, all when None."""
    from ncsearch.data import load_gap_corpus

    texts = load_gap_corpus(data_root, splits=("validation",))
    return texts if limit is None else texts[:limit]


def passage_table(texts: Sequence[str], owners: Sequence[int], logprobs: Sequence[np.ndarray]) -> pd.DataFrame:
    """One row per passage: `passage`, `text`, `scored` (the log-probabilities read for it) and
    `sum_logprob` (their sum), from `score_masked`'s results and each request's passage index."""
    frame = pd.DataFrame({"passage": owners, "scored": [len(v) for v in logprobs],
                          "sum_logprob": [float(np.sum(v)) for v in logprobs]})
    per_passage = frame.groupby("passage")[["scored", "sum_logprob"]].sum()
    passages = range(len(texts))
    return pd.DataFrame({
        "passage": np.arange(len(texts)),
        "text": list(texts),
        "scored": per_passage["scored"].reindex(passages, fill_value=0).to_numpy(),
        "sum_logprob": per_passage["sum_logprob"].reindex(passages, fill_value=0.0).to_numpy(),
    })


def pseudo_perplexity(token_logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-probability over all scored tokens."""
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(np.exp(-values.mean()))


class PerplexityOptions(StrictOptions):
    """Options of `perplexity` (`eval.options.perplexity`)."""

    #: Tokens scored per passage, drawn without replacement with the benchmark's seed (also gives
    #: `perplexity/pppl_sampled`); None: every token (the exact pseudo-perplexity only).
    positions: Annotated[int, Field(ge=1)] | None = None
    #: With `positions`: a model (name, alias or folder; `base` in a search space: the search's own
    #: model) whose exact per-token log-probabilities are the control variate of the sampled estimate
    #: (`ncsearch.evaluate._reference`): same metric, far narrower interval. Must share the tokenizer.
    reference: str | None = None

    @model_validator(mode="after")
    def _reference_needs_positions(self) -> PerplexityOptions:
        if self.reference is not None and self.positions is None:
            raise ValueError("reference is the control variate of sampled positions; set positions too")
        if self.reference is not None and not self.reference.strip():
            raise ValueError("reference must name a model")
        return self


@register
class PerplexityBenchmark(Benchmark):
    """Pseudo-perplexity of the masked LM on GAP validation passages (lower is better)."""

    name = "perplexity"
    datasets = ("gap",)
    max_length: ClassVar[int] = 64
    resampling = Resampling("passages", "passages", key=("passage",))
    headline = (EXACT, SAMPLED)
    Options = PerplexityOptions

    def __init__(self, data_root: Any, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # common settings and `PerplexityOptions`
        self.positions = self.options.positions
        self.reference = self.options.reference

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """PPPL = exp(−Σ log-probabilities / Σ tokens) over the weighted passages, each passage's sum
        estimated from its scored tokens (exact when every token was scored; tables stored before
        sampling existed have no `scored` column and scored every token)."""
        tokens = weights @ table["tokens"].to_numpy(dtype=np.float64)
        scored = table["scored" if "scored" in table else "tokens"].to_numpy(dtype=np.float64)
        sampled_sum = table["sum_logprob"].to_numpy(dtype=np.float64)
        exact_part = np.zeros(len(table))
        if "reference_sum" in table:  # the difference estimator against a reference's exact sums
            sampled_sum = sampled_sum - table["reference_sampled_sum"].to_numpy(dtype=np.float64)
            exact_part = table["reference_sum"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            passage_sums = exact_part + np.where(
                scored > 0, sampled_sum * table["tokens"].to_numpy(dtype=np.float64) / scored, 0.0)
            total = weights @ passage_sums
            value = np.where(tokens > 0, np.exp(-total / tokens), np.nan)
        sampled = "sampled" in table and bool(table["sampled"].any())
        return {SAMPLED if sampled else EXACT: value}

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        texts = held_out_passages(self.data_root, self.limit)
        requests, owners, scorable = pppl_requests(texts, tokenizer, max_length=self.max_length,
                                                   positions=self.positions, seed=self.seed)
        logprobs = score_masked(model, requests, batch_size=self.batch_size, pad_id=tokenizer.pad_token_id or 0,
                                fast_path=self.fast_path)
        table = passage_table(texts, owners, logprobs)
        table.insert(2, "tokens", np.asarray(scorable, dtype=np.int64))
        table["sampled"] = self.positions is not None
        if self.reference is not None:
            self._add_reference(table, texts, tokenizer, requests, owners, model)
        table["pppl"] = np.exp(-table["sum_logprob"] / table["scored"].where(table["scored"] > 0))
        return BenchmarkResult(point_metrics(type(self), table), {"passages": table})

    def _add_reference(self, table: pd.DataFrame, texts: Sequence[str], tokenizer: Any,
                       requests: Sequence[MaskedRequest], owners: Sequence[int], model: Any) -> None:
        """Columns `reference_sum` (the reference's exact passage sum) and `reference_sampled_sum`
        (its sum over the tokens this checkpoint scored), for the difference estimator."""
        from ncsearch.evaluate._reference import reference_table

        if self.reference == "base":
            raise UserInputError("perplexity reference 'base' means a search's own model; outside a search, "
                                 "name the model (e.g. --option perplexity.reference=minilm-l6)")
        reference = reference_table(self.reference, texts, tokenizer, max_length=self.max_length,
                                    data_root=self.data_root, batch_size=self.batch_size,
                                    fast_path=self.fast_path, device=next(model.parameters()).device)
        sampled = np.zeros(len(texts))
        for request, passage in zip(requests, owners):
            sampled[passage] += float(reference.at(passage, request.positions).sum())
        table["reference_sum"] = reference.totals()
        table["reference_sampled_sum"] = sampled


def prepare_reference(options: dict[str, Any], *, data_root: Any, limit: int | None,
                      echo: Any = print) -> None:
    """Compute (or find) the cached reference table a search's trials will read, once, before they
    start: in the search's own process with every local core, instead of inside the first trial
    with one. `options` are the trial's perplexity options (`reference` already resolved)."""
    import time
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer

    from ncsearch.evaluate._reference import reference_cache_path, reference_table
    from ncsearch.models import ensure_model

    reference = (options or {}).get("reference")
    if not reference:
        return
    started = time.perf_counter()
    model_dir = ensure_model(reference, data_root=data_root)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)  # as ensure_model: never its code
    texts = held_out_passages(data_root, limit)
    if reference_cache_path(Path(model_dir), tokenizer, texts, max_length=PerplexityBenchmark.max_length).is_file():
        echo(f"perplexity reference: {reference} on {len(texts)} passages (cached)")
        return
    echo(f"perplexity reference: scoring every token of {len(texts)} passages with {reference}, once per model ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, os.cpu_count() or 1))
    try:
        reference_table(reference, texts, tokenizer, max_length=PerplexityBenchmark.max_length, data_root=data_root)
    finally:
        torch.set_num_threads(threads)
    echo(f"perplexity reference: done in {time.perf_counter() - started:.0f}s, cached for later searches")
