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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncsearch.errors import ConfigError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, register

__all__ = ["TASKS", "GlueBenchmark", "GlueTask", "accuracy", "f1_binary", "matthews_corr", "pearson", "spearman"]


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float((labels == predictions).mean()) if len(labels) else float("nan")


def _confusion(labels: Sequence[int], predictions: Sequence[int]) -> tuple[int, int, int, int]:
    labels, predictions = np.asarray(labels) == 1, np.asarray(predictions) == 1
    return (int((labels & predictions).sum()), int((~labels & ~predictions).sum()),
            int((~labels & predictions).sum()), int((labels & ~predictions).sum()))


def matthews_corr(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Binary Matthews correlation (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a
    margin is empty, as in scikit-learn."""
    tp, tn, fp, fn = _confusion(labels, predictions)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def f1_binary(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """F1 of the positive class (label 1): 2·TP / (2·TP + FP + FN); 0 when there is no positive at all."""
    tp, _, fp, fn = _confusion(labels, predictions)
    return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0


def pearson(labels: Sequence[float], predictions: Sequence[float]) -> float:
    """Pearson correlation; 0 when either side is constant (undefined)."""
    from scipy.stats import pearsonr

    labels, predictions = np.asarray(labels, float), np.asarray(predictions, float)
    if len(labels) < 2 or np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        return 0.0
    return float(pearsonr(labels, predictions).statistic)


def spearman(labels: Sequence[float], predictions: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    from scipy.stats import spearmanr

    labels, predictions = np.asarray(labels, float), np.asarray(predictions, float)
    if len(labels) < 2 or np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        return 0.0
    return float(spearmanr(labels, predictions).statistic)


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its file folder, its label count (1 = regression) and its metrics, main ones first."""

    folder: str
    num_labels: int
    metrics: tuple[str, ...]

    def evaluate(self, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        if self.num_labels == 1:
            scores = {"pearson": pearson(labels, outputs[:, 0]), "spearman": spearman(labels, outputs[:, 0])}
        else:
            predictions = outputs.argmax(axis=1)
            scores = {"mcc": matthews_corr(labels, predictions), "f1": f1_binary(labels, predictions),
                      "acc": accuracy(labels, predictions)}
        return {name: 100.0 * scores[name] for name in self.metrics}


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


@register
class GlueBenchmark(Benchmark):
    """Short seeded fine-tunes on CoLA, MRPC, RTE, STS-B and WNLI.

    `limit` caps both the training subset and the dev set of every task (seeded samples); without it
    the caps are `max_train` and `max_dev`. Training runs `epochs` passes over the subset with batches
    of `train_batch_size`, at most `max_steps` steps.
    """

    name = "glue"

    def __init__(
        self,
        data_root: Path,
        *,
        tasks: Sequence[str] = tuple(TASKS),
        max_train: int = 1000,
        max_dev: int = 1000,
        epochs: int = 3,
        max_steps: int = 200,
        train_batch_size: int = 16,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        dropout: float = 0.1,
        max_length: int = 128,
        **common: Any,
    ):
        super().__init__(data_root, **common)  # limit, batch_size, seed, domains
        limit = self.limit
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ConfigError(f"unknown GLUE task(s) {unknown or list(tasks)!r}; valid: {', '.join(TASKS)}")
        if limit is not None and limit < 2:
            raise ConfigError(f"glue limit must be at least 2, got {limit}")
        self.tasks = tuple(tasks)
        self.max_train = limit if limit is not None else max_train
        self.max_dev = limit if limit is not None else max_dev
        self.epochs, self.max_steps, self.train_batch_size = epochs, max_steps, train_batch_size
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.warmup_ratio, self.dropout, self.max_length = warmup_ratio, dropout, max_length

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

        steps_per_epoch = math.ceil(len(ids) / self.train_batch_size)
        total = max(1, min(self.max_steps, self.epochs * steps_per_epoch))
        warmup = int(self.warmup_ratio * total)
        decay = [p for p in clf.encoder.parameters() if p.ndim > 1]
        no_decay = [p for p in clf.encoder.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([
            {"params": decay, "lr": self.lr, "weight_decay": self.weight_decay},
            {"params": no_decay, "lr": self.lr, "weight_decay": 0.0},
            {"params": list(clf.head.parameters()), "lr": self.head_lr, "weight_decay": 0.0},
        ])

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
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

    def _run_task(self, model: Any, tokenizer: Any, key: str) -> tuple[dict[str, float], dict[str, Any]]:
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
        scores = task.evaluate(dev["label"].to_numpy(), outputs)
        summary = {"task": key, "train_examples": len(train), "dev_examples": len(dev), "steps": steps,
                   "first_loss": losses[0], "last_loss": losses[-1], **scores}
        return scores, summary

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        metrics: dict[str, float] = {}
        summaries, task_scores = [], []
        for key in self.tasks:
            scores, summary = self._run_task(model, tokenizer, key)
            metrics |= {f"glue/{key}/{name}": value for name, value in scores.items()}
            task_scores.append(float(np.mean([scores[name] for name in TASKS[key].metrics])))
            summaries.append(summary)
        metrics["glue/average"] = float(np.mean(task_scores))
        return BenchmarkResult(metrics, {"tasks": pd.DataFrame.from_records(summaries)})
