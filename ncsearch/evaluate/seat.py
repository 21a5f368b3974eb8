"""SEAT, the Sentence Encoder Association Test (May et al. 2019), as bias-bench runs it.

Each test has two target sets X, Y (e.g. male / female names, in sentence templates) and two
attribute sets A, B (career / family). With s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b):

- effect size d = (mean_{x in X} s(x) - mean_{y in Y} s(y)) / std_{w in X u Y} s(w), the standard
  deviation with ddof=1 (bias-bench `weat.stdev_s_wAB`);
- one-sided permutation p-value = P[sum_{x in X'} s(x) >= sum_{x in X} s(x)] over equal-size
  partitions (X', Y') of X u Y. Ties count (bias-bench's "conservative test"). When the number of
  partitions C(2n, n) is at most `n_samples` (bias-bench: 100,000) every partition is enumerated;
  otherwise bias-bench draws `n_samples - 1` random partitions and adds one hallucinated success
  ("biasing by 1"), p = (1 + #{sampled >= observed}) / n_samples. Here the draws come from a
  `numpy.random.default_rng(seed)` per test, so each test's p-value does not depend on which other
  tests ran (bias-bench seeds the global numpy RNG once per run).

Sentence embedding (bias-bench `seat._encode`): the mean of the last encoder layer over all tokens of
the sentence, [CLS] and [SEP] included (we mask out padding only), then L2-normalised; `pooling="cls"`
takes the first token instead. Sentences are de-duplicated within a set, as bias-bench's
text-keyed dicts do. All sentences of all requested tests are encoded once, in length-sorted batches.

Reference checked: McGill-NLP/bias-bench `bias_bench/benchmark/seat/seat.py` and `weat.py`.

Uncertainty: the test's sentences are resampled within each of its four sets (X, Y, A, B), and the
effect size is recomputed from the resampled associations (weighted means, the ddof=1 std of the
resampled multiset). The per-sentence table keeps each unit-length embedding (`vector`) for that. The
permutation p-value is the test's own, computed once on the sentences as scored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.errors import ConfigError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register

__all__ = [
    "DEFAULT_TESTS",
    "SeatOptions",
    "seat_metrics",
    "SeatBenchmark",
    "association",
    "effect_size",
    "encode_sentences",
    "permutation_p_value",
]

# The gender tests of May et al. in their sentence versions (bias-bench file names without .jsonl).
DEFAULT_TESTS = ("sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b", "sent-weat8", "sent-weat8b")

# bias-bench's default number of permutation samples (experiments/seat.py --n_samples).
N_SAMPLES = 100_000
_CHUNK = 4096


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def association(words: np.ndarray, attr_a: np.ndarray, attr_b: np.ndarray) -> np.ndarray:
    """s(w, A, B) for every row w of `words`: mean cosine to A minus mean cosine to B."""
    w = _unit_rows(words)
    return (w @ _unit_rows(attr_a).T).mean(axis=1) - (w @ _unit_rows(attr_b).T).mean(axis=1)


def effect_size(x: np.ndarray, y: np.ndarray, attr_a: np.ndarray, attr_b: np.ndarray) -> float:
    """WEAT effect size of target vectors `x`, `y` against attribute vectors `attr_a`, `attr_b`."""
    s_x = association(x, attr_a, attr_b)
    s_y = association(y, attr_a, attr_b)
    return float((s_x.mean() - s_y.mean()) / np.concatenate([s_x, s_y]).std(ddof=1))


def _subset_sums(s: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """sum_{i in subset} s[i] per row of `subsets`, added sequentially in ascending index order so that
    the same set always gives bit-identical sums (ties with the observed partition are exact)."""
    return np.cumsum(s[np.sort(subsets, axis=1)], axis=1)[:, -1]


def permutation_p_value(
    s_x: np.ndarray,
    s_y: np.ndarray,
    *,
    n_samples: int = N_SAMPLES,
    rng: np.random.Generator | None = None,
) -> float:
    """One-sided permutation p-value of the WEAT statistic from the per-word associations.

    The statistic sum_{x in X'} s(x) is equivalent to s(X', Y', A, B) because the total over X u Y is
    fixed. Exact over all C(2n, n) partitions when that count is <= `n_samples`, else sampled.
    """
    s_x = np.asarray(s_x, dtype=np.float64)
    s_y = np.asarray(s_y, dtype=np.float64)
    n = len(s_x)
    if n != len(s_y) or n == 0:
        raise ValueError(f"SEAT needs two non-empty target sets of equal size, got {n} and {len(s_y)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, but got {n_samples}")
    s = np.concatenate([s_x, s_y])
    observed = _subset_sums(s, np.arange(n)[None, :])[0]
    if math.comb(2 * n, n) <= n_samples:
        hits = total = 0
        combos = itertools.combinations(range(2 * n), n)
        while chunk := list(itertools.islice(combos, _CHUNK)):
            hits += int((_subset_sums(s, np.array(chunk)) >= observed).sum())
            total += len(chunk)
        return hits / total
    rng = rng if rng is not None else np.random.default_rng(0)
    hits, total = 1, 1  # bias-bench's hallucinated positive observation
    remaining = n_samples - 1
    while remaining:
        size = min(_CHUNK, remaining)
        # The n smallest of 2n uniform keys: a uniformly random n-subset.
        subsets = np.argpartition(rng.random((size, 2 * n)), n - 1, axis=1)[:, :n]
        hits += int((_subset_sums(s, subsets) >= observed).sum())
        total += size
        remaining -= size
    return hits / total


def encode_sentences(
    model: Any,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 64,
    pooling: Literal["mean", "cls"] = "mean",
) -> np.ndarray:
    """L2-normalised sentence embeddings (len(sentences), d) from the last encoder layer.

    Batches are formed from length-sorted sentences, so padding is small; padding is excluded from
    the mean by the attention mask.
    """
    import torch

    from ncsearch._batching import pad_batch
    from ncsearch.evaluate._scoring import mean_pool
    from ncsearch.evaluate._shard import map_shards
    from ncsearch.heads import encode

    if pooling not in ("mean", "cls"):
        raise ConfigError(f"seat pooling must be 'mean' or 'cls', got {pooling!r}")
    ids = [tokenizer(text, add_special_tokens=True)["input_ids"] for text in sentences]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(ids)
    was_training = model.training
    model.eval()
    def embed(batch: list[int]) -> np.ndarray:
        input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
        hidden = encode(model, input_ids.to(device), mask.to(device)).double()
        pooled = hidden[:, 0] if pooling == "cls" else mean_pool(hidden, mask.to(device))
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()

    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    try:
        with torch.inference_mode():
            for batch, pooled in zip(batches, map_shards(batches, embed)):  # a trial's workers split the batches
                for row, i in enumerate(batch):
                    out[i] = pooled[row]
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0))
    return np.stack(out)  # type: ignore[arg-type]


def seat_metrics(table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """`seat/<test>/effect_size` and `seat/mean_abs_effect_size` from the per-sentence table (columns
    test, role in targ1/targ2/attr1/attr2, vector: the unit-length embedding) with row weights (B, rows).

    With weights, s(w) = Σ_a w_a cos(w, a) / Σ w_a − Σ_b w_b cos(w, b) / Σ w_b, and d = (weighted mean
    of s over X − over Y) / the sample std (ddof=1) of s over the weighted multiset X ∪ Y; at weight 1
    this is exactly `effect_size`."""
    tests = list(dict.fromkeys(table["test"]))
    roles = table["role"].to_numpy()
    test_of_row = table["test"].to_numpy()
    vectors = np.asarray(table["vector"].tolist(), dtype=np.float64)
    metrics: dict[str, np.ndarray] = {}
    sizes = []
    for test in tests:
        rows = {role: np.flatnonzero((test_of_row == test) & (roles == role)) for role in ("targ1", "targ2", "attr1", "attr2")}
        targets = np.concatenate([rows["targ1"], rows["targ2"]])
        w_t = weights[:, targets]
        s = np.zeros_like(w_t)
        for role, sign in (("attr1", 1.0), ("attr2", -1.0)):
            cos = vectors[targets] @ vectors[rows[role]].T  # (targets, attributes)
            w_a = weights[:, rows[role]]
            s += sign * (w_a @ cos.T) / w_a.sum(axis=1, keepdims=True)
        n_x = rows["targ1"].size
        w_x, w_y = w_t[:, :n_x], w_t[:, n_x:]
        mean_x = (w_x * s[:, :n_x]).sum(axis=1) / w_x.sum(axis=1)
        mean_y = (w_y * s[:, n_x:]).sum(axis=1) / w_y.sum(axis=1)
        total = w_t.sum(axis=1)
        mean = (w_t * s).sum(axis=1) / total
        with np.errstate(divide="ignore", invalid="ignore"):
            std = np.sqrt((w_t * (s - mean[:, None]) ** 2).sum(axis=1) / (total - 1.0))
            metrics[f"seat/{test}/effect_size"] = (mean_x - mean_y) / std
        sizes.append(np.abs(metrics[f"seat/{test}/effect_size"]))
    metrics["seat/mean_abs_effect_size"] = np.mean(sizes, axis=0) if sizes else np.full(weights.shape[0], np.nan)
    return metrics


class SeatOptions(StrictOptions):
    """Options of `seat` (`eval.options.seat`)."""

    #: SEAT tests to run (file names under seat/ without .jsonl; a missing one is a DataError). A list or tuple.
    tests: Annotated[list[str], Field(min_length=1, strict=False)] = Field(default_factory=lambda: list(DEFAULT_TESTS))
    #: Sentence embedding: mean over tokens, or the [CLS] state.
    pooling: Literal["mean", "cls"] = "mean"
    #: Permutation-test partitions (exact when C(2n, n) is at most this; bias-bench: 100,000).
    n_samples: Annotated[int, Field(ge=1)] = N_SAMPLES


@register
class SeatBenchmark(Benchmark):
    """SEAT effect sizes and p-values for the gender tests (weat6, 6b, 7, 7b, 8, 8b, sentence versions).

    `limit` caps each of the four sets of a test at `limit` sentences (a seeded sample, file order kept);
    `seed` drives that sample and the sampled permutation test.
    """

    name = "seat"
    resampling = Resampling("sentences", "sentences", key=("test", "role", "text"), strata=("test", "role"))
    headline = ("seat/mean_abs_effect_size",)
    bias_measures = ("seat/*effect_size",)
    Options = SeatOptions

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        return seat_metrics(table, weights)

    def __init__(self, data_root: Path, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # limit, batch_size, seed, domains and `SeatOptions`
        limit = self.limit
        if limit is not None and limit < 2:
            raise ConfigError(f"seat limit must be at least 2 (the effect size needs a spread), got {limit}")
        self.tests = tuple(self.options.tests)
        self.pooling = self.options.pooling
        self.n_samples = self.options.n_samples

    def _sets(self) -> dict[str, dict[str, list[str]]]:
        """{test: {"targ1": [...], "targ2": [...], "attr1": [...], "attr2": [...]}} after de-duplication
        and the optional limit (both target sets capped to the same size)."""
        from ncsearch.data import load_seat

        sets: dict[str, dict[str, list[str]]] = {}
        for number, test in enumerate(self.tests):
            loaded = load_seat(self.data_root, test)
            groups = {
                role: list(dict.fromkeys(getattr(loaded, role).examples))
                for role in ("targ1", "targ2", "attr1", "attr2")
            }
            if self.limit is not None:
                rng = np.random.default_rng([self.seed, number])
                target_size = min(self.limit, len(groups["targ1"]), len(groups["targ2"]))
                for role, examples in groups.items():
                    size = target_size if role.startswith("targ") else min(self.limit, len(examples))
                    keep = np.sort(rng.choice(len(examples), size=size, replace=False))
                    groups[role] = [examples[i] for i in keep]
            sets[test] = groups
        return sets

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        sets = self._sets()
        unique = list(dict.fromkeys(text for groups in sets.values() for texts in groups.values() for text in texts))
        vectors = encode_sentences(model, tokenizer, unique, batch_size=self.batch_size, pooling=self.pooling)
        row = {text: i for i, text in enumerate(unique)}

        sentences = pd.DataFrame.from_records(
            [{"test": test, "role": role, "text": text, "vector": vectors[row[text]].astype(np.float32).tolist()}
             for test, groups in sets.items() for role, texts in groups.items() for text in texts]
        )
        metrics = point_metrics(type(self), sentences)
        records = []
        for test, groups in sets.items():
            x, y, a, b = (vectors[[row[t] for t in groups[role]]] for role in ("targ1", "targ2", "attr1", "attr2"))
            p_value = permutation_p_value(
                association(x, a, b),
                association(y, a, b),
                n_samples=self.n_samples,
                rng=np.random.default_rng(self.seed),
            )
            metrics[f"seat/{test}/p_value"] = p_value
            records.append({"test": test, "effect_size": metrics[f"seat/{test}/effect_size"], "p_value": p_value}
                           | {f"n_{role}": len(texts) for role, texts in groups.items()})
        return BenchmarkResult(metrics, {"tests": pd.DataFrame.from_records(records), "sentences": sentences})
