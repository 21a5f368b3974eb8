"""GLUE (Wang et al. 2019) by a short, seeded fine-tune: does the debiased encoder still transfer?

For each task (CoLA, MRPC, RTE, STS-B, WNLI) a copy of the model's encoder (the MLM head dropped)
gets a linear head on the mean-pooled last-layer states (the pooling SEAT uses; it needs no pooler,
which MLM checkpoints do not train) and is fine-tuned for a few epochs on a capped, seeded training
subset with AdamW and a linear warm-up/decay schedule; then it is scored on the (capped) dev set. The
model passed in is never modified.

Metrics (GLUE's, in percent as on the GLUE leaderboard): CoLA Matthews correlation, MRPC F1 (positive
class = paraphrase) and accuracy, RTE accuracy, STS-B Pearson and Spearman correlation, WNLI accuracy.
A task's score is its metric, or the mean of its two metrics (MRPC, STS-B) as GLUE does;
`glue/average` is the mean of the task scores. A correlation of constant predictions is undefined;
we report 0 (no detectable relation) so that a collapsed model gets a finite, bad score.

Deterministic given `seed`: the training subset, the batch order, the head initialisation and
dropout all come from the seed, in a forked RNG that leaves the caller's torch RNG untouched.

Uncertainty: dev examples are resampled within their task and every metric recomputed on the weighted
multiset (Spearman with the multiset's own average ranks). It covers the dev-set sample, not the
seed of the short fine-tune.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.errors import ConfigError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, Resampling, point_metrics, register

__all__ = ["TASKS", "GlueBenchmark", "GlueOptions", "GlueTask", "accuracy", "f1_binary", "glue_metrics", "matthews_corr", "pearson",
           "spearman"]


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones((1, n)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))


def _confusion(labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Weighted (TP, TN, FP, FN), each a (B,) array, for label 1 as the positive class."""
    truth, guess = np.asarray(labels) == 1, np.asarray(predictions) == 1
    w = _weights(weights, truth.size)
    return tuple(w @ cell.astype(np.float64) for cell in (truth & guess, ~truth & ~guess, ~truth & guess, truth & ~guess))


def weighted_accuracy(labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
    """Share of correct predictions per weight row (B,)."""
    w = _weights(weights, len(labels))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (w @ (np.asarray(labels) == np.asarray(predictions)).astype(np.float64)) / w.sum(axis=1)


def weighted_matthews(labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
    """Binary Matthews correlation (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) per weight row;
    0 when a margin is empty, as in scikit-learn."""
    tp, tn, fp, fn = _confusion(labels, predictions, weights)
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (tp * tn - fp * fn) / denominator, 0.0)


def weighted_f1(labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
    """F1 of the positive class (label 1), 2·TP / (2·TP + FP + FN), per weight row; 0 without any positive."""
    tp, _, fp, fn = _confusion(labels, predictions, weights)
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


def weighted_pearson(x: Sequence[float], y: Sequence[float], weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of the weighted multiset per weight row; 0 when either side is constant."""
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = _weights(weights, xs.size)
    total = w.sum(axis=1, keepdims=True)
    dx = xs[None, :] - (w @ xs)[:, None] / total
    dy = ys[None, :] - (w @ ys)[:, None] / total
    sxx, syy, sxy = (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1), (w * dx * dy).sum(axis=1)
    # Relative threshold: a constant side leaves only rounding error in its sum of squares.
    flat = (sxx <= 1e-24 * (w @ (xs * xs))) | (syy <= 1e-24 * (w @ (ys * ys))) | (total[:, 0] < 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flat, 0.0, sxy / np.sqrt(sxx * syy))


def _weighted_ranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, n) average ranks of each value within the weighted multiset of its row (ties share ranks)."""
    unique, inverse = np.unique(values, return_inverse=True)
    per_value = np.zeros((w.shape[0], unique.size))
    np.add.at(per_value.T, inverse, w.T)
    before = np.cumsum(per_value, axis=1) - per_value
    return (before + (per_value + 1.0) / 2.0)[:, inverse]


def weighted_spearman(x: Sequence[float], y: Sequence[float], weights: np.ndarray | None = None) -> np.ndarray:
    """Spearman rank correlation (average ranks for ties) of the weighted multiset per weight row;
    0 when either side is constant."""
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = _weights(weights, xs.size)
    rx, ry = _weighted_ranks(xs, w), _weighted_ranks(ys, w)
    total = w.sum(axis=1, keepdims=True)
    dx = rx - (w * rx).sum(axis=1, keepdims=True) / total
    dy = ry - (w * ry).sum(axis=1, keepdims=True) / total
    sxx, syy, sxy = (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1), (w * dx * dy).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sxx <= 0) | (syy <= 0), 0.0, sxy / np.sqrt(sxx * syy))


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    return float(weighted_accuracy(labels, predictions)[0]) if len(labels) else float("nan")


def matthews_corr(labels: Sequence[int], predictions: Sequence[int]) -> float:
    return float(weighted_matthews(labels, predictions)[0])


def f1_binary(labels: Sequence[int], predictions: Sequence[int]) -> float:
    return float(weighted_f1(labels, predictions)[0])


def pearson(labels: Sequence[float], predictions: Sequence[float]) -> float:
    return float(weighted_pearson(labels, predictions)[0]) if len(labels) >= 2 else 0.0


def spearman(labels: Sequence[float], predictions: Sequence[float]) -> float:
    return float(weighted_spearman(labels, predictions)[0]) if len(labels) >= 2 else 0.0


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its file folder, its label count (1 = regression) and its metrics, main ones first."""

    folder: str
    num_labels: int
    metrics: tuple[str, ...]

    def evaluate(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The task's metrics in percent, one (B,) array each: `predictions` are the regression
        outputs (STS-B) or the predicted classes, `weights` (B, examples) row weights (None: 1)."""
        functions = {"pearson": weighted_pearson, "spearman": weighted_spearman, "mcc": weighted_matthews,
                     "f1": weighted_f1, "acc": weighted_accuracy}
        return {name: 100.0 * functions[name](labels, predictions, weights) for name in self.metrics}


TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", 2, ("mcc",)),
    "mrpc": GlueTask("MRPC", 2, ("f1", "acc")),
    "rte": GlueTask("RTE", 2, ("acc",)),
    "stsb": GlueTask("STS-B", 1, ("pearson", "spearman")),
    "wnli": GlueTask("WNLI", 2, ("acc",)),
}


def _sample(frame: pd.DataFrame, cap: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """At most `cap` rows, a seeded sample in file order (GLUE files are sometimes sorted by label)."""
    if cap is None or cap >= len(frame):
        return frame.reset_index(drop=True)
    return frame.iloc[np.sort(rng.choice(len(frame), size=cap, replace=False))].reset_index(drop=True)


class _Classifier:
    """The encoder copy plus a linear head on mean-pooled states (a plain holder, not an nn.Module,
    so that the pieces stay visible)."""

    def __init__(self, model: Any, num_labels: int, dropout: float):
        import torch

        from ncsearch.heads import unwrap

        self.encoder = copy.deepcopy(unwrap(model).base_model)
        width = self.encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(width, num_labels)
        torch.nn.init.normal_(self.head.weight, std=0.02)
        torch.nn.init.zeros_(self.head.bias)
        device = next(self.encoder.parameters()).device
        self.head.to(device)
        self.device = device

    def parameters(self) -> list:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def train(self, mode: bool) -> None:
        self.encoder.train(mode)
        self.dropout.train(mode)

    def __call__(self, input_ids, attention_mask):
        from ncsearch.evaluate._scoring import mean_pool
        from ncsearch.heads import encode

        hidden = encode(self.encoder, input_ids, attention_mask)
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))


def glue_metrics(table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """`glue/<task>/<metric>` and `glue/average` from the per-dev-example table (columns task, label,
    prediction) with row weights (B, rows). A task's score is its metric or the mean of its two;
    the average is the mean of the task scores, as GLUE reports them."""
    metrics: dict[str, np.ndarray] = {}
    task_scores = []
    tasks = table["task"].to_numpy()
    for key in dict.fromkeys(tasks):
        rows = tasks == key
        part = table[rows]
        task = TASKS[key]
        predictions = part["prediction"].to_numpy(dtype=np.float64)
        labels = part["label"].to_numpy(dtype=np.float64)
        if task.num_labels > 1:
            predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
        scores = task.evaluate(labels, predictions, weights[:, rows])
        metrics |= {f"glue/{key}/{name}": value for name, value in scores.items()}
        task_scores.append(np.mean([scores[name] for name in task.metrics], axis=0))
    metrics["glue/average"] = np.mean(task_scores, axis=0) if task_scores else np.full(weights.shape[0], np.nan)
    return metrics


PositiveInt = Annotated[int, Field(ge=1)]


class GlueOptions(StrictOptions):
    """Options of `glue` (`eval.options.glue`): which tasks, and the short fine-tune of each."""

    #: GLUE tasks to fine-tune and score (a list or tuple).
    tasks: Annotated[list[Literal[tuple(TASKS)]], Field(min_length=1, strict=False)] = Field(default_factory=lambda: list(TASKS))  # type: ignore[valid-type]
    #: Training examples per task (a seeded sample); `limit`, when given, takes its place.
    max_train: PositiveInt = 1000
    #: Dev examples per task (a seeded sample); `limit`, when given, takes its place.
    max_dev: PositiveInt = 1000
    epochs: PositiveInt = 3
    #: At most this many optimizer steps per task.
    max_steps: PositiveInt = 200
    train_batch_size: PositiveInt = 16
    #: Learning rate of the encoder, and of the new classification head.
    lr: Annotated[float, Field(gt=0)] = 5e-5
    head_lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    #: Dropout before the head.
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    #: Tokens per (pair of) sentence(s), truncated beyond.
    max_length: Annotated[int, Field(ge=8)] = 128


@register
class GlueBenchmark(Benchmark):
    """Short seeded fine-tunes on CoLA, MRPC, RTE, STS-B and WNLI.

    `limit` caps both the training subset and the dev set of every task (seeded samples); without it
    the caps are `max_train` and `max_dev`. Training runs `epochs` passes over the subset with batches
    of `train_batch_size`, at most `max_steps` steps.
    """

    name = "glue"
    resampling = Resampling("examples", "dev examples", key=("task", "example"), strata=("task",))
    headline = ("glue/average",)
    Options = GlueOptions

    @classmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        return glue_metrics(table, weights)

    def __init__(self, data_root: Path, **kwargs: Any):
        super().__init__(data_root, **kwargs)  # limit, batch_size, seed, domains and `GlueOptions`
        limit, o = self.limit, self.options
        if limit is not None and limit < 2:
            raise ConfigError(f"glue limit must be at least 2, got {limit}")
        self.tasks = tuple(o.tasks)
        self.max_train = limit if limit is not None else o.max_train
        self.max_dev = limit if limit is not None else o.max_dev
        self.epochs, self.max_steps, self.train_batch_size = o.epochs, o.max_steps, o.train_batch_size
        self.lr, self.head_lr, self.weight_decay = float(o.lr), float(o.head_lr), float(o.weight_decay)
        self.warmup_ratio, self.dropout, self.max_length = float(o.warmup_ratio), float(o.dropout), o.max_length

    def _encode(self, tokenizer: Any, frame: pd.DataFrame) -> list[list[int]]:
        ids = []
        for first, second in zip(frame["sentence1"], frame["sentence2"]):
            pair = (first,) if second is None else (first, second)
            ids.append(tokenizer(*pair, truncation=True, max_length=self.max_length)["input_ids"])
        return ids

    @staticmethod
    def _batch(ids: list[list[int]], rows: Sequence[int], pad_id: int, device: Any):
        from ncsearch._batching import pad_batch

        input_ids, mask = pad_batch([ids[i] for i in rows], pad_id)
        return input_ids.to(device), mask.to(device)

    def _fine_tune(self, clf: _Classifier, ids: list[list[int]], labels: Any, pad_id: int,
                   rng: np.random.Generator) -> tuple[int, list[float]]:
        """AdamW with linear warm-up and decay over `epochs` shuffled passes, at most `max_steps` steps."""
        import torch

        from ncsearch.training import adamw, linear_warmup_decay

        steps_per_epoch = math.ceil(len(ids) / self.train_batch_size)
        total = max(1, min(self.max_steps, self.epochs * steps_per_epoch))
        head = {"params": list(clf.head.parameters()), "lr": self.head_lr, "weight_decay": 0.0}
        optimizer = adamw(clf.encoder, lr=self.lr, weight_decay=self.weight_decay, extra_groups=[head])
        schedule = linear_warmup_decay(optimizer, total, int(self.warmup_ratio * total))
        regression = clf.head.out_features == 1
        clf.train(True)
        losses: list[float] = []
        while len(losses) < total:
            order = rng.permutation(len(ids))
            for start in range(0, len(ids), self.train_batch_size):
                if len(losses) == total:
                    break
                rows = order[start : start + self.train_batch_size].tolist()
                input_ids, mask = self._batch(ids, rows, pad_id, clf.device)
                logits = clf(input_ids, mask).float()
                target = labels[rows].to(clf.device)
                if regression:
                    loss = torch.nn.functional.mse_loss(logits[:, 0], target)
                else:
                    loss = torch.nn.functional.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
        clf.train(False)
        return total, losses

    def _predict(self, clf: _Classifier, ids: list[list[int]], pad_id: int) -> np.ndarray:
        """Head outputs (N, num_labels) for every sequence, in length-sorted batches."""
        import torch

        outputs = np.zeros((len(ids), clf.head.out_features))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                input_ids, mask = self._batch(ids, rows, pad_id, clf.device)
                outputs[rows] = clf(input_ids, mask).double().cpu().numpy()
        return outputs

    def _run_task(self, model: Any, tokenizer: Any, key: str) -> tuple[dict[str, Any], pd.DataFrame]:
        """Fine-tune a copy on the task's training subset; (a summary, the per-dev-example predictions)."""
        import torch

        from ncsearch.data import load_glue

        task = TASKS[key]
        # The task's own number seeds it, so a task's result does not depend on which others run.
        number = list(TASKS).index(key)
        rng = np.random.default_rng([self.seed, number])
        train = _sample(load_glue(self.data_root, task.folder, "train"), self.max_train, rng)
        dev = _sample(load_glue(self.data_root, task.folder, "dev"), self.max_dev, rng)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        labels = torch.tensor(train["label"].to_numpy(), dtype=torch.float32 if task.num_labels == 1 else torch.long)
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(self.seed * 1000 + number)
            clf = _Classifier(model, task.num_labels, self.dropout)
            steps, losses = self._fine_tune(clf, self._encode(tokenizer, train), labels, pad_id, rng)
            outputs = self._predict(clf, self._encode(tokenizer, dev), pad_id)
        predictions = outputs[:, 0] if task.num_labels == 1 else outputs.argmax(axis=1)
        examples = pd.DataFrame({"task": key, "example": np.arange(len(dev)), "label": dev["label"].to_numpy(),
                                 "prediction": predictions})
        summary = {"task": key, "train_examples": len(train), "dev_examples": len(dev), "steps": steps,
                   "first_loss": losses[0], "last_loss": losses[-1]}
        return summary, examples

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        from ncsearch.evaluate._shard import map_shards

        # Each task seeds itself, so a trial's workers can fine-tune different tasks (`_shard`).
        done = map_shards(list(self.tasks), lambda key: self._run_task(model, tokenizer, key))
        summaries = [summary for summary, _ in done]
        examples = [predictions for _, predictions in done]
        table = pd.concat(examples, ignore_index=True)
        metrics = point_metrics(type(self), table)
        tasks = pd.DataFrame.from_records(summaries)
        for name in ("mcc", "f1", "acc", "pearson", "spearman"):
            tasks[name] = [metrics.get(f"glue/{key}/{name}", np.nan) for key in tasks["task"]]
        return BenchmarkResult(metrics, {"tasks": tasks, "examples": table})
