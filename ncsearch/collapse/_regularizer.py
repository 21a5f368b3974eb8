"""The (U)NC3 regularizer of DESIGN.md §4 with streaming class means on a vocabulary subset V.

    S_c = Σ_{y=c} x,  n_c = #{y=c}       for c ∈ V (index_add_ into a |V| x d buffer)
    mu_c = S_c / n_c,  mu_G = mean of mu_c over c with n_c > 0 (unweighted)
    s_c = cos(W_c, mu_c − mu_G)
    UNC3 = std_c(s_c),  NC3 = 1 − mean_c(s_c)

Standard deviation convention: the *sample* standard deviation (Bessel's correction, divisor k−1 over
the k classes with n_c > 0). The paper's code computes the loss as `sims.std()`
(Fairness-NC `bec/code/main_nc.py`, `loss_nc3 = sims.std()`), and `torch.Tensor.std` is unbiased by
default, so this matches what the paper trained with. With fewer than two observed classes UNC3 is
defined as 0 (the sample std is undefined), and the loss is a zero that still depends on W.

Means are statistics, not functions of the parameters: features enter `update` detached, so the
gradient of the regularizer reaches only the rows W_c of the decoder weight (in BERT tied to the input
embeddings, which is the paper's setting as well).

Distributed: `update` all-reduces the batch sums and counts (one collective of |V|·(d+1) numbers) when
torch.distributed is initialised, before any mean is formed. Every rank therefore holds identical
statistics and the regularizer does not depend on how the global batch is split over workers. All ranks
must call `update` at every step (it is a collective), even with no labelled feature in V.

Per-epoch means (`means="epoch"`): cumulative sums and counts that start afresh at each epoch, as the
paper's ADEPT code did (Fairness-NC `adept/debias.py` builds a new `Statistics(C, D)` at the top of
every epoch of its loop). The regularizer does not know the epoch length, so the training loop calls
`start_epoch(epoch)` before `update` at every step; the sums are cleared when the epoch number
changes. The current epoch is part of `state_dict`, so a run resumed mid-epoch keeps the statistics
of that epoch, and one resumed exactly at an epoch boundary clears them at its first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ncsearch.collapse._lookup import VocabIndex
from ncsearch.errors import ConfigError

__all__ = ["KINDS", "MEANS", "NC3Regularizer", "cosine_rows"]

KINDS = ("unc3", "nc3", "both")
MEANS = ("cumulative", "ema", "batch", "epoch")
_EPS = 1e-12


def cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity; a zero row gives 0 (no NaN), as happens for a single observed class."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(_EPS)


def _distributed() -> bool:
    """Whether torch.distributed is initialised, i.e. whether `batch_statistics` must all-reduce."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


class NC3Regularizer:
    """Streaming class means on V and the (U)NC3 loss on the decoder rows W_V.

    `means`: "cumulative" (sums and counts since the first step, as the paper), "ema" (per class, the
    batch mean of a class present in the step is blended in: mu_c <- m·mu_c + (1−m)·batch_mu_c, or taken
    as is the first time the class is seen; absent classes keep their mean), "batch" (this step only) or
    "epoch" (cumulative since the start of the current epoch, the paper's ADEPT code; needs
    `start_epoch` before every `update`, see the module docstring).
    Statistics are accumulated in `dtype` (float64 by default: cumulative sums over thousands of steps
    lose digits in float32, and the |V| x d buffer is small) and cast to W's dtype in `loss`.
    """

    def __init__(
        self,
        vocab_ids: Sequence[int] | Tensor,
        *,
        kind: Literal["unc3", "nc3", "both"] = "unc3",
        means: Literal["cumulative", "ema", "batch", "epoch"] = "cumulative",
        ema_momentum: float = 0.9,
        dtype: torch.dtype = torch.float64,
        process_group: Any = None,
    ):
        if kind not in KINDS:
            raise ConfigError(f"nc3 kind must be one of {', '.join(KINDS)}, but got {kind!r}")
        if means not in MEANS:
            raise ConfigError(f"nc3 means must be one of {', '.join(MEANS)}, but got {means!r}")
        if not 0.0 < ema_momentum < 1.0:
            raise ConfigError(f"ema_momentum must lie in (0, 1), but got {ema_momentum!r}")
        self.index = VocabIndex(vocab_ids)
        self.kind = kind
        self.mode = means
        self.ema_momentum = float(ema_momentum)
        self.dtype = dtype
        self.process_group = process_group
        self.steps = 0
        #: The epoch of the statistics (set by `start_epoch`; None until the first call).
        self.epoch: int | None = None
        # allocated on the first update (the feature dimension and device come from the features)
        self.sums: Tensor | None = None  # cumulative / batch: class sums; ema: the class means
        self.counts: Tensor | None = None  # cumulative / ema: counts since the start; batch: this step

    # -- epochs ---------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> bool:
        """Declare that the coming `update` belongs to epoch `epoch` (call it before `update` at every
        step; every rank with the same number). With means "epoch" the class sums and counts are
        cleared when the epoch differs from the last one declared; the other modes only record it.
        Returns whether statistics were cleared. Epochs never go back: a smaller number than the
        current one is an error (a resumed run that lost its place)."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, but got {epoch}")
        if self.epoch is not None and epoch < self.epoch:
            raise ValueError(f"NC3 statistics are at epoch {self.epoch}; start_epoch({epoch}) would go back")
        changed = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        if changed and self.mode == "epoch" and self.sums is not None and self.counts is not None:
            self.sums.zero_()
            self.counts.zero_()
            return True
        return False

    @property
    def vocab_ids(self) -> Tensor:
        return self.index.ids

    # -- statistics -----------------------------------------------------------------------------------
    def _allocate(self, dim: int, device: torch.device) -> None:
        self.index.to(device)
        self.sums = torch.zeros(len(self.index), dim, dtype=self.dtype, device=device)
        self.counts = torch.zeros(len(self.index), dtype=self.dtype, device=device)

    @torch.no_grad()
    def batch_statistics(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """This step's class sums (|V|, d) and counts (|V|,), all-reduced over workers when distributed."""
        features = features.detach().reshape(-1, features.shape[-1])
        if self.sums is None:
            self._allocate(features.shape[-1], features.device)
        assert self.sums is not None
        rows = self.index.rows(labels.reshape(-1).to(self.sums.device))
        keep = (rows >= 0).nonzero(as_tuple=True)[0]
        rows = rows.index_select(0, keep)
        x = features.to(self.sums.device).index_select(0, keep).to(self.dtype)
        packed = torch.zeros(len(self.index), x.shape[-1] + 1, dtype=self.dtype, device=self.sums.device)
        packed[:, :-1].index_add_(0, rows, x)
        packed[:, -1].index_add_(0, rows, torch.ones_like(rows, dtype=self.dtype))
        if _distributed():
            import torch.distributed as dist

            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
        return packed[:, :-1], packed[:, -1]

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch of (feature, full-vocabulary label) pairs; labels outside V are ignored."""
        if self.mode == "epoch" and self.epoch is None:
            raise RuntimeError('NC3 means "epoch" needs start_epoch(epoch) before update() (see the module docstring)')
        sums, counts = self.batch_statistics(features, labels)
        assert self.sums is not None and self.counts is not None
        if self.mode in ("cumulative", "epoch"):
            self.sums += sums
            self.counts += counts
        elif self.mode == "batch":
            self.sums.copy_(sums)
            self.counts.copy_(counts)
        else:  # ema on the batch means of the classes present in this step
            present = counts > 0
            batch_means = sums[present] / counts[present, None]
            seen = self.counts[present] > 0
            m = self.ema_momentum
            blended = torch.where(seen[:, None], m * self.sums[present] + (1 - m) * batch_means, batch_means)
            self.sums[present] = blended
            self.counts += counts
        self.steps += 1

    def means(self) -> tuple[Tensor, Tensor]:
        """(mu (|V|, d), observed mask (|V|,)): class means (zero rows where n_c = 0) and n_c > 0."""
        if self.sums is None or self.counts is None:
            raise RuntimeError("NC3Regularizer.means() before any update()")
        observed = self.counts > 0
        if self.mode == "ema":
            return torch.where(observed[:, None], self.sums, torch.zeros_like(self.sums)), observed
        return self.sums / self.counts.clamp_min(1)[:, None], observed

    # -- the loss -------------------------------------------------------------------------------------
    def cosines(self, weight: Tensor) -> Tensor:
        """s_c = cos(W_c, mu_c − mu_G) for the observed classes (in V order); differentiable in W."""
        mu, observed = self.means()
        rows = observed.nonzero(as_tuple=True)[0]
        mu = mu.index_select(0, rows).to(device=weight.device, dtype=weight.dtype)
        centred = mu - mu.mean(dim=0, keepdim=True)
        w = weight.index_select(0, self.index.ids.index_select(0, rows).to(weight.device))
        return cosine_rows(w, centred)

    def loss(self, weight: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The configured kind (unc3 | nc3 | both = unc3 + nc3) on W (|vocab|, d), and all values.

        Returns (scalar tensor, {"unc3": float, "nc3": float, "classes": int}). Without any observed
        class the loss is `0 * W.sum()` (a zero with a gradient path, so DDP sees every parameter used)
        and the values are NaN.
        """
        if self.counts is None or not bool((self.counts > 0).any()):
            return weight.sum() * 0.0, {"unc3": float("nan"), "nc3": float("nan"), "classes": 0}
        s = self.cosines(weight)
        k = s.numel()
        unc3 = s.std() if k > 1 else s.sum() * 0.0  # sample std (correction=1), as the paper's sims.std()
        nc3 = 1.0 - s.mean()
        value = {"unc3": unc3, "nc3": nc3, "both": unc3 + nc3}[self.kind]
        return value, {"unc3": float(unc3.detach()), "nc3": float(nc3.detach()), "classes": int(k)}

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "vocab_ids": self.index.ids.cpu().clone(),
            "kind": self.kind,
            "means": self.mode,
            "ema_momentum": self.ema_momentum,
            "steps": self.steps,
            "epoch": self.epoch,
            "sums": None if self.sums is None else self.sums.cpu().clone(),
            "counts": None if self.counts is None else self.counts.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids = torch.as_tensor(state["vocab_ids"], dtype=torch.long)
        if not torch.equal(ids, self.index.ids.cpu()):
            raise ConfigError("NC3 state was saved for a different vocabulary subset (token ids differ)")
        if state["means"] != self.mode:
            raise ConfigError(f"NC3 state holds {state['means']!r} means, but this regularizer keeps {self.mode!r}")
        self.steps = int(state["steps"])
        epoch = state.get("epoch")  # absent in checkpoints written before per-epoch means existed
        self.epoch = None if epoch is None else int(epoch)
        if state["sums"] is None:
            self.sums = self.counts = None
            return
        device = self.sums.device if self.sums is not None else torch.device("cpu")
        self.index.to(device)
        self.sums = state["sums"].to(device=device, dtype=self.dtype).clone()
        self.counts = state["counts"].to(device=device, dtype=self.dtype).clone()
