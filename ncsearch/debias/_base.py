"""The baseline contract and its registry.

A debiasing baseline says what a training run trains on and how; the training loop
(ncsearch.training) owns everything generic: the masked-LM stream, tokenization, masking, the
optimizer and schedule, DDP, checkpoints, and the NC3 term added on top of any baseline when
nc3.alpha > 0. What a baseline may declare, in the order the recipe asks:

- **Name and options.** `name`, and `Options`: a pydantic model whose defaults are the published
  settings. The spec's `baseline_options.<name>` section is validated against it; `paper_alpha` is
  the NC3 weight the paper's code used with this method (`nc3.preset: paper` takes it).
- **The MLM stream.** `corpus()` gives the texts of the recipe's masked-LM stream (GAP by default;
  `transform_corpus` rewrites them, e.g. counterfactual augmentation). `mlm_stream = False` drops that
  stream and its loss (a method trained only on its own losses).
- **The model.** `prepare_model(model)` (after `setup`): config changes (raised dropout), frozen weights, peft
  adapters or prefixes. Only parameters left with `requires_grad` are optimized. `export_model`
  gives the plain masked LM a checkpoint saves for evaluation (adapters merged).
- **Setup and own data.** `setup(tokenizer, rank, world_size, seed, device=, batch_size=, max_length=,
  model_path=)`, before the model is prepared (a method may need its data to prepare the model, e.g.
  Fisher scores), keeps its arguments and calls the method's `build()`, where the baseline builds its own step-indexed streams (`ncsearch.training.StepSampler`), so batch `k` is
  a pure function of (seed, k) and a resumed run needs only the step counter.
- **Per step.** `step_terms(ctx)` with the step, the masked MLM batch and its output, and `ctx.forward`,
  which runs further passes *through the DDP-wrapped model* (so one backward syncs every gradient).
  It returns its loss terms by name (each logged as train/<name>) and, where NC3's class statistics
  should come from one of its own passes rather than the masked MLM pass, that pass's features.
- **Resume.** Full fine-tunes resume from the checkpoint's model. `frozen_base = True` says the base
  weights never change (adapters or a prefix train instead): a restart rebuilds the model from the
  original weights with `prepare_model` and loads `trainable_state()` from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ncsearch._options import NoOptions, StrictOptions
from ncsearch._registry import Registry
from ncsearch.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["GENDER_WORD_FILES", "Baseline", "NC3Features", "StepContext", "StepTerms", "available", "get_baseline", "preflight_baselines", "register"]

_BASELINES: Registry[type[Baseline]] = Registry("baseline", ConfigError)

#: The files `ncsearch.data.load_gender_words` reads (pairs, and ADEPT's male/female/neutral lists).
GENDER_WORD_FILES = ("words/bias_attribute_words.json", "words/male.txt", "words/female.txt", "words/neutral.txt")


@dataclass
class NC3Features:
    """A pass whose last-layer states feed NC3's class statistics instead of the masked MLM pass.

    `hidden` (B, T, d) with `input_ids`/`attention_mask` (B, T) of that pass. `labels` are MLM labels
    when the pass was masked, None for an unmasked pass (then every real position is a pair: the
    regularizer needs `nc3.positions: all`, which the recipe enforces).
    """

    hidden: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None = None


@dataclass
class StepContext:
    """What a baseline sees of one training step.

    `forward(input_ids, attention_mask, labels=None)` runs the DDP-wrapped sparse masked LM and
    returns its `SparseMLMOutput` (`hidden` (B, T, d); `loss` the MLM loss at labelled positions, a
    zero with a gradient path when `labels` is None). `batch`/`output` are the recipe's masked MLM
    batch and pass (None when the baseline has no MLM stream). `model` is the bare masked LM, for
    reading weights; never call it for a training pass (DDP would not see that pass).
    """

    step: int
    forward: Callable[..., Any]
    model: nn.Module
    device: Any
    batch: dict[str, Tensor] | None
    output: Any | None


@dataclass
class StepTerms:
    """A baseline's contribution to one step: loss terms by name (added to the loss as they are, so a
    term carries its own weight) and, optionally, the pass NC3 should take its features from."""

    losses: dict[str, Tensor] = field(default_factory=dict)
    nc3: NC3Features | None = None


class Baseline:
    """One debiasing method. Subclasses set `name` (and `Options` when they have options) and override
    the hooks they need; see the module docstring for the contract."""

    name: ClassVar[str]
    Options: ClassVar[type[StrictOptions]] = NoOptions
    #: NC3's alpha in the paper's code for this method (Xu et al. 2024); None: the paper did not run it.
    paper_alpha: ClassVar[float | None] = None
    #: This method's options as the NC3 paper's code ran it, applied by `nc3.preset: paper`.
    paper_options: ClassVar[dict[str, Any]] = {}
    #: The kind of pass NC3's features come from: the masked MLM pass (or a masked pass of the method's
    #: own, with labels), or an unmasked pass of the method's own (then nc3.positions must be "all").
    nc3_pass: ClassVar[Literal["masked", "unmasked"]] = "masked"
    #: Whether the recipe's masked-LM stream (and its loss) is part of this method.
    mlm_stream: ClassVar[bool] = True
    #: The base weights never train (adapters or a prefix do); see "Resume" in the module docstring.
    frozen_base: ClassVar[bool] = False
    #: Benchmark options a trial of this method scores with unless the spec sets them, because the
    #: method trains on the default's data (ASE trains on WinoBias dev: {"winobias": {"split": "test"}}).
    #: A spec that sets one of them to another value is run as asked, with a warning.
    eval_options: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Data files (relative to the data root) the method reads: checked by `preflight`, before Ray starts.
    required_files: ClassVar[tuple[str, ...]] = ("gap/gap-development.tsv", "gap/gap-test.tsv")

    def __init__(self, *, data_root: str | Path, options: StrictOptions | None = None):
        self.data_root = Path(data_root)
        if options is None:
            options = self.Options()
        elif not isinstance(options, self.Options):
            raise ConfigError(f"baseline {self.name!r} takes {self.Options.__name__}, not {type(options).__name__}")
        self.options = options

    # ----- before Ray starts ----------------------------------------------------------------------

    def preflight(self, model_path: str) -> None:
        """What must fail in one line before any trial starts: a missing data file (DataError naming it),
        a model the method cannot work with (ConfigError). Reads only small files (no weights)."""
        from ncsearch.data import require_file

        for relative in self.required_files:
            require_file(self.data_root, relative)

    # ----- corpus ---------------------------------------------------------------------------------

    def source_corpus(self) -> list[str]:
        """The untransformed MLM texts: GAP development + test passages (the paper's corpus)."""
        from ncsearch.data import load_gap_corpus

        return load_gap_corpus(self.data_root, ("development", "test"))

    def transform_corpus(self, texts: list[str]) -> list[str]:
        """Text-level rewriting before tokenization (counterfactual augmentation, ...). Default: none."""
        return texts

    def corpus(self, limit: int | None = None) -> list[str]:
        """The MLM texts. `limit` caps the *source* corpus (first N, file order) before the
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
        """The model to train: `config_overrides()` applied (a rebuilt copy when anything changes).
        Methods that freeze weights or add adapters extend this."""
        overrides = self.config_overrides()
        if not overrides:
            return model
        from ncsearch.debias._model_config import apply_config_overrides

        return apply_config_overrides(model, overrides)

    def export_model(self, model: nn.Module) -> nn.Module:
        """The plain masked LM a checkpoint saves (and evaluation loads). Default: the model itself."""
        return model

    def trainable_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The trained tensors a `frozen_base` method restores on a restart: every parameter that
        requires a gradient, by name (CPU copies)."""
        return {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        """Put `trainable_state()` back into a freshly prepared model (names must match exactly)."""
        import torch

        params = dict(model.named_parameters())
        missing = sorted(set(state) - set(params))
        if missing:
            raise ConfigError(f"baseline {self.name!r}: checkpoint holds unknown parameters {missing[:3]}")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device))

    # ----- setup and per step ---------------------------------------------------------------------

    def setup(
        self,
        tokenizer: Any,
        rank: int,
        world_size: int,
        seed: int,
        *,
        device: Any = None,
        batch_size: int = 16,
        max_length: int = 128,
        model_path: str | None = None,
    ) -> None:
        """Build the baseline's own data streams for worker `rank` of `world_size` (called before
        `prepare_model`, on the worker's `device`). `batch_size` (global, over all workers) and
        `max_length` are the trial's `train` settings, which a method's own streams use unless its
        options say otherwise. `model_path` is the original (un-fine-tuned) model, which a resumed run
        does not otherwise see (an EWC anchor needs it). Every argument is kept as an attribute of the
        same name; then `build()` makes the method's streams from them."""
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_path = model_path
        self.build()

    def build(self) -> None:
        """The method's own data streams and anything else it needs before `prepare_model`, read from
        the attributes `setup` set (`self.tokenizer`, `self.rank`, ..., `self.model_path`). Default: none."""

    def epoch_of(self, step: int) -> int | None:
        """The epoch of step `step` in the stream NC3's features come from, for `nc3.means: epoch`
        (a method with its own feature pass returns its own stream's; `StepSampler.epoch_of`).
        None: the recipe's MLM stream defines the epoch."""
        return None

    def step_terms(self, ctx: StepContext) -> StepTerms:
        """Loss terms of step `ctx.step` (and optionally NC3's feature pass). Default: none."""
        return StepTerms()

    def describe(self) -> dict[str, Any]:
        """Flat, loggable settings of this baseline: its name and every option."""
        out: dict[str, Any] = {"baseline": self.name}
        for key, value in self.options.model_dump().items():
            if isinstance(value, dict):
                out.update({f"{self.name}.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{self.name}.{key}"] = value
        return out


#: Class decorator: make a baseline available by its `name` (its `Options` must be a strict options model).
register = _BASELINES.register


available = _BASELINES.available


def get_baseline(name: str) -> type[Baseline]:
    """The baseline class registered as `name`; an unknown name lists the valid ones (ConfigError)."""
    return _BASELINES.get(name)


def preflight_baselines(spec: Any, data_root: str | Path, model_path: str) -> None:
    """`preflight` of every baseline `spec` can run (its fixed one, or each value of a grid/choice)
    with the spec's options for it."""
    from ncsearch.config import Distribution

    names = list(spec.baseline.args) if isinstance(spec.baseline, Distribution) else [spec.baseline]
    for name in names:
        get_baseline(name)(data_root=data_root, options=getattr(spec.baseline_options, name)).preflight(model_path)
