"""BERT-ASE (Park et al., WSDM 2023, "Never Too Late to Learn: Regularizing Gender Bias in Coreference
Resolution"; code github NLPlab-skku/BERT-ASE, as run by the NC3 paper in Xujxyang/Fairness-NC-main
`ase/finetune_both_nc.py` + `ase/model_nc.py`).

The model is fine-tuned with masked LM on sentences whose gendered pronouns are masked, so it must
predict the pronoun from the context, plus two regularizers (each with its published weight):

    L = L_MLM(pronouns) + lambda * sum_{(b,t) in S} |h_{b,t} . g| + gamma * sum_i F_i (theta_i - theta0_i)^2

- **Data.** WinoBias dev, pro- and anti-stereotyped, types 1 and 2 (1,584 sentences; BERT-ASE's own
  corpus was OntoNotes prepared the same way). Which pronouns are masked follows the reference's data
  preparation (`generate_training_data` of github 12kleingordon34/NLP_masters_project, which BERT-ASE's
  README names as its preprocessing): *every* he / she / him / his / her / hers of the sentence (any
  case, bracketed or not; not himself/herself, which that regex does not list) becomes [MASK]. The
  reference then makes one example per pronoun and labels *every* mask with that one pronoun (so the
  other masks of a two-pronoun sentence get a wrong target); here each sentence is one example and
  each mask is labelled with its own pronoun. 34 of the 1,584 dev sentences have two pronouns.
- **Orthogonality** (`BERT_debias.forward`, `orth_loss_ver` "abs" by default, "square" the
  alternative): S are the positions of the neutral/stereotype words of the sentence (the reference
  marks the tokens of `stereotype_list.tsv`, e.g. nurse, clerk, ceo, lawyer; ncsearch's
  `words/neutral.txt` is that list plus 28 SEAT target words such as career, family, math), h the
  last encoder layer of the masked pass and g the unit gender direction: the sum over the
  ADEPT/gn_glove male words' last-layer states minus the female words' (`calculate_gender_vector`,
  words/male.txt and words/female.txt are the reference's male/female_word_file.txt), taken once from
  the original model before training. The term is a *sum* over the batch's marked positions, not a
  mean (so it grows with the batch; the reference's batch was 6). Words are matched on word
  boundaries, case-insensitively, at every occurrence (the reference matches token sequences at the
  first occurrence of the word's first token).
- **EWC** (`BERT_debias._diag_fisher` / `penalty`): F is the diagonal empirical Fisher of the original
  model, the mean over sentences of the squared gradient of the sentence's LM loss with every token as
  its own label (`labels=input_ids`, the reference's choice), in eval mode; theta0 the original weights.
  Two deliberate deviations: the reference never zeroes the gradient between sentences (so it squares
  running sums), here each sentence's gradient is squared on its own (the EWC definition); and the
  reference's sentences are WinoBias *test* type-1 lines, here a fixed sample of `fisher_sentences`
  training sentences (drawn with a seed of its own, 0, not the trial's: the Fisher is a property of
  the original model and the data, the same for every replicate), so no test sentence is seen.

The NC3 paper's run (`preset: paper`) comments both regularizers out (`loss = mlm_loss`, then
`+ 100 * loss_nc3`): the preset sets both weights to 0, and `paper_alpha` is that 100.

**Resume.** The gender direction, theta0 and F must come from the *un-fine-tuned* model, but a
resumed full fine-tune hands `prepare_model` the checkpoint's model. So they are computed in `setup`
from `model_path` (the trial's starting model, which the recipe passes), deterministically,
and recomputed identically on every (re)start, except F: it is the same for every trial and replicate
of a search, so the first computes it and the others read it from the cache
(`cached_diagonal_fisher`). They are detached tensors held here, not parameters of the model (neither
optimized nor saved). With both weights 0 nothing of the original is needed. With
a weight > 0 and no `model_path`, `setup` raises ConfigError rather than anchor to whatever
model it is later given.

**Train/test overlap.** ASE trains on WinoBias dev, the `winobias` benchmark's default split:
`eval_options` makes an ASE trial score WinoBias test. `prepare_model` also records "winobias/dev" in
the model config's `ncsearch_trained_on`, which travels with every checkpoint, so the benchmark warns
whenever it scores a split the model was trained on (e.g. `ncsearch eval` of an ASE checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ncsearch._options import StrictOptions
from ncsearch.debias._base import GENDER_WORD_FILES, Baseline, NC3Features, StepContext, StepTerms, register
from ncsearch.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["ASE", "PRONOUNS", "ASEExample", "ASEOptions", "EWCAnchors", "build_examples", "ewc_penalty", "orthogonal_term", "word_spans"]

#: The pronouns the reference masks (its regex `^he$|^she$|^her$|^his$|^him$`, plus "hers" of its pronoun map).
PRONOUNS = ("he", "she", "him", "his", "her", "hers")
#: Model-config attribute listing what a checkpoint was fine-tuned on (read by ncsearch.evaluate.winobias).
TRAINED_ON_ATTR = "ncsearch_trained_on"
TRAINED_ON = "winobias/dev"
_STREAM = 21  # StepSampler stream of the pronoun sentences (1 is the recipe's MLM corpus)
_FISHER_SEED = 0  # the Fisher sample's own seed: the same sentences for every trial


class ASEOptions(StrictOptions):
    """BERT-ASE's published defaults (`finetune_both.py` arguments)."""

    #: "paper": the NC3 paper's ASE run, both regularizers off (an explicit non-zero weight is an error).
    preset: Literal["paper"] | None = None
    #: lambda_loss: weight of the orthogonality term.
    orthogonal_weight: Annotated[float, Field(ge=0)] = 1.0
    #: orth_loss_ver: |h . g| ("abs") or (h . g)^2 ("square").
    orthogonal_norm: Literal["abs", "square"] = "abs"
    #: ewc_imp: weight of the EWC penalty.
    ewc_weight: Annotated[float, Field(ge=0)] = 0.5
    #: Sentences of the Fisher sample (the reference used ~790 test lines; one WinoBias file is 396).
    fisher_sentences: Annotated[int, Field(ge=1)] = 396

    PAPER: ClassVar[dict[str, float]] = {"orthogonal_weight": 0.0, "ewc_weight": 0.0}

    @model_validator(mode="after")
    def _apply_preset(self) -> ASEOptions:
        if self.preset == "paper":
            for key, value in self.PAPER.items():
                if key in self.model_fields_set and getattr(self, key) != value:
                    raise ValueError(
                        f"preset 'paper' fixes {key}={value!r} (the NC3 paper's ASE run comments the term out); "
                        f"remove {key}={getattr(self, key)!r}"
                    )
                setattr(self, key, value)
        return self

    @property
    def needs_original(self) -> bool:
        """Whether a term anchors to the original model (gender direction, EWC)."""
        return self.orthogonal_weight > 0 or self.ewc_weight > 0


# ----- data ---------------------------------------------------------------------------------------


def word_spans(text: str, words: Iterable[str]) -> list[tuple[int, int]]:
    """Character spans of every occurrence of any of `words` in `text`: whole words (not inside a
    longer word), case-insensitive, longest word first at a position; sorted."""
    unique = sorted({w.strip().lower() for w in words if w.strip()}, key=lambda w: (-len(w), w))
    if not unique:
        return []
    pattern = re.compile(r"(?<![\w])(?:" + "|".join(re.escape(w) for w in unique) + r")(?![\w])", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


@dataclass(frozen=True)
class ASEExample:
    """One training sentence: token ids with [MASK] at the pronouns, their labels (the pronoun's id
    there, IGNORE_INDEX elsewhere) and `neutral` (1 at tokens of a neutral/stereotype word)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    neutral: tuple[int, ...]

    @property
    def masked(self) -> int:
        return sum(1 for label in self.labels if label != _ignore_index())


def _ignore_index() -> int:
    from ncsearch.heads import IGNORE_INDEX

    return IGNORE_INDEX


def _overlaps(offset: Sequence[int], spans: Sequence[tuple[int, int]]) -> bool:
    start, end = offset
    return end > start and any(start < e and end > s for s, e in spans)


def build_examples(tokenizer: Any, texts: Sequence[str], neutral_words: Iterable[str], max_length: int) -> list[ASEExample]:
    """The masked examples of `texts` (with the tokenizer's special tokens, cut at `max_length`).

    Every token overlapping a pronoun of `PRONOUNS` becomes [MASK] with its own id as the label;
    tokens overlapping a neutral word are marked. A sentence left without a masked token (no pronoun
    within `max_length`) is dropped."""
    if tokenizer.mask_token_id is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no mask token; ASE needs one")
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"ASE needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one")
    ignore = _ignore_index()
    neutral_words = list(neutral_words)
    encoded = tokenizer(
        list(texts), add_special_tokens=True, truncation=True, max_length=max_length, return_offsets_mapping=True, verbose=False
    )
    special = set(tokenizer.all_special_ids)
    examples: list[ASEExample] = []
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
        pronouns = word_spans(text, PRONOUNS)
        neutral = word_spans(text, neutral_words)
        masked, labels, flags = [], [], []
        for token, offset in zip(ids, offsets):
            real = token not in special
            if real and _overlaps(offset, pronouns):
                masked.append(tokenizer.mask_token_id)
                labels.append(token)
            else:
                masked.append(token)
                labels.append(ignore)
            flags.append(1 if real and _overlaps(offset, neutral) else 0)
        if any(label != ignore for label in labels):
            examples.append(ASEExample(tuple(masked), tuple(labels), tuple(flags)))
    return examples


# ----- the two regularizers -----------------------------------------------------------------------


def orthogonal_term(hidden: Tensor, neutral: Tensor, direction: Tensor, norm: str = "abs") -> Tensor:
    """sum over marked positions of |h . g| ("abs") or (h . g)^2 ("square"); `hidden` (B, T, d),
    `neutral` (B, T) 0/1, `direction` (d,). fp32 whatever the autocast dtype."""
    projection = hidden.float() @ direction.float()
    values = projection.abs() if norm == "abs" else projection.square()
    return (values * neutral.to(values.dtype)).sum()


def ewc_penalty(named_parameters: Iterable[tuple[str, Tensor]], reference: dict[str, Tensor], fisher: dict[str, Tensor]) -> Tensor:
    """sum_i F_i (theta_i - theta0_i)^2 over the parameters named in `reference` (fp32; no 1/2, as
    in the reference's `penalty`)."""
    total = None
    for name, param in named_parameters:
        if name not in reference:
            continue
        term = (fisher[name] * (param.float() - reference[name]).square()).sum()
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("ASE's EWC penalty matched no parameter of the model")
    return total


@dataclass
class EWCAnchors:
    """The original weights theta0 and the Fisher diagonal F, by parameter name: detached fp32
    tensors held by the baseline (not model parameters: never optimized, never checkpointed)."""

    reference: dict[str, Tensor]
    fisher: dict[str, Tensor]


def _pack_words(tokenizer: Any, words: Sequence[str], budget: int) -> list[list[int]]:
    """The words' tokens (each as it reads mid-sentence) packed greedily, in order, into chunks of at
    most `budget` tokens (the reference joins all words into one sequence; a model has a length limit)."""
    pieces = tokenizer([" " + w.strip() for w in words if w.strip()], add_special_tokens=False, verbose=False)["input_ids"]
    chunks: list[list[int]] = [[]]
    for piece in pieces:
        if len(piece) > budget:
            raise DataError(f"a gender word is longer than max_length allows ({len(piece)} tokens)")
        if len(chunks[-1]) + len(piece) > budget:
            chunks.append([])
        chunks[-1].extend(piece)
    return [c for c in chunks if c]


def gender_direction(model: nn.Module, tokenizer: Any, male: Sequence[str], female: Sequence[str], *, max_length: int, device: Any) -> Tensor:
    """Unit g = normalize(sum of the male words' last-layer states - the female words'), special
    tokens excluded (`calculate_gender_vector`; its division by the word count cancels in the norm)."""
    import torch

    from ncsearch.heads import encode
    from ncsearch.training._data import special_affixes

    prefix, suffix = special_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    model.eval()
    sums = []
    with torch.no_grad():
        for words in (male, female):
            total = None
            for chunk in _pack_words(tokenizer, words, budget):
                ids = torch.tensor([prefix + chunk + suffix], device=device)
                hidden = encode(model, ids, torch.ones_like(ids)).float()[0, len(prefix) : len(prefix) + len(chunk)]
                total = hidden.sum(0) if total is None else total + hidden.sum(0)
            if total is None:
                raise DataError("ASE's gender word list is empty")
            sums.append(total)
    direction = sums[0] - sums[1]
    return (direction / direction.norm()).detach()


def diagonal_fisher(model: nn.Module, examples: Sequence[ASEExample], *, device: Any) -> EWCAnchors:
    """theta0 and the mean over `examples` of the squared per-sentence gradient of the LM loss with
    every token its own label (batch 1, eval mode, fp32)."""
    import torch

    from ncsearch.heads import sparse_mlm_loss

    model.eval()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    with torch.autocast(device_type=torch.device(device or "cpu").type, enabled=False):
        for example in examples:
            ids = torch.tensor([example.input_ids], device=device)
            loss = sparse_mlm_loss(model, ids, torch.ones_like(ids), ids).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, grad in zip(fisher, grads):
                if grad is not None:
                    acc.addcmul_(grad.float(), grad.float(), value=1.0 / len(examples))
    return EWCAnchors(
        reference={n: p.detach().float().clone() for n, p in named},
        fisher={n: f for (n, _), f in zip(named, fisher)},
    )


#: Bumped whenever the way the Fisher is computed or stored changes (its cache entries are then unused).
_FISHER_FORMAT = 1


def cached_diagonal_fisher(model: nn.Module, examples: Sequence[ASEExample], *, device: Any) -> EWCAnchors:
    """`diagonal_fisher`, computed once per model, sample and device type on a machine and then read
    from the cache (`ncsearch._tensor_cache`).

    Why: the Fisher is a property of the original model and of a sample drawn with its own fixed seed,
    the same for every trial and replicate of a search, and it costs about a minute of one CPU core
    (396 sentences, a full backward each) at the start of every ASE trial.
    """
    import hashlib
    import json

    import torch

    from ncsearch._tensor_cache import cached_tensors, parameters_digest

    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    key = {
        "format": _FISHER_FORMAT,
        "weights": parameters_digest(model),
        "sample": hashlib.sha256(json.dumps([e.input_ids for e in examples]).encode()).hexdigest(),
        # the same sums in another order on another device type: equal to float rounding only
        "device": torch.device(device or "cpu").type,
    }
    fisher = cached_tensors("ase_fisher", key, lambda: diagonal_fisher(model, examples, device=device).fisher,
                            like=named, device=torch.device(device or "cpu"))
    return EWCAnchors(reference={n: p.detach().float().clone() for n, p in named.items()}, fisher=fisher)


# ----- the baseline -------------------------------------------------------------------------------


@register
class ASE(Baseline):
    """MLM on pronoun-masked WinoBias dev sentences + orthogonality to a gender direction + EWC
    (`baseline_options.ase`); see the module docstring for the terms and their sources."""

    name = "ase"
    Options = ASEOptions
    options: ASEOptions
    paper_alpha = 100.0  # ase/finetune_both_nc.py: loss + 100 * loss_nc3
    paper_options = {"preset": "paper"}  # the orthogonality and EWC terms are commented out there
    mlm_stream = False
    #: ASE trains on WinoBias dev, the benchmark's default split: its trials score test.
    eval_options: ClassVar[dict[str, dict[str, Any]]] = {"winobias": {"split": "test"}}
    required_files = tuple(
        f"winobias/{kind}_stereotyped_type{t}.txt.dev" for kind in ("pro", "anti") for t in (1, 2)
    ) + GENDER_WORD_FILES

    def source_corpus(self) -> list[str]:
        """The sentences ASE trains on (unmasked): WinoBias dev, all four files."""
        from ncsearch.data import load_winobias

        return [s.text for s in load_winobias(self.data_root, "dev")]

    def build(self) -> None:
        """The pronoun-masked examples and their step stream; with a regularizer on, the anchors taken
        from the original model at `self.model_path` (see "Resume" in the module docstring)."""
        from ncsearch.data import load_gender_words
        from ncsearch.training import StepSampler

        words = load_gender_words(self.data_root)
        self.examples = build_examples(self.tokenizer, self.source_corpus(), words.neutral, self.max_length)
        if not self.examples:
            raise DataError("ASE has no WinoBias sentence with a pronoun within train.max_length")
        self.sampler = StepSampler(len(self.examples), self.batch_size, seed=self.seed, stream=_STREAM, rank=self.rank, world_size=self.world_size)
        self.direction: Tensor | None = None
        self.anchors: EWCAnchors | None = None
        options = self.options
        if not options.needs_original:
            return
        if self.model_path is None:
            raise ConfigError(
                "baseline 'ase' with orthogonal_weight or ewc_weight > 0 anchors to the original (un-fine-tuned) "
                "model, but setup got no model_path; a resumed full fine-tune hands prepare_model the "
                "checkpoint's model, so the anchors cannot come from there (set baseline_options.ase.preset: paper, "
                "or both weights to 0, to train without them)"
            )
        from ncsearch.models import load_mlm

        original, _ = load_mlm(self.model_path, data_root=self.data_root)
        original.to(self.device)
        if options.orthogonal_weight > 0:
            self.direction = gender_direction(original, self.tokenizer, words.male, words.female, max_length=self.max_length, device=self.device)
        if options.ewc_weight > 0:
            self.anchors = cached_diagonal_fisher(original, self.fisher_sample(), device=self.device)
        del original

    def epoch_of(self, step: int) -> int:
        """NC3's features come from this method's own pass: the epoch of its sentence stream."""
        return self.sampler.epoch_of(step)

    def fisher_sample(self) -> list[ASEExample]:
        """`fisher_sentences` examples drawn with the fixed seed `_FISHER_SEED` (in example order)."""
        import torch

        from ncsearch.training._seeding import generator

        count = min(self.options.fisher_sentences, len(self.examples))
        order = torch.randperm(len(self.examples), generator=generator(_FISHER_SEED, _STREAM))[:count]
        return [self.examples[int(i)] for i in sorted(order.tolist())]

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model as it is, marked as trained on WinoBias dev; the EWC anchors checked against it."""
        model = super().prepare_model(model)
        config = getattr(model, "config", None)
        if config is not None:
            seen = set(getattr(config, TRAINED_ON_ATTR, None) or [])
            setattr(config, TRAINED_ON_ATTR, sorted(seen | {TRAINED_ON}))
        if self.anchors is not None:
            params = dict(model.named_parameters())
            wrong = [n for n, ref in self.anchors.reference.items() if n not in params or params[n].shape != ref.shape]
            if wrong:
                raise ConfigError(f"baseline 'ase': the original model's parameters do not match the trained one's ({wrong[:3]})")
        return model

    def _local_batch(self, step: int) -> tuple[dict[str, Tensor], int]:
        """This worker's rows of global batch `step`, padded to their longest row, and the number of
        masked positions in the whole global batch."""
        import torch

        from ncsearch._batching import pad_batch

        ignore = _ignore_index()
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        total = sum(self.examples[i].masked for i in self.sampler.global_indices(step))
        rows = [self.examples[i] for i in self.sampler.local_indices(step)]
        input_ids, attention_mask = pad_batch([r.input_ids for r in rows], pad_id)
        labels = torch.full_like(input_ids, ignore)
        neutral = torch.zeros_like(input_ids)
        for row, example in enumerate(rows):
            labels[row, : len(example.labels)] = torch.tensor(example.labels)
            neutral[row, : len(example.neutral)] = torch.tensor(example.neutral)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "neutral": neutral}
        return {k: v.to(self.device) for k, v in batch.items()}, total

    def step_terms(self, ctx: StepContext) -> StepTerms:
        """The masked pass of this step's sentences: its MLM loss, the orthogonality term and the EWC
        penalty (each weighted), and its features for NC3.

        Scaled so that DDP's gradient average over W workers gives the single-worker values: the MLM
        term is this worker's summed cross-entropy x W / the global batch's masked count (the mean over
        the global batch), the orthogonality sum is multiplied by W (the sum over the global batch); the
        EWC penalty is the same on every worker."""
        batch, total = self._local_batch(ctx.step)
        output = ctx.forward(batch["input_ids"], batch["attention_mask"], batch["labels"])
        local = int(output.index.numel())
        world = self.world_size
        losses = {"pronoun_mlm": output.loss * (local * world / total)}
        options = self.options
        if options.orthogonal_weight > 0:
            assert self.direction is not None
            direction = self.direction.to(output.hidden.device)
            orth = orthogonal_term(output.hidden, batch["neutral"], direction, options.orthogonal_norm)
            losses["orthogonal"] = options.orthogonal_weight * world * orth
        if options.ewc_weight > 0:
            assert self.anchors is not None
            losses["ewc"] = options.ewc_weight * ewc_penalty(ctx.model.named_parameters(), self.anchors.reference, self.anchors.fisher)
        features = NC3Features(output.hidden, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return StepTerms(losses=losses, nc3=features)
