"""ADEPT (Yang et al., "ADEPT: A DEbiasing PrompT Framework", AAAI 2023): a trained deep prefix
(P-tuning v2) on a frozen masked LM, pulling neutral words to equal distance from the gender
prototypes while keeping the model's representations where they were.

As in the NC3 paper's copy of the code (Xujxyang/Fairness-NC-main `adept/debias.py`, with `distance.py`
and `collect_sentences.py` of EmpathYang/ADEPT), with the settings of its `scripts/debias.sh`.

**Data** (`collect_sentences.py`, `ab_test_type=final`). Sentences of the corpus (here GAP development
+ test, split into sentences) are cut into words with GPT-2's pre-tokenizer pattern and lower-cased. A
sentence holding a word of the male (female) list is an example of that attribute, once for every
such word it holds, labelled with the positions of the word's pieces; a sentence holding no attribute
word is a neutral example once for every word of the neutral list it holds. The two attribute sets are
then balanced pair by pair: for the i-th (male, female) pair of the lists, both words keep their first
n = min(count_m, count_f) sentences, and the pair is dropped when n < `min_pair_sentences` (30).

**Representations.** E(x, w) = the states of the prompted model at the pieces of word w in sentence x,
for every layer (embeddings included, L+1 states of width d; `debias_layer=all`, `loss_target=token`),
averaged over the pieces and flattened to one vector. The attribute prototypes a_k (k = male, female)
are the means of E over all examples of attribute k, computed by the prompted model in eval mode
without gradient at the start of every epoch and held fixed within it.

**Loss.** For a batch of neutral examples n_1..n_B, each prototype gives a distribution over the batch
(`calculate_group_to_one_relative_distance_asymmetric`):

    p_k(j) = exp(-||a_k - E(n_j)||^2 / (2 rho^2)) / sum_j' exp(-||a_k - E(n_j')||^2 / (2 rho^2)),

and the equidistance term is the Jensen-Shannon divergence (in bits) between them, averaged over
attribute pairs (one pair for gender):

    L_js = JS(p_male, p_female),  JS(p, q) = KL(p || m)/2 + KL(q || m)/2,  m = (p + q)/2.

On attribute examples, the preservation term keeps every state h of the prompted model near the same
state h0 of the original model (the NC3 paper's `--KL_divergence` form; softmax over the d features,
for h and for -h, since a state has no sign):

    L_kl = KL(softmax(h0) || softmax(h)) + KL(softmax(-h0) || softmax(-h)),  in bits, averaged over
           the layers and real tokens of each sentence, then over sentences.

The reference trains each micro-batch on one kind (male, female or neutral), the three kinds in equal
numbers, with loss js_weight * L_js on a neutral batch and kl_weight * L_kl on an attribute batch. One
step here holds one batch of each kind and weighs each by 1/3, so a step's loss is the reference's
mean micro-batch loss, the scale next to which the paper's code added 5 * UNC3 (`paper_alpha`):

    loss = (js_weight * L_js + kl_weight * (L_kl(male) + L_kl(female))) / 3.

NC3's statistics come from this step's prompted pass over all three batches (unmasked, every real
position), as the paper's code fed them from every micro-batch. An epoch is one pass over the attribute
examples, about |male| / batch_size steps (the reference's epoch: floor(|male| / batch_size) batches of
each kind); `epoch_of(step)` says which one a step is in.

**Evaluation.** A prefix cannot be merged into weights; the checkpoint is the frozen masked LM plus
the peft prefix (`ncsearch._prefix_mlm`), and `ncsearch.models.load_mlm` loads it back as a model whose
encoder runs behind the prefix, so every benchmark scores the prompted model.

**ADEPT-finetuning** (`tuning: full`, the paper's variant): the same loss with every weight of the
masked LM trained and no prefix; the original model of L_kl is a frozen copy of the starting weights.
`nc3.preset: paper` selects it (`paper_options`): the paper's code adds NC3 through
`model.cls.predictions.decoder`, which only its ADEPT-finetuning model has. With the prefix, NC3 adds
its value to the loss but has nothing to train: its gradient reaches the decoder rows W only, and W (tied
to the word embeddings) is frozen.

Where this differs from the reference, and why:
- rho (`perplexity`) is 10: the scripts pass `--perplexity 15`, but `debias.py` never hands it to the
  distance function, whose default 10 is what the published runs used.
- The prefix comes from peft (`PrefixTuningConfig`, no projection, 40 virtual tokens as `pre_seq_len`);
  P-tuning v2 also applied dropout (0.1) to the prefix, which peft's prefix does not.
- Padding positions are left out of L_kl (the reference averaged over them too), and a word of several
  pieces is the exact mean of its pieces (the reference divided by the longest label in the batch).
- Prototypes average every attribute example (the reference: all but the last partial batch), and
  sentences longer than the trial's `max_length` tokens (or than the model's positions left after the
  prefix) are dropped (the reference: over 128 words).
- No development split and best-checkpoint selection (the recipe saves the last step).
- The reference's learning rate is 5e-4 (batches of 32, 4 accumulation steps, 10 epochs); those are the
  trial's `train` settings here, not options of this method.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.debias._base import GENDER_WORD_FILES, Baseline, NC3Features, StepContext, StepTerms, register
from ncsearch.errors import DataError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "ADEPT",
    "ADEPTOptions",
    "AdeptData",
    "WordExample",
    "collect_examples",
    "equidistance_js",
    "preservation_kl",
    "word_tokens",
]

# GPT-2's pre-tokenizer pattern, as collect_sentences.py cuts sentences into words (\p{L} / \p{N} of
# the `regex` module written with the standard library's classes).
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")
# StepSampler streams of this method (1 is the recipe's MLM corpus): male, female, neutral.
_STREAMS = (41, 42, 43)
_KINDS = ("male", "female", "neutral")
# Keys of the prototypes inside `trainable_state` (not parameters: popped before the parameters load).
_PROTOTYPES = "adept.prototypes"
_PROTOTYPE_EPOCH = "adept.prototype_epoch"
#: Sentences per batch of the prototype pass.
_PROTOTYPE_CHUNK = 64


class ADEPTOptions(StrictOptions):
    """ADEPT's settings in the NC3 paper's `adept/scripts/debias.sh` (and EmpathYang/ADEPT `arguments.py`)."""

    #: "prefix": ADEPT, a deep prefix on the frozen model; "full": the paper's ADEPT-finetuning variant
    #: (the same loss, every weight of the masked LM trains, no prefix).
    tuning: Literal["prefix", "full"] = "prefix"

    #: Virtual tokens of the deep prefix (`pre_seq_len`).
    prefix_length: Annotated[int, Field(ge=1)] = 40
    #: A two-layer MLP over the prefix embeddings (`prefix_projection`), of `prefix_hidden_size` units.
    prefix_projection: bool = False
    prefix_hidden_size: Annotated[int, Field(ge=1)] = 512
    #: Weight of the JS equidistance term (the reference's alpha of `--weighted_loss 0.3 0.7`).
    js_weight: Annotated[float, Field(ge=0)] = 0.3
    #: Weight of the KL preservation term (the reference's beta).
    kl_weight: Annotated[float, Field(ge=0)] = 0.7
    #: rho, the width of the Gaussian kernel over squared distances (the value the code used; see above).
    perplexity: Annotated[float, Field(gt=0)] = 10.0
    #: A (male, female) word pair is kept only with at least this many sentences for each word.
    min_pair_sentences: Annotated[int, Field(ge=1)] = 30


@dataclass(frozen=True)
class WordExample:
    """A tokenized sentence (special tokens included) and the positions of one word's pieces in it."""

    input_ids: tuple[int, ...]
    positions: tuple[int, ...]


@dataclass
class AdeptData:
    """ADEPT's training examples: `attributes[k]` for k = male, female (balanced pair by pair), and
    the neutral examples."""

    attributes: list[list[WordExample]]
    neutral: list[WordExample]


def word_tokens(sentence: str) -> list[str]:
    """The words of `sentence` as collect_sentences.py cuts them (GPT-2's pattern, stripped)."""
    return [piece.strip() for piece in _WORDS.findall(sentence)]


def _find(ids: Sequence[int], pieces: Sequence[int]) -> int | None:
    n = len(pieces)
    if n == 0:
        return None
    for start in range(len(ids) - n + 1):
        if list(ids[start : start + n]) == list(pieces):
            return start
    return None


def collect_examples(
    sentences: Sequence[str],
    tokenizer: Any,
    *,
    male: Sequence[str],
    female: Sequence[str],
    neutral: Sequence[str],
    max_length: int,
    min_pair_sentences: int = 30,
) -> AdeptData:
    """ADEPT's examples of `sentences` (module docstring, "Data"); `male[i]` and `female[i]` are
    counterparts. A word is located by its own pieces (its first occurrence in the sentence, as cased
    there) inside the sentence's tokens; a word whose pieces are not found there is skipped."""
    attribute_sets = [{w.lower() for w in male}, {w.lower() for w in female}]
    neutral_set = {w.lower() for w in neutral}
    keep = [s for s in sentences if len(s.split()) > 1]
    encoded = tokenizer(list(keep), add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
    pieces: dict[str, list[int]] = {}

    def locate(ids: list[int], words: list[str], lower: list[str], word: str) -> WordExample | None:
        original = words[lower.index(word)]
        if original not in pieces:
            pieces[original] = tokenizer(original, add_special_tokens=False)["input_ids"]
        start = _find(ids, pieces[original])
        if start is None:
            return None
        return WordExample(tuple(ids), tuple(range(start, start + len(pieces[original]))))

    by_word: list[dict[str, list[WordExample]]] = [{}, {}]
    neutral_examples: list[WordExample] = []
    for sentence, ids in zip(keep, encoded):
        if len(ids) > max_length:
            continue
        words = word_tokens(sentence)
        lower = [w.lower() for w in words]
        present = set(lower)
        attribute = False
        for k, attribute_set in enumerate(attribute_sets):
            found = sorted(attribute_set & present)
            attribute = attribute or bool(found)
            for word in found:
                example = locate(ids, words, lower, word)
                if example is not None:
                    by_word[k].setdefault(word, []).append(example)
        if not attribute:
            for word in sorted(neutral_set & present):
                example = locate(ids, words, lower, word)
                if example is not None:
                    neutral_examples.append(example)
    attributes: list[list[WordExample]] = [[], []]
    for m, f in zip(male, female):
        ms, fs = by_word[0].get(m.lower(), []), by_word[1].get(f.lower(), [])
        n = min(len(ms), len(fs))
        if n < min_pair_sentences:
            continue
        attributes[0].extend(ms[:n])
        attributes[1].extend(fs[:n])
    return AdeptData(attributes, neutral_examples)


# ----- the two loss terms -----------------------------------------------------------------------------

def _kl_bits(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) in bits over the last dimension, from log-probabilities (0 * log 0 = 0)."""
    import math

    import torch

    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1) / math.log(2.0)


def equidistance_js(neutral: Tensor, prototypes: Tensor, perplexity: float) -> Tensor:
    """L_js of the module docstring: `neutral` (B, D) word representations, `prototypes` (K, D).

    p_k = softmax_j(-||a_k - n_j||^2 / (2 rho^2)) over the batch (the reference's exp-then-normalise,
    computed in log space so that far-apart states do not underflow to 0/0); the result is the mean
    over attribute pairs k < k' of JS(p_k, p_k') in bits."""
    import math

    import torch

    distances = torch.cdist(prototypes.to(neutral.dtype), neutral).pow(2)  # (K, B)
    log_p = torch.log_softmax(-distances / (2.0 * perplexity**2), dim=1)
    total = neutral.new_zeros(())
    pairs = 0
    for i in range(log_p.shape[0]):
        for j in range(i + 1, log_p.shape[0]):
            log_m = torch.logaddexp(log_p[i], log_p[j]) - math.log(2.0)
            total = total + 0.5 * _kl_bits(log_p[i], log_m) + 0.5 * _kl_bits(log_p[j], log_m)
            pairs += 1
    return total / max(pairs, 1)


def preservation_kl(prompted: Tensor, original: Tensor, attention_mask: Tensor) -> Tensor:
    """L_kl of the module docstring: states (S, B, T, d) of S layers, `attention_mask` (B, T).

    Per state: KL(softmax(h0) || softmax(h)) + KL(softmax(-h0) || softmax(-h)) in bits; the mean over
    the layers and real tokens of each sentence, then over sentences."""
    import torch

    prompted, original = prompted.float(), original.float()
    per_state = _kl_bits(torch.log_softmax(original, -1), torch.log_softmax(prompted, -1)) + _kl_bits(
        torch.log_softmax(-original, -1), torch.log_softmax(-prompted, -1)
    )  # (S, B, T)
    mask = attention_mask.to(per_state.dtype)
    per_sentence = (per_state * mask).sum(dim=(0, 2)) / (mask.sum(dim=1) * per_state.shape[0])
    return per_sentence.mean()


# ----- the baseline ----------------------------------------------------------------------------------

def _state_modules(encoder: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are E's states: the embeddings and every layer of `encoder`."""
    from ncsearch.model_families import family_of_model_type

    family = family_of_model_type(getattr(encoder.config, "model_type", None))
    if family is None:
        from ncsearch.errors import ModelError

        raise ModelError(f"adept: no supported encoder layout for {type(encoder).__name__}")
    return [encoder.embeddings, *family.encoder_layers(encoder)]


@contextmanager
def _layer_states(encoder: nn.Module) -> Iterator[list[Tensor | None]]:
    """Within the block, the list holds the output of the embeddings and of every layer of `encoder`
    (a Hugging Face base model) from its latest forward, the Hugging Face `hidden_states` order."""
    modules = _state_modules(encoder)
    states: list[Tensor | None] = [None] * len(modules)

    def keeper(i: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            states[i] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def _word_weights(examples: Sequence[WordExample], width: int) -> Tensor:
    """(B, width) weights that average each example's word pieces: 1/n at its n positions."""
    import torch

    weights = torch.zeros(len(examples), width)
    for row, example in enumerate(examples):
        weights[row, list(example.positions)] = 1.0 / len(example.positions)
    return weights


def _word_vectors(states: Sequence[Tensor], weights: Tensor) -> Tensor:
    """(B, S * d): each row's word representation at every one of the S states, flattened."""
    import torch

    stacked = torch.stack(list(states), dim=0).float()  # (S, B, T, d); fp32 under bf16 autocast too
    words = torch.einsum("sbtd,bt->bsd", stacked, weights.float())
    return words.reshape(words.shape[0], -1)


def _gather_rows(local: Tensor, world_size: int) -> Tensor:
    """Every worker's rows of `local` (B_r, D), in rank order, with gradients flowing back to each
    worker's own rows; one worker: `local` itself. Shares may differ by one row (padded for the gather)."""
    import torch

    if world_size <= 1:
        return local
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    sizes = torch.tensor([local.shape[0]], device=local.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size)]
    dist.all_gather(all_sizes, sizes)
    widest = int(max(int(s) for s in all_sizes))
    padded = torch.cat([local, local.new_zeros(widest - local.shape[0], local.shape[1])], dim=0)
    parts = dist_fn.all_gather(padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, all_sizes)], dim=0)


@register
class ADEPT(Baseline):
    """ADEPT prefix tuning (`baseline_options.adept`); see the module docstring for the equations."""

    name = "adept"
    Options = ADEPTOptions
    options: ADEPTOptions
    paper_alpha = 5.0  # adept/debias.py: loss = loss + 5 * loss_nc3
    # The paper's code adds NC3 with W = model.cls.predictions.decoder; only its ADEPT-finetuning model
    # (AutoModelWithLMHead) has that head, its prefix model (BertPrefixForSequenceClassification) has none.
    paper_options = {"tuning": "full"}
    required_files = Baseline.required_files + GENDER_WORD_FILES
    mlm_stream = False
    nc3_pass = "unmasked"  # NC3 reads its features from this method's own unmasked pass
    # A restart rebuilds the model from the original weights (which "full" also needs, as the reference
    # of the KL term) and loads `trainable_state`: the prefix, or in "full" every weight, plus the prototypes.
    frozen_base = True

    def build(self) -> None:
        """The three example sets of the corpus and one StepSampler each (the trial's batch size)."""
        from ncsearch.collapse import split_sentences
        from ncsearch.data import load_gender_words
        from ncsearch.training import StepSampler

        words = load_gender_words(self.data_root)
        self.data = collect_examples(
            split_sentences(self.source_corpus()),
            self.tokenizer,
            male=words.male,
            female=words.female,
            neutral=words.neutral,
            # behind a prefix, the input's positions come after the prefix's (see ncsearch._prefix_mlm)
            max_length=min(self.max_length, int(self.tokenizer.model_max_length) - self._prefix_positions()),
            min_pair_sentences=self.options.min_pair_sentences,
        )
        sets = [*self.data.attributes, self.data.neutral]
        empty = [kind for kind, examples in zip(_KINDS, sets) if not examples]
        if empty:
            raise DataError(
                f"adept: no {' / '.join(empty)} examples in the corpus (a word pair needs "
                f"{self.options.min_pair_sentences} sentences per word; see baseline_options.adept.min_pair_sentences)"
            )
        self.samplers = [
            StepSampler(len(examples), self.batch_size, seed=self.seed, stream=stream, rank=self.rank, world_size=self.world_size)
            for examples, stream in zip(sets, _STREAMS)
        ]
        self._prototypes: Tensor | None = None
        self._prototype_epoch: int | None = None

    def _prefix_positions(self) -> int:
        return self.options.prefix_length if self.options.tuning == "prefix" else 0

    def epoch_of(self, step: int) -> int:
        """The epoch of step `step` (0-based) in the attribute streams: floor(step * batch_size / |male|)
        (|male| = |female|). NC3's `means: epoch` and the prototypes start afresh with it."""
        return self.samplers[0].epoch_of(step)

    # ----- model ----------------------------------------------------------------------------------

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """"prefix": `model` frozen behind a fresh peft prefix, and the same encoder without it is the
        original model. "full": `model` itself trains, and a frozen copy taken now (the original
        weights: a restart also starts from them) is the original model."""
        import copy

        from ncsearch._prefix_mlm import add_prefix

        model = super().prepare_model(model)
        if self.options.tuning == "full":
            self._original = copy.deepcopy(model).eval().requires_grad_(False)
            return model
        return add_prefix(
            model,
            num_virtual_tokens=self.options.prefix_length,
            projection=self.options.prefix_projection,
            projection_hidden_size=self.options.prefix_hidden_size,
        )

    def _encoder(self, model: nn.Module) -> nn.Module:
        """The Hugging Face encoder inside the trained model (behind the prefix, if any)."""
        from ncsearch._prefix_mlm import PrefixMaskedLM

        return model.masked_lm.base_model if isinstance(model, PrefixMaskedLM) else model.base_model

    def _original_encoder(self, model: nn.Module) -> nn.Module:
        """The encoder of the original model: the frozen copy ("full"), or the trained model's own
        encoder without the prefix ("prefix", whose base weights never change)."""
        return self._original.base_model if self.options.tuning == "full" else self._encoder(model)

    def trainable_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The prefix, plus this epoch's prototypes (computed by the model at the epoch's start, which
        a restart mid-epoch no longer has)."""
        import torch

        state = super().trainable_state(model)
        if self._prototypes is not None:
            state[_PROTOTYPES] = self._prototypes.detach().cpu().clone()
            state[_PROTOTYPE_EPOCH] = torch.tensor(int(self._prototype_epoch or 0))
        return state

    def load_trainable_state(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        state = dict(state)
        prototypes, epoch = state.pop(_PROTOTYPES, None), state.pop(_PROTOTYPE_EPOCH, None)
        super().load_trainable_state(model, state)
        if prototypes is not None and epoch is not None:
            self._prototypes = prototypes.to(self.device) if self.device is not None else prototypes
            self._prototype_epoch = int(epoch)

    # ----- per step -------------------------------------------------------------------------------

    def _pad(self, examples: Sequence[WordExample]) -> tuple[Tensor, Tensor]:
        from ncsearch._batching import pad_batch

        return pad_batch([e.input_ids for e in examples], self.tokenizer.pad_token_id)

    def prototypes(self, model: nn.Module, *, chunk: int = _PROTOTYPE_CHUNK) -> Tensor:
        """(2, S * d): the mean representation of each attribute's examples by `model` (the bare trained
        masked LM, behind its prefix if any) in eval mode, without gradient.

        Only sums are needed, so each distinct sentence is encoded once (a sentence holding "he" and
        "she", or "his" and "him", is an example several times), sentences of similar length share a
        batch, and a batch contributes (S, B, T, d) x (B, T) with per-attribute weights that add 1/n
        at each example's n word pieces. Workers split the sentences and all-reduce the sums, so every
        worker holds the same prototypes."""
        return self._mean_of_sums(self._local_sums(model, chunk))

    def _initial_prototypes(self, model: nn.Module) -> Tensor:
        """Step 0's prototypes, from this worker's sums as the cache holds them when this machine has
        computed them before.

        At step 0 the model is untrained: the original weights, behind the seed's fresh prefix in
        "prefix" tuning. So the pass (about 30 s of one core on MiniLM-L6 over GAP's ~3,000 examples
        of each attribute) is the same for every configuration trained at one seed ("prefix"), or for
        every trial of a search ("full", the paper's ADEPT run with NC3); `ncsearch._tensor_cache`
        computes it once per machine. Each worker caches its own share's sums (so no collective runs
        under the cache's lock), and the all-reduce follows. Later epochs' prototypes come from
        trained weights and are computed as they come."""
        import torch

        from ncsearch._tensor_cache import cached_tensors

        device = self.device if self.device is not None else next(model.parameters()).device
        like = {"sums": torch.empty(2, self._width(model))}
        sums = cached_tensors("adept_prototype_sums", self._sums_key(model, device),
                              lambda: {"sums": self._local_sums(model, _PROTOTYPE_CHUNK)}, like=like, device=device)
        return self._mean_of_sums(sums["sums"])

    def _sums_key(self, model: nn.Module, device: Any) -> dict[str, Any]:
        """Everything this worker's sums depend on: the model's weights (the prefix included), the
        attribute examples (token ids and word positions, in order), the chunk, the worker's share
        (rank of world size), the device type and the autocast setting the pass runs under."""
        import hashlib

        import torch

        from ncsearch._tensor_cache import parameters_digest

        examples = hashlib.sha256()
        for k, attribute in enumerate(self.data.attributes):
            for example in attribute:
                examples.update(f"{k}|{list(example.input_ids)}|{list(example.positions)}\n".encode())
        kind = torch.device(device).type
        autocast = str(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else "off"
        return {"format": 1, "weights": parameters_digest(model), "examples": examples.hexdigest(),
                "chunk": _PROTOTYPE_CHUNK, "rank": self.rank, "world_size": self.world_size, "device": kind,
                "autocast": autocast}

    def _width(self, model: nn.Module) -> int:
        """S * d: the length of one flattened word representation E."""
        return len(_state_modules(self._encoder(model))) * model.config.hidden_size

    def _local_sums(self, model: nn.Module, chunk: int) -> Tensor:
        """(2, S * d): the sums of E over this worker's share of the attribute examples (see `prototypes`)."""
        import torch

        from ncsearch.heads import encode

        sentences: dict[tuple[int, ...], int] = {}
        owners: list[list[tuple[int, WordExample]]] = []  # per distinct sentence: (attribute, example)
        for k, examples in enumerate(self.data.attributes):
            for example in examples:
                row = sentences.setdefault(example.input_ids, len(sentences))
                if row == len(owners):
                    owners.append([])
                owners[row].append((k, example))
        order = sorted(range(len(sentences)), key=lambda r: (-len(owners[r][0][1].input_ids), r))
        mine = order[self.rank :: self.world_size]
        sums = torch.zeros(2, self._width(model), device=self.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), _layer_states(self._encoder(model)) as states:
                for start in range(0, len(mine), chunk):
                    part = mine[start : start + chunk]
                    ids, mask = self._pad([owners[r][0][1] for r in part])
                    encode(model, ids.to(self.device), mask.to(self.device))
                    weights = torch.zeros(2, len(part), ids.shape[1])
                    for b, r in enumerate(part):
                        for k, example in owners[r]:
                            weights[k, b, list(example.positions)] += 1.0 / len(example.positions)
                    stacked = torch.stack([s.float() for s in states])  # (S, B, T, d)
                    sums += torch.einsum("sbtd,kbt->ksd", stacked, weights.to(stacked.device)).flatten(1)
        finally:
            model.train(was_training)
        return sums

    def _mean_of_sums(self, sums: Tensor) -> Tensor:
        """The prototypes from every worker's sums (all-reduced), so that every worker holds the same."""
        import torch

        if self.world_size > 1:
            import torch.distributed as dist

            sums = sums.clone()
            dist.all_reduce(sums)
        counts = torch.tensor([len(a) for a in self.data.attributes], dtype=sums.dtype, device=sums.device)
        return sums / counts[:, None]

    def step_terms(self, ctx: StepContext) -> StepTerms:
        import torch

        model = ctx.model
        epoch = self.epoch_of(ctx.step)
        if self._prototype_epoch != epoch or self._prototypes is None:
            self._prototypes = self._initial_prototypes(model) if ctx.step == 0 else self.prototypes(model)
            self._prototype_epoch = epoch
        sets = [*self.data.attributes, self.data.neutral]
        rows = [[examples[i] for i in sampler.local_indices(ctx.step)]
                for examples, sampler in zip(sets, self.samplers)]
        batch = [e for kind in rows for e in kind]
        ids, mask = self._pad(batch)
        ids, mask = ids.to(ctx.device), mask.to(ctx.device)
        n_attribute = len(rows[0]) + len(rows[1])
        if self.options.tuning == "full":
            self._original.to(ctx.device)  # the recipe moves the trained model only
        encoder, reference = self._encoder(model), self._original_encoder(model)

        # The original model (eval mode, as the reference's original_model) on the attribute rows.
        was_training = reference.training
        reference.eval()
        try:
            with torch.no_grad(), _layer_states(reference) as states:
                reference(input_ids=ids[:n_attribute], attention_mask=mask[:n_attribute])
                original = torch.stack([s.float() for s in states])  # (S, Ba, T, d)
        finally:
            reference.train(was_training)

        # The trained pass over all three kinds, through the DDP-wrapped model (one backward syncs it).
        with _layer_states(encoder) as states:
            output = ctx.forward(ids, mask)
            prompted = torch.stack([s for s in states])  # (S, B, T, d)

        kl = preservation_kl(prompted[:, :n_attribute], original, mask[:n_attribute])
        neutral_weights = _word_weights(rows[2], ids.shape[1]).to(ctx.device)
        neutral = _word_vectors(list(prompted[:, n_attribute:]), neutral_weights)
        js = equidistance_js(_gather_rows(neutral, self.world_size), self._prototypes, self.options.perplexity)
        losses = {
            "adept_js": self.options.js_weight * js / 3.0,
            "adept_kl": self.options.kl_weight * kl * (2.0 / 3.0),  # the mean of the two attribute kinds, twice
        }
        return StepTerms(losses=losses, nc3=NC3Features(output.hidden, ids, mask, labels=None))
