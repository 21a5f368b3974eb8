"""The baseline interface and its registry.

A debiasing baseline says four things about a training run, and nothing else: which corpus it trains
on, how that corpus is transformed before tokenization, what it changes in the model's configuration,
and which loss terms it adds to the masked-LM loss (per batch). The training loop (ncsearch.training)
owns everything generic: tokenization, masking, the optimizer, DDP, checkpoints, and the NC3 term that
is added on top of any baseline when nc3.alpha > 0.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ncsearch._registry import Registry
from ncsearch.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ncsearch.config import BaselineOptions

__all__ = ["Baseline", "available", "get_baseline", "register"]

_BASELINES: Registry[type[Baseline]] = Registry("baseline", ConfigError)


class Baseline(abc.ABC):
    """One debiasing method. Subclasses set `name` and override the hooks they need.

    `options` is the spec's `baseline_options` slice (each baseline reads only its own field);
    `data_root` is the resolved benchmark/corpus folder.
    """

    name: ClassVar[str]

    def __init__(self, *, data_root: str | Path, options: BaselineOptions | None = None):
        from ncsearch.config import BaselineOptions

        self.data_root = Path(data_root)
        self.options = options if options is not None else BaselineOptions()

    # ----- corpus ---------------------------------------------------------------------------------

    def source_corpus(self) -> list[str]:
        """The untransformed training texts: GAP development + test passages (the paper's corpus)."""
        from ncsearch.data import load_gap_corpus

        return load_gap_corpus(self.data_root, ("development", "test"))

    def transform_corpus(self, texts: list[str]) -> list[str]:
        """Text-level rewriting before tokenization (counterfactual augmentation, ...). Default: none."""
        return texts

    def corpus(self, limit: int | None = None) -> list[str]:
        """The training texts. `limit` caps the *source* corpus (first N, file order) before the
        transformation, so an augmented example always travels with its original."""
        texts = self.source_corpus()
        if limit is not None:
            texts = texts[:limit]
        return self.transform_corpus(texts)

    # ----- model ----------------------------------------------------------------------------------

    def config_overrides(self) -> dict[str, float]:
        """Logical model-config changes, keyed by `hidden_dropout` / `attention_dropout`. Default: none."""
        return {}

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model with `config_overrides()` applied (a rebuilt copy when anything changes)."""
        overrides = self.config_overrides()
        if not overrides:
            return model
        from ncsearch.debias._model_config import apply_config_overrides

        return apply_config_overrides(model, overrides)

    # ----- per batch ------------------------------------------------------------------------------

    def transform_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensor-level batch rewriting after masking. Default: none."""
        return batch

    def loss_terms(self, model: nn.Module, batch: Mapping[str, Tensor], output: Any) -> dict[str, Tensor]:
        """Extra loss terms added to the MLM loss, by name (logged as train/<name>). Default: none.

        `model` is the bare masked LM (never the DDP wrapper); `output` the sparse MLM output.
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """Flat, loggable settings of this baseline."""
        return {"baseline": self.name}


register = _BASELINES.register
available = _BASELINES.available


def get_baseline(name: str) -> type[Baseline]:
    """The baseline class registered as `name`; an unknown name lists the valid ones (ConfigError)."""
    return _BASELINES.get(name)
