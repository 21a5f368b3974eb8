"""Held-out neural collapse on a vocabulary subset V: the regularizer's own target, measured on text
that no training path reads.

The NC3 paper's claim is that collapse on fairness-sensitive words goes with fairness. Train-time
UNC3 is measured on the very batches the regularizer pushes on; this benchmark measures it again on
held-out GAP validation passages (the text pseudo-perplexity uses), so that a search can ask whether
the collapse the regularizer bought generalises and whether it tracks any fairness metric.

One unmasked forward pass per passage; at every position the feature (last encoder layer, or the
MLM transform's output with `features="head"`) is paired with the token at t + `label_shift` (the
paper's observation setting is all positions). Only pairs whose token is in V count, about 2% of the
tokens, so with `fast_path` the last layer is computed at those positions alone (the row encoder,
`_row_encoder.py`: a third less time on MiniLM-L6). With class means mu_c over V's classes with at least
`min_count` tokens and mu_G their unweighted mean, s_c = cos(W_c, mu_c − mu_G) against the decoder
rows W_c; `unc3` = the sample std of s_c and `nc3` = 1 − mean(s_c), the definitions of the
regularizer (`ncsearch.collapse`).

V is given as token ids (`vocab_ids`, what a trial trained with), or else built from the gender word
lists under policy `single`. Uncertainty: classes (the words of V) are resampled, and mu_G and every
s_c are recomputed for each resample, as `ncsearch collapse` does for its intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.errors import ConfigError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register

__all__ = ["CollapseBenchmark", "CollapseOptions", "collapse_from_weights"]


def collapse_from_weights(table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """`collapse/unc3` and `collapse/nc3` of the weighted multiset of classes (rows: `mean` mu_c and
    `weight` W_c vectors), each (B,)."""
    mu = np.asarray(table["mean"].tolist(), dtype=np.float64).reshape(len(table), -1)
    w_rows = np.asarray(table["weight"].tolist(), dtype=np.float64).reshape(len(table), -1)
    total = weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_g = (weights @ mu) / total  # (B, d)
        along = (w_rows * mu).sum(axis=1)[None, :] - mu_g @ w_rows.T  # W_c · (mu_c − mu_G)
        norm2 = (mu * mu).sum(axis=1)[None, :] - 2 * mu_g @ mu.T + (mu_g * mu_g).sum(axis=1, keepdims=True)
        cos = along / np.maximum(np.linalg.norm(w_rows, axis=1)[None, :] * np.sqrt(np.maximum(norm2, 0.0)), 1e-12)
        mean = (weights * cos).sum(axis=1) / total[:, 0]
        var = (weights * (cos - mean[:, None]) ** 2).sum(axis=1) / (total[:, 0] - 1.0)
    return {"collapse/unc3": np.sqrt(np.where(var >= 0, var, np.nan)), "collapse/nc3": 1.0 - mean}


class CollapseOptions(StrictOptions):
    """Options of `collapse` (`eval.options.collapse`); a trial sets the first three to its own V and
    NC3 settings unless the spec does."""

    #: The token ids of V (a list or tuple); None: the gender word lists under policy `single`.
    vocab_ids: Annotated[list[int], Field(strict=False)] | None = None
    #: Last encoder layer, or the MLM transform's output.
    features: Literal["encoder", "head"] = "encoder"
    #: The feature at t is paired with the token at t + `label_shift`.
    label_shift: Literal[0, 1] = 0
    #: Tokens per passage, truncated beyond.
    max_length: Annotated[int, Field(ge=8)] = 64
    #: Classes of V with fewer tokens than this are left out.
    min_count: Annotated[int, Field(ge=1)] = 2


@register
class CollapseBenchmark(Benchmark):
    """NC3 / UNC3 on V over held-out GAP validation passages (`limit`: the first N passages)."""

    name = "collapse"
    datasets = ("gap", "words")  # GAP validation passages; the gender word lists
    resampling = Resampling("classes", "vocabulary classes (words of V)", key=("token_id",))
    headline = ("collapse/unc3",)

    Options = CollapseOptions

    def __init__(self, data_root: Path, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # limit, batch_size, seed, domains and `CollapseOptions`
        o = self.options
        self.vocab_ids = None if o.vocab_ids is None else [int(i) for i in o.vocab_ids]
        self.features, self.label_shift = o.features, o.label_shift
        self.max_length, self.min_count = o.max_length, o.min_count

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        return collapse_from_weights(table, weights)

    def _vocabulary(self, tokenizer: Any) -> list[int]:
        if self.vocab_ids is not None:
            return self.vocab_ids
        from ncsearch.vocab import build_vocab

        return build_vocab(tokenizer, source="gender", data_root=self.data_root).token_ids

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        import torch

        from ncsearch._batching import pad_batch
        from ncsearch.collapse import ClassStatistics, pair_positions
        from ncsearch.data import load_gap_corpus
        from ncsearch.evaluate._row_encoder import RowEncoder, encode_rows
        from ncsearch.evaluate._shard import map_shards
        from ncsearch.heads import mlm_head

        texts = load_gap_corpus(self.data_root, splits=("validation",))
        if self.limit is not None:
            texts = texts[: self.limit]
        ids = tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        vocab = self._vocabulary(tokenizer)
        if not vocab:
            raise ConfigError("collapse: the vocabulary subset has no token of this model")
        stats = ClassStatistics(vocab, min_count=self.min_count)
        head = mlm_head(model)
        device = next(model.parameters()).device
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        was_training = model.training
        model.eval()
        row_encoder = RowEncoder.for_model(model) if self.fast_path else None

        def pairs(batch: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            """The batch's (feature, label) pairs whose label is in V (the only ones the statistics keep)."""
            input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            where, labels = pair_positions(input_ids=input_ids, labels=None, attention_mask=mask,
                                           positions="all", label_shift=self.label_shift)
            kept = torch.isin(labels, in_vocab)
            where, labels = where[kept], labels[kept]
            if not len(labels):
                return torch.zeros(0, head.weight.shape[1]), labels.cpu()
            features = encode_rows(model, input_ids, mask, where, row_encoder)
            if self.features == "head":
                features = head.transform(features)
            return features.cpu(), labels.cpu()

        in_vocab = torch.tensor(vocab, dtype=torch.long, device=device)
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        try:
            with torch.inference_mode():
                # A trial's workers split the batches; every rank then adds every batch, in order.
                for features, labels in map_shards(batches, pairs):
                    stats.update(features.to(device), labels.to(device))
                summary = stats.summary(head.weight)
        finally:
            model.train(was_training)
        if summary.classes < 2:
            raise ConfigError(f"collapse: only {summary.classes} class(es) of V occur at least {self.min_count} times "
                              f"in {len(texts)} held-out passages; raise its limit")
        table = pd.DataFrame({
            "token_id": summary.token_ids.tolist(),
            "word": tokenizer.convert_ids_to_tokens(summary.token_ids.tolist()),
            "count": summary.counts.numpy().astype(np.int64),
            "mean": [row.astype(np.float32).tolist() for row in summary.means.numpy()],
            "weight": [row.astype(np.float32).tolist() for row in summary.weight.numpy()],
        })
        metrics = point_metrics(type(self), table)
        metrics["collapse/classes"] = float(summary.classes)
        return BenchmarkResult(metrics, {"classes": table})
