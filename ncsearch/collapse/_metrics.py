"""Neural-collapse metrics NC1-NC4 on a vocabulary subset V, from one streaming corpus pass (+ one for NC4).

Pass 1 (`ClassStatistics.update`) keeps, per class c ∈ V, the count n_c, the sum S_c and the sum of
squared norms Q_c = Σ ||x||²; the within-class variance is then var_c = Q_c / n_c − ||mu_c||² (the trace
of the class covariance, i.e. the mean squared distance to the class mean), accumulated in float64 so
the one-pass formula does not lose digits. Pass 2 (`update_agreement`) needs the final means for the
nearest-class-mean rule and counts, per class, the tokens on which it agrees with the linear classifier.

Definitions (classes with n_c >= min_count; k of them; mu_G the unweighted mean of their means):
- NC1: CDNV (Galanti et al.) averaged over class pairs c < c': (var_c + var_c') / (2 ||mu_c − mu_c'||²).
- NC2: equinorm = coefficient of variation std/mean of ||mu_c − mu_G||; equiangularity = std of the
  pairwise cosines of the centred means (plus their mean, which is −1/(k−1) for a simplex ETF).
- NC3: s_c = cos(W_c, mu_c − mu_G); reported as nc3 = 1 − mean(s_c), nc3_cos_mean and unc3 = std(s_c).
- NC4: fraction of tokens on which argmax_{c ∈ V}(W_c·x [+ b_c]) equals argmin_{c ∈ V} ||x − mu_c||.
Every std is the sample std (divisor n − 1), the convention of the regularizer's UNC3 (the paper's
`sims.std()`), so that `unc3` here and in training mean the same number.

Intervals (`bootstrap_intervals`) resample *classes*, not sentences: every metric is an average over
the classes (or class pairs) of V, and the question the study asks, "is the gender subset more
collapsed than a random subset of the same size", is a question about which words are in the subset;
the spread over word draws is the uncertainty that matters for that comparison, and it dominates the
corpus-sampling noise of per-class means estimated from many tokens. It is also cheap: each replicate
recomputes the metrics from the per-class summaries (O(k²·d)) instead of re-running the corpus, which
on this machine rules out a sentence bootstrap for NC4 (a k-way nearest-mean search per token and
replicate). Pairs of a class with its own duplicate are left out of the pair averages (NC1,
equiangularity), and NC4 keeps the full-V decision rules and averages agreement over the drawn classes.
The mean pairwise cosine gets no interval: it is pinned near −1/(k−1) by the number of distinct
classes (the centred means sum to zero), which a draw with duplicates changes, so its bootstrap
distribution is shifted by construction rather than by uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ncsearch.collapse._lookup import VocabIndex
from ncsearch.collapse._regularizer import cosine_rows

__all__ = ["METRIC_NAMES", "ClassStatistics", "ClassSummary", "bootstrap_intervals", "collapse_metrics"]

METRIC_NAMES = (
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc2_cos_mean",
    "nc3",
    "nc3_cos_mean",
    "unc3",
    "nc4",
)
_EPS = 1e-12
_NO_INTERVAL = frozenset({"nc2_cos_mean"})


@dataclass
class ClassSummary:
    """Per-class statistics of the classes kept for analysis (n_c >= min_count), in V order."""

    token_ids: Tensor  # (k,)
    counts: Tensor  # (k,) tokens per class
    means: Tensor  # (k, d)
    within_var: Tensor  # (k,) mean squared distance to the class mean
    weight: Tensor  # (k, d) decoder rows W_c
    agree: Tensor  # (k,) tokens where linear and nearest-mean predictions agree (pass 2)
    judged: Tensor  # (k,) tokens seen by pass 2
    vocab_size: int = 0  # |V|
    observed: int = 0  # classes with n_c > 0 (before min_count)
    _cdnv: Tensor | None = field(default=None, repr=False)

    @property
    def classes(self) -> int:
        return int(self.token_ids.numel())

    def cdnv_matrix(self) -> Tensor:
        """(k, k) CDNV of every class pair (diagonal is meaningless)."""
        if self._cdnv is None:
            dist2 = torch.cdist(self.means, self.means).pow(2)
            self._cdnv = (self.within_var[:, None] + self.within_var[None, :]) / (2 * dist2).clamp_min(_EPS)
        return self._cdnv


class ClassStatistics:
    """Streaming accumulator for the analysis metrics on V (features are never stored here)."""

    def __init__(self, vocab_ids: Sequence[int] | Tensor, *, min_count: int = 2, dtype: torch.dtype = torch.float64):
        self.index = VocabIndex(vocab_ids)
        self.min_count = int(min_count)
        self.dtype = dtype
        self.sums: Tensor | None = None
        self.sq_norms: Tensor | None = None
        self.counts: Tensor | None = None
        self.agree: Tensor | None = None
        self.judged: Tensor | None = None

    def _select(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        features = features.detach().reshape(-1, features.shape[-1])
        if self.sums is None:
            k, d, device = len(self.index), features.shape[-1], features.device
            self.index.to(device)
            self.sums = torch.zeros(k, d, dtype=self.dtype, device=device)
            self.sq_norms = torch.zeros(k, dtype=self.dtype, device=device)
            self.counts = torch.zeros(k, dtype=self.dtype, device=device)
            self.agree = torch.zeros(k, dtype=self.dtype, device=device)
            self.judged = torch.zeros(k, dtype=self.dtype, device=device)
        rows = self.index.rows(labels.reshape(-1))
        keep = (rows >= 0).nonzero(as_tuple=True)[0]
        return features.index_select(0, keep).to(self.dtype), rows.index_select(0, keep)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Pass 1: class sums, sums of squared norms and counts."""
        x, rows = self._select(features, labels)
        self.sums.index_add_(0, rows, x)
        self.sq_norms.index_add_(0, rows, x.pow(2).sum(-1))
        self.counts.index_add_(0, rows, torch.ones_like(rows, dtype=self.dtype))

    def eligible(self) -> Tensor:
        """Rows of V with at least `min_count` tokens (the classes the metrics are over)."""
        if self.counts is None:
            return torch.zeros(0, dtype=torch.long)
        return (self.counts >= self.min_count).nonzero(as_tuple=True)[0]

    def means(self) -> Tensor:
        if self.sums is None:
            raise RuntimeError("ClassStatistics.means() before any update()")
        return self.sums / self.counts.clamp_min(1)[:, None]

    @torch.no_grad()
    def update_agreement(self, features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor | None = None) -> None:
        """Pass 2 (after pass 1 is complete): linear-vs-nearest-mean agreement per class."""
        rows_e = self.eligible()
        if rows_e.numel() == 0:
            return
        x, rows = self._select(features, labels)
        # only tokens of eligible classes are judged; predictions range over eligible classes
        position = torch.full((len(self.index),), -1, dtype=torch.long, device=rows.device)
        position[rows_e] = torch.arange(rows_e.numel(), device=rows.device)
        keep = (position[rows] >= 0).nonzero(as_tuple=True)[0]
        x, rows = x.index_select(0, keep), rows.index_select(0, keep)
        if rows.numel() == 0:
            return
        ids = self.index.ids.index_select(0, rows_e).to(weight.device)
        w = weight.detach().index_select(0, ids).to(self.dtype).to(x.device)
        logits = x @ w.T
        if bias is not None:
            logits = logits + bias.detach().index_select(0, ids).to(self.dtype).to(x.device)
        mu = self.means().index_select(0, rows_e)
        dist2 = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ mu.T + mu.pow(2).sum(-1)[None, :])
        match = (logits.argmax(-1) == dist2.argmin(-1)).to(self.dtype)
        self.agree.index_add_(0, rows, match)
        self.judged.index_add_(0, rows, torch.ones_like(match))

    def summary(self, weight: Tensor) -> ClassSummary:
        """The per-class summary of the eligible classes, with their decoder rows from `weight`."""
        rows = self.eligible()
        if self.sums is None:
            raise RuntimeError("ClassStatistics.summary() before any update()")
        mu = self.means().index_select(0, rows)
        n = self.counts.index_select(0, rows)
        var = (self.sq_norms.index_select(0, rows) / n - mu.pow(2).sum(-1)).clamp_min(0.0)
        ids = self.index.ids.index_select(0, rows)
        w = weight.detach().index_select(0, ids.to(weight.device)).to(self.dtype).cpu()
        return ClassSummary(
            token_ids=ids.cpu(),
            counts=n.cpu(),
            means=mu.cpu(),
            within_var=var.cpu(),
            weight=w,
            agree=self.agree.index_select(0, rows).cpu(),
            judged=self.judged.index_select(0, rows).cpu(),
            vocab_size=len(self.index),
            observed=int((self.counts > 0).sum()),
        )


def _upper_pairs(draw: Tensor) -> Tensor:
    """Mask of pairs i < j of the drawn classes that are distinct classes."""
    k = draw.numel()
    upper = torch.ones(k, k, dtype=torch.bool).triu(1)
    return upper & (draw[:, None] != draw[None, :])


def _std(values: Tensor) -> float:
    return float(values.std()) if values.numel() > 1 else float("nan")


def collapse_metrics(summary: ClassSummary, *, draw: Tensor | None = None) -> dict[str, float]:
    """NC1-NC4 (see module docstring) over the summary's classes, or over a drawn multiset of them.

    `draw` is a (k',) index tensor into the summary's classes (duplicates allowed: a bootstrap draw).
    Keys: METRIC_NAMES plus "classes" and "tokens". NaN where a metric needs more classes than there are.
    """
    k = summary.classes
    draw = torch.arange(k) if draw is None else torch.as_tensor(draw, dtype=torch.long)
    out: dict[str, float] = {name: float("nan") for name in METRIC_NAMES}
    out["classes"] = float(torch.unique(draw).numel())
    out["tokens"] = float(summary.counts[draw].sum()) if k else 0.0
    if k == 0 or draw.numel() == 0:
        return out
    mu = summary.means[draw]
    centred = mu - mu.mean(0, keepdim=True)
    pairs = _upper_pairs(draw)
    if bool(pairs.any()):
        out["nc1"] = float(summary.cdnv_matrix()[draw][:, draw][pairs].mean())
        unit = centred / centred.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        cos = (unit @ unit.T)[pairs]
        out["nc2_equiangular"] = _std(cos)
        out["nc2_cos_mean"] = float(cos.mean())
    norms = centred.norm(dim=-1)
    out["nc2_equinorm"] = _std(norms) / max(float(norms.mean()), _EPS) if draw.numel() > 1 else float("nan")
    s = cosine_rows(summary.weight[draw], centred)
    out["nc3_cos_mean"] = float(s.mean())
    out["nc3"] = 1.0 - float(s.mean())
    out["unc3"] = _std(s)
    judged = float(summary.judged[draw].sum())
    if judged > 0:
        out["nc4"] = float(summary.agree[draw].sum()) / judged
    return out


def bootstrap_intervals(
    summary: ClassSummary, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over classes (see module docstring for why classes)."""
    rng = np.random.default_rng(seed)
    k = summary.classes
    samples: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    if k == 0 or n_boot <= 0:
        return {name: (float("nan"), float("nan")) for name in METRIC_NAMES}
    for _ in range(n_boot):
        draw = torch.from_numpy(rng.integers(0, k, size=k))
        values = collapse_metrics(summary, draw=draw)
        for name in METRIC_NAMES:
            samples[name].append(values[name])
    tail = (1.0 - level) / 2 * 100
    intervals = {}
    for name, values in samples.items():
        if name in _NO_INTERVAL:
            intervals[name] = (float("nan"), float("nan"))
            continue
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(arr, [tail, 100 - tail])
            intervals[name] = (float(lo), float(hi))
    return intervals
