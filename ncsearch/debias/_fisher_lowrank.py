"""Fisher-guided weight neutralisation, then low-rank (LoRA) fine-tuning (Zhang & Zhou 2024).

Zhang & Zhou, "Bias Mitigation in Fine-tuning Pre-trained Models for Enhanced Fairness and
Efficiency" (arXiv 2403.00625): the weights that matter for one demographic group's predictions are
not the ones that matter for the other's, so the weights whose Fisher importance differs most between
the groups are neutralised, and the model is then fine-tuned with a low-rank update. Only the method
summary is public; every concrete choice below is ncsearch's and says why.

1. **Counterfactual sets.** Every GAP development + test passage that contains a word of the gender
   pairs (bias_attribute_words.json) gives two versions that differ only in those words: all-male
   (every female word swapped to its male counterpart, male words kept) and all-female (the reverse),
   both by ncsearch's `CounterfactualSwapper` restricted to one direction. All-male/all-female rather
   than "original + swapped grouped by dominant gender": a passage that mentions both genders ("he
   told her") would otherwise land in both sets with both genders, and the two sets would differ in
   less than gender. The sample: the first `fisher_sentences` gendered passages of a seeded
   permutation of the corpus (`generator(seed, 11)`), in that order, truncated to `train.max_length`
   tokens.
2. **Fisher diagonal.** For each group, the empirical Fisher of the masked-LM loss
   F_g = (1/K) sum_k (dL_k/dtheta)^2 over K batches of `fisher_batch_size` sentences (the model in eval
   mode, so no dropout; K = fisher_sentences / fisher_batch_size). Batch k of both groups is masked
   with the same draws (15%, all [MASK], at least one per batch, `generator(seed, 11, k)`, both groups
   padded to one width), so a position masked in the male version is masked in the female one.
   With `fisher_batch_size: 1` (default) this is the per-sentence empirical Fisher; a batch of B
   sentences squares the batch-mean gradient, i.e. E[g^2]/B + (1 - 1/B) E[g]^2 per weight: B times
   fewer passes, which saves time on a GPU but not on a CPU thread (measured: the same time).
   Only the weights of the LoRA target modules get a Fisher (they are the ones neutralised).
3. **Neutralisation.** Each group's Fisher is normalised to sum 1 over those weights (the groups'
   losses differ in scale, and only where importance lies should count), the score is
   s = |F_m / sum F_m - F_f / sum F_f|, and the `neutralise_fraction` of weights with the largest score
   (one global ranking over all target matrices, ties to the earlier weight) are set to **zero**. Zero
   rather than the layer mean or a shrink factor: zero removes exactly that weight's contribution to
   its output unit and adds nothing else (a layer mean is a constant that every neutralised weight
   of a layer would push in the same direction; a shrink needs a factor the paper does not give),
   and it is the well-studied pruning intervention (a small pruned fraction costs little accuracy).
4. **Low-rank fine-tuning.** peft LoRA (W + (lora_alpha / r) B A, B = 0 at the start) is injected in
   place with `inject_adapter_in_model` on `target_modules` (default: peft's own choice for the model
   type, query and value for BERT/RoBERTa, as in Hu et al. 2021), so the object the recipe trains is
   still the plain `*ForMaskedLM` (`encode`/`mlm_head` read its `base_model` and family head). The
   fine-tuning objective is the recipe's MLM stream on GAP (`mlm_stream = True`).

**NC3.** NC3's gradient reaches only the decoder rows W, tied to the word embeddings; with every base
weight frozen, NC3 would do nothing. `train_embeddings: true` (default) keeps that tied matrix
trainable (as a full matrix: LoRA on the embedding would not reach the decoder, which
`ncsearch.heads.SparseMLM` applies through `mlm_head(model).weight`). It costs most of the method's
parameter saving on a small model; set it false for the pure low-rank method (then run it with
nc3.alpha = 0: NC3 has nothing to act on).

Measured on minilm-l6 (MiniLM-L6, 22.7M parameters; one CPU thread on a 2-core VM shared with other
jobs, so seconds are loose, ratios interleaved): trainable 11.8M with the embeddings (query/value LoRA
at r = 8 is 73,728 of them) and 73,728 without, against 22.7M for a full fine-tune. Fisher +
neutralisation at the defaults (2 x 64 passages of 128 tokens): 35-60 s, about as long as 12-20 training
steps of 16 x 128 tokens, the same with 1 or 8 sentences per pass. A training step's forward +
backward: 0.92x a full fine-tune's with the embeddings trained, 0.84x without (the backward still runs
through every layer; what LoRA saves is the weight gradients and the optimizer). The neutralised set
is partly sample noise around a stable core: the top 1% chosen from two seeds' samples of 64 passages
overlap by Jaccard 0.30 (chance: 0.005), 1 vs 8 sentences per pass on one sample (other batching and
mask draws) by 0.28, and two samples of 256 passages still only by 0.32, so a larger sample buys
little. In the 256-passage run the one global ranking put 95% of the neutralised weights in the value
matrices (most in layers 0-2): their gradients are larger, and normalising per group does not
normalise per matrix.

**Restarts** (`frozen_base = True`): `prepare_model` runs again on the original weights; the sample,
the masks and the LoRA initialisation (seeded by `derive_seed(seed, 12)` inside a forked RNG) are
functions of the seed, so the same weights are neutralised, and the checkpoint's `trainable_state`
(LoRA matrices and, when trained, the embeddings) is loaded on top. On a GPU the Fisher sums may round
differently from run to run, which can only move weights whose scores tie at the cut to rounding.
Every DDP worker uses the same Fisher on the same sample (it is small), so replicas agree.

**Cached.** The masks depend on the original weights, the seed's sample and the options, not on
alpha or the NC3 vocabulary: every configuration of a search at one seed, and every restart, would
compute the same ones (about 10 s of one core on MiniLM-L6). The first computes them and stores them
in the cache (`ncsearch._tensor_cache`, keyed by all of that and the device type); the others read
them in 0.2 s. A restart therefore neutralises exactly the weights the first start did, on a GPU too.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.debias._base import GENDER_WORD_FILES, Baseline, register
from ncsearch.debias._cda import CounterfactualSwapper
from ncsearch.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "FisherLowRank",
    "FisherLowRankOptions",
    "OneWaySwapper",
    "counterfactual_sets",
    "diagonal_fisher",
    "fisher_difference",
    "merge_lora",
    "top_fraction_mask",
]

_log = logging.getLogger(__name__)

_FISHER_STREAM = 11  # generator keys of the Fisher sample and its masks (1-3 are the recipe's streams)
_LORA_INIT_STREAM = 12  # the seed of the LoRA A matrices' initialisation
_MASKS_FORMAT = 1  # bumped whenever the neutralisation masks are computed or stored differently
_FISHER_MASK_PROBABILITY = 0.15  # BERT's masking rate


class OneWaySwapper(CounterfactualSwapper):
    """`CounterfactualSwapper` that rewrites only one gender's words: `to="male"` swaps every female
    word to its male counterpart and leaves male words alone (`to="female"` the reverse), with the
    swapper's own case and "her" -> "him"/"his" rules. A word listed on both sides is left alone."""

    def __init__(self, pairs: Iterable[tuple[str, str]], *, to: str):
        pairs = list(pairs)
        super().__init__(pairs)
        if to not in ("male", "female"):
            raise ValueError(f"to must be 'male' or 'female', not {to!r}")
        males = {m.lower() for m, f in pairs if m.lower() != f.lower()}
        females = {f.lower() for m, f in pairs if m.lower() != f.lower()}
        self.sources = frozenset((females - males) if to == "male" else (males - females))

    def _replace(self, match: Any) -> str:
        if match.group(0).lower() not in self.sources:
            return match.group(0)
        return super()._replace(match)


def counterfactual_sets(texts: Sequence[str], pairs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(all-male, all-female) versions of every text that holds a gendered word, index-aligned."""
    pairs = list(pairs)
    to_male, to_female = OneWaySwapper(pairs, to="male"), OneWaySwapper(pairs, to="female")
    male: list[str] = []
    female: list[str] = []
    for text in texts:
        m, f = to_male(text), to_female(text)
        if m != f:
            male.append(m)
            female.append(f)
    return male, female


def diagonal_fisher(params: dict[str, Tensor], loss_fn: Callable[[Any], Tensor], batches: Iterable[Any]) -> dict[str, Tensor]:
    """The empirical Fisher diagonal: the mean over `batches` of the squared gradient of
    `loss_fn(batch)` with respect to each of `params` (fp32, on the parameters' devices)."""
    import torch

    names = list(params)
    tensors = [params[n] for n in names]
    sums = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
    count = 0
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(batch), tensors, allow_unused=True)
        for total, grad in zip(sums, grads):
            if grad is not None:
                total.add_(grad.detach().float().square())
        count += 1
    if count == 0:
        raise ValueError("diagonal_fisher needs at least one batch")
    return {n: s / count for n, s in zip(names, sums)}


def fisher_difference(male: dict[str, Tensor], female: dict[str, Tensor]) -> dict[str, Tensor]:
    """|F_m / sum F_m - F_f / sum F_f| per weight, each group normalised over all of its tensors."""
    total_m = sum(float(t.sum()) for t in male.values())
    total_f = sum(float(t.sum()) for t in female.values())
    if total_m <= 0 or total_f <= 0:
        raise ValueError("a group's Fisher is zero everywhere: no gradient reached the chosen weights")
    return {n: (male[n] / total_m - female[n] / total_f).abs() for n in male}


def top_fraction_mask(scores: dict[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """Boolean masks marking the floor(`fraction` x total) largest scores over all tensors together
    (one ranking; equal scores go to the tensor listed first, then the earlier flat position)."""
    import torch

    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float().cpu() for n in names])
    k = math.floor(fraction * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        chosen[order[:k]] = True
    out: dict[str, Tensor] = {}
    start = 0
    for n in names:
        size = scores[n].numel()
        out[n] = chosen[start : start + size].reshape(scores[n].shape).to(scores[n].device)
        start += size
    return out


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every peft LoRA layer of `model` into its base layer (W + scale B A) and put the base layer
    back in its place, in place: what peft's `merge_and_unload` does, for a model whose adapters were
    injected with `inject_adapter_in_model` (no PeftModel/LoraModel around it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuner_names = [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name in tuner_names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        layer.merge()
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


class FisherLowRankOptions(StrictOptions):
    """Fisher neutralisation + LoRA. The paper's values are not public; these are ncsearch's."""

    #: Counterfactual passages per group for the Fisher (CPU-sized: ~16 training steps' time on MiniLM).
    fisher_sentences: Annotated[int, Field(ge=1)] = 64
    #: Sentences per Fisher pass (1: the exact per-sentence empirical Fisher; see the module docstring).
    fisher_batch_size: Annotated[int, Field(ge=1)] = 1
    #: Share of the target matrices' weights set to zero, by largest Fisher difference.
    neutralise_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.01
    #: Module names LoRA adapts (and whose weights are neutralised); None: peft's default for the model type.
    target_modules: Annotated[list[str], Field(min_length=1)] | None = None
    #: LoRA rank and scaling numerator (update = lora_alpha / r * B A): r = 8 on query/value as in
    #: Hu et al. 2021's RoBERTa-base runs, lora_alpha = 2r as in peft's examples.
    r: Annotated[int, Field(ge=1)] = 8
    lora_alpha: Annotated[float, Field(gt=0)] = 16.0
    #: Dropout on the LoRA input: peft's default 0 (the model's own dropout still acts; a LoRA dropout
    #: would draw per rank, so 1 and 2 workers would differ even with the model's dropout off).
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: Keep the word embeddings (= the tied decoder W that NC3 acts on) trainable.
    train_embeddings: bool = True


@register
class FisherLowRank(Baseline):
    """Zhang & Zhou 2024 (arXiv 2403.00625): zero the weights whose normalised Fisher importance differs
    most between all-male and all-female counterfactual passages, then MLM fine-tune a LoRA update.

        F_g[i] = mean_k (dL_MLM(batch_k of group g) / dtheta_i)^2,   g in {male, female}
        s[i]   = | F_m[i] / sum_j F_m[j] - F_f[i] / sum_j F_f[j] |
        theta_i <- 0 for the top `neutralise_fraction` of s over the LoRA target matrices
        W_eff  = W_neutralised + (lora_alpha / r) B A,   only A, B (and the tied embeddings) train

    Trainable parameters on minilm-l6: 11.8M with `train_embeddings` (73,728 LoRA + the 11.7M tied
    embeddings NC3 needs), 73,728 without, 22.7M for a full fine-tune. One CPU thread: Fisher +
    neutralisation take about as long as 12-20 training steps (35-60 s); a step's forward + backward is
    0.92x a full fine-tune's with the embeddings, 0.84x without. See the module docstring for every
    choice, its reason, and how stable the neutralised set is.
    """

    name = "fisher_lowrank"
    Options = FisherLowRankOptions
    options: FisherLowRankOptions
    frozen_base = True
    mlm_stream = True
    required_files = Baseline.required_files + GENDER_WORD_FILES

    def preflight(self, model_path: str) -> None:
        """The data files, and whether LoRA can wrap the model: `target_modules` is checked on the
        model built from its config on the meta device (no weights read), before any trial starts."""
        import torch
        from transformers import AutoConfig, AutoModelForMaskedLM

        from ncsearch.errors import ModelError

        super().preflight(model_path)
        try:
            # Never its own code (a model that ships some was refused by ensure_model without the flag).
            config = AutoConfig.from_pretrained(model_path, trust_remote_code=False)
            with torch.device("meta"):
                skeleton = AutoModelForMaskedLM.from_config(config)
        except (OSError, ValueError, KeyError) as err:  # no/unreadable config, unknown model type or class
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"baseline {self.name!r}: cannot read the model config at {model_path!r}: {first}") from None
        self.target_modules(skeleton)

    # ----- setup: the counterfactual Fisher sample --------------------------------------------------

    def build(self) -> None:
        """The male/female Fisher batches (`prepare_model` neutralises with them)."""
        self.fisher_batches = self._fisher_batches()

    def counterfactual_sample(self) -> tuple[list[str], list[str]]:
        """The seeded sample of (all-male, all-female) passages the Fisher is computed on."""
        import torch

        from ncsearch.data import load_gender_words
        from ncsearch.training._seeding import generator

        texts = self.source_corpus()
        pairs = load_gender_words(self.data_root).pairs
        order = torch.randperm(len(texts), generator=generator(self.seed, _FISHER_STREAM)).tolist()
        male: list[str] = []
        female: list[str] = []
        wanted = self.options.fisher_sentences
        for start in range(0, len(order), wanted):  # swap only as many passages as it takes
            m, f = counterfactual_sets([texts[i] for i in order[start : start + wanted]], pairs)
            male.extend(m)
            female.extend(f)
            if len(male) >= wanted:
                break
        if not male:
            raise ConfigError(f"baseline {self.name!r}: no GAP passage holds a gendered word; nothing to compute a Fisher on")
        return male[:wanted], female[:wanted]

    def _fisher_batches(self) -> list[tuple[dict[str, Tensor], dict[str, Tensor]]]:
        """(male batch, female batch) pairs on CPU, masked with the same draws (module docstring, 2.)."""
        from ncsearch._batching import pad_batch
        from ncsearch.training._masking import maskable, mlm_mask
        from ncsearch.training._seeding import generator

        tok = self.tokenizer
        male, female = self.counterfactual_sample()
        def encode(texts: list[str]) -> list[list[int]]:
            return tok(texts, truncation=True, max_length=self.max_length, verbose=False)["input_ids"]

        male_ids, female_ids = encode(male), encode(female)
        special = sorted(set(tok.all_special_ids))
        size = self.options.fisher_batch_size
        out = []
        for k, start in enumerate(range(0, len(male_ids), size)):
            ids, mask = pad_batch(male_ids[start : start + size] + female_ids[start : start + size], tok.pad_token_id)
            half = ids.shape[0] // 2
            pair = []
            for rows in (slice(0, half), slice(half, None)):
                masked, labels = mlm_mask(
                    ids[rows], maskable(ids[rows], special, mask[rows]), generator(self.seed, _FISHER_STREAM, k),
                    probability=_FISHER_MASK_PROBABILITY, mask_id=tok.mask_token_id, replace_all=True, ensure_one=True,
                )
                pair.append({"input_ids": masked, "attention_mask": mask[rows], "labels": labels})
            out.append((pair[0], pair[1]))
        return out

    # ----- the model ----------------------------------------------------------------------------------

    def target_modules(self, model: nn.Module) -> list[str]:
        """The LoRA target names for `model`: the option, else peft's default for its model type.
        Raises ConfigError (one line) when they match no Linear layer of `model`, before any work."""
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS,
        )
        from torch import nn

        targets = self.options.target_modules
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if targets is None:
            targets = DEFAULTS.get(model_type) if model_type else None
            if not targets:
                raise ConfigError(
                    f"baseline {self.name!r}: peft has no default LoRA target modules for {type(model).__name__} "
                    f"(model_type {model_type!r}); set baseline_options.{self.name}.target_modules"
                )
        config = LoraConfig(target_modules=list(targets))
        if not any(
            isinstance(module, nn.Linear) and bool(check_target_module_exists(config, name))
            for name, module in model.named_modules()
        ):
            raise ConfigError(
                f"baseline {self.name!r}: LoRA target modules {list(targets)} match no Linear layer of "
                f"{type(model).__name__}; set baseline_options.{self.name}.target_modules to names of its Linear layers"
            )
        return list(targets)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Neutralise (Fisher difference) the target matrices, then inject LoRA and freeze the rest."""
        targets = self.target_modules(model)  # ConfigError before anything is computed (as in `preflight`)
        model = super().prepare_model(model)
        started = time.perf_counter()
        self.neutralised = self.neutralise(model, targets)
        self.fisher_seconds = time.perf_counter() - started
        self.inject_lora(model, targets)
        return model

    def _target_weights(self, model: nn.Module, targets: list[str]) -> dict[str, Tensor]:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists
        from torch import nn

        config = LoraConfig(target_modules=targets)
        return {
            f"{name}.weight": module.weight
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and bool(check_target_module_exists(config, name))
        }

    def neutralise(self, model: nn.Module, targets: list[str]) -> int:
        """Compute both groups' Fisher on `self.device`, zero the top-scoring target weights; returns
        how many weights were zeroed. The model comes back on its own device, in its own mode."""
        import torch

        from ncsearch._tensor_cache import cached_tensors
        from ncsearch.heads import sparse_mlm_loss

        home = next(model.parameters()).device
        device = torch.device(self.device) if self.device is not None else home
        was_training = model.training
        model.to(device).eval()
        try:
            weights = self._target_weights(model, targets)

            def loss(batch: dict[str, Tensor]) -> Tensor:
                batch = {k: v.to(device) for k, v in batch.items()}
                return sparse_mlm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).loss

            def masks_now() -> dict[str, Tensor]:
                fisher_m = diagonal_fisher(weights, loss, (m for m, _ in self.fisher_batches))
                fisher_f = diagonal_fisher(weights, loss, (f for _, f in self.fisher_batches))
                return top_fraction_mask(fisher_difference(fisher_m, fisher_f), self.options.neutralise_fraction)

            # The same for every configuration trained at this seed (and for its restarts): computed
            # once per machine, then read from the cache.
            masks = cached_tensors("fisher_lowrank_masks", self._masks_key(model, targets, device), masks_now,
                                   like=weights, device=device)
            with torch.no_grad():
                for name, mask in masks.items():
                    weights[name].masked_fill_(mask, 0.0)
            count = int(sum(int(m.sum()) for m in masks.values()))
            total = sum(m.numel() for m in masks.values())
        finally:
            model.to(home).train(was_training)
        _log.info("[fisher_lowrank] neutralised %d of %d weights in %s", count, total, targets)
        return count

    def _masks_key(self, model: nn.Module, targets: list[str], device: Any) -> dict[str, Any]:
        """Everything the neutralisation masks depend on: the model's own weights, the Fisher batches
        (the seed's sample and masks, the tokenizer, max_length, fisher_batch_size), the targets, the
        fraction, and the device type (the Fisher sums round differently on another one)."""
        import hashlib

        import torch

        from ncsearch._tensor_cache import parameters_digest

        batches = hashlib.sha256()
        for pair in self.fisher_batches:
            for batch in pair:
                for name in sorted(batch):
                    batches.update(name.encode())
                    batches.update(batch[name].contiguous().numpy().tobytes())
        return {"format": _MASKS_FORMAT, "weights": parameters_digest(model), "batches": batches.hexdigest(),
                "targets": sorted(targets), "fraction": self.options.neutralise_fraction,
                "device": torch.device(device).type}

    def inject_lora(self, model: nn.Module, targets: list[str]) -> None:
        """peft LoRA on `targets`, injected in place (seeded, without touching the global RNG); then
        only LoRA (and, with `train_embeddings`, the tied word embeddings) requires a gradient."""
        import torch
        from peft import LoraConfig, inject_adapter_in_model

        from ncsearch.training._seeding import derive_seed

        opts = self.options
        config = LoraConfig(r=opts.r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout, target_modules=targets, bias="none")
        home = next(model.parameters()).device
        with torch.random.fork_rng(devices=[home] if home.type == "cuda" else []):
            torch.manual_seed(derive_seed(self.seed, _LORA_INIT_STREAM))
            inject_adapter_in_model(config, model)
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        if opts.train_embeddings:
            model.get_input_embeddings().weight.requires_grad_(True)

    def export_model(self, model: nn.Module) -> nn.Module:
        """A merged plain copy (W + scale B A in every target Linear); the training model is untouched."""
        exported = merge_lora(copy.deepcopy(model))
        for param in exported.parameters():
            param.requires_grad_(True)
        return exported
