"""Held-out masked-LM loss at fixed seeded masks: a cheaper performance measure than pseudo-perplexity.

Pseudo-perplexity masks one token per forward pass. This benchmark masks `mlm_probability` of each
passage's tokens at once (at least one), `masks` times per passage with different seeded patterns,
and reads the log-probability of every masked token from the same pass: several scored tokens per
pass instead of one. The passages are pseudo-perplexity's (held-out GAP validation, truncated to 64
tokens); the patterns are drawn by a generator seeded with (eval seed, passage, pattern), so every
checkpoint is scored on the same masks and differences between checkpoints are paired token by token.
Masked tokens become [MASK] (no 80/10/10 replacement: that is a training device, not part of what
is measured).

`heldout_mlm/loss` is the mean negative log-probability per masked token (nats; lower is better).
It is not pseudo-perplexity: each token sees less context (15% of its neighbours are masked too),
so its level is higher. It is a different metric, offered as an objective only where it ranks
checkpoints as pseudo-perplexity does; bench/trial_cost.py and the README report how well it does.

Uncertainty: passages are resampled (a passage's patterns and tokens stay together).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register
from ncsearch.evaluate._scoring import MaskedRequest, score_masked
from ncsearch.evaluate.perplexity import PerplexityBenchmark, held_out_passages, passage_table

__all__ = ["HeldoutMLMBenchmark", "HeldoutMLMOptions", "masked_requests"]

LOSS = "heldout_mlm/loss"


def masked_requests(
    texts: Sequence[str], tokenizer: Any, *, max_length: int, masks: int, mlm_probability: float, seed: int
) -> tuple[list[MaskedRequest], list[int]]:
    """`masks` requests per passage, each masking round(mlm_probability x scorable tokens) (at
    least 1) of the passage's non-special tokens, and the passage index of each request."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    mask_id = tokenizer.mask_token_id
    requests: list[MaskedRequest] = []
    owners: list[int] = []
    for i, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"])):
        scorable = [position for position, is_special in enumerate(special) if not is_special]
        if not scorable:
            continue
        count = max(1, round(mlm_probability * len(scorable)))
        for pattern in range(masks):
            chosen = np.random.default_rng([seed, i, pattern]).choice(len(scorable), size=count, replace=False)
            positions = sorted(scorable[j] for j in chosen)
            masked = list(ids)
            for position in positions:
                masked[position] = mask_id
            requests.append(MaskedRequest(masked, positions, [ids[p] for p in positions]))
            owners.append(i)
    return requests, owners


class HeldoutMLMOptions(StrictOptions):
    """Options of `heldout_mlm` (`eval.options.heldout_mlm`)."""

    #: Seeded mask patterns per passage.
    masks: Annotated[int, Field(ge=1)] = 4
    #: Share of a passage's tokens each pattern masks.
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] = 0.15


@register
class HeldoutMLMBenchmark(Benchmark):
    """Masked-LM loss on held-out GAP validation passages at fixed seeded masks (lower is better)."""

    name = "heldout_mlm"
    datasets = ("gap",)
    max_length: ClassVar[int] = PerplexityBenchmark.max_length  # the same truncated passages
    resampling = Resampling("passages", "passages", key=("passage",))
    headline = (LOSS,)
    Options = HeldoutMLMOptions

    def __init__(self, data_root: Any, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # common settings and `HeldoutMLMOptions`
        self.masks, self.mlm_probability = self.options.masks, float(self.options.mlm_probability)

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Mean NLL per masked token over the weighted passages."""
        scored = weights @ table["scored"].to_numpy(dtype=np.float64)
        total = weights @ table["sum_logprob"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return {LOSS: np.where(scored > 0, -total / scored, np.nan)}

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        texts = held_out_passages(self.data_root, self.limit)
        requests, owners = masked_requests(texts, tokenizer, max_length=self.max_length, masks=self.masks,
                                           mlm_probability=self.mlm_probability, seed=self.seed)
        logprobs = score_masked(model, requests, batch_size=self.batch_size, pad_id=tokenizer.pad_token_id or 0,
                                fast_path=self.fast_path)
        table = passage_table(texts, owners, logprobs)
        return BenchmarkResult(point_metrics(type(self), table), {"passages": table})
