"""MABEL (He et al. 2022, "MABEL: Attenuating Gender Bias using Textual Entailment Data", EMNLP).

MABEL trains on entailment pairs (premise p, hypothesis h) that mention a gendered word, each with its
counterfactual (p^, h^): every gendered word of both sentences swapped (`CounterfactualSwapper`, the
swapper of CDA). With sentence embeddings z = [CLS] of the last layer and s(a, b) = cos(a, b) / tau,
over a batch of m pairs (princeton-nlp/MABEL training/model.py, `cl_forward`):

- contrastive (InfoNCE with in-batch negatives, original and augmented pairs in one batch): with
  P = [p_1..p_m, p^_1..p^_m] and H = [h_1..h_m, h^_1..h^_m],
      L_CL = -1/(2m) sum_i log( exp s(P_i, H_i) / sum_j exp s(P_i, H_j) );
- alignment (`a1_loss`, the one run.sh turns on): the premise-hypothesis similarity matrices of the
  originals and of the counterfactuals should agree,
      L_AL = 1/m sum_i sum_j ( s(p_i, h_j) - s(p^_i, h^_j) )^2
  (`align_loss_fct(x, y) = ||x - y||_2^2` per row, averaged over rows; the code compares the whole
  m x m matrices at temperature tau, not only the diagonal);
- auxiliary MLM on the same four sentences, BERT-masked at 15%: L_MLM.

    L = L_CL + lambda_AL * L_AL + lambda_MLM * L_MLM,   tau = 0.05, lambda_AL = 0.05, lambda_MLM = 0.1

(train.py's `softmax_temp`, run.sh's `--align_temp 0.05` used as the alignment weight, train.py's
`mlm_weight`). The NC3 paper's MABEL run (Xujxyang/Fairness-NC-main mabel/training/model_nc.py) adds
10 * NC3 with class means from the unmasked contrastive passes over all four sentences; here the
recipe adds NC3 on the features this baseline returns from its unmasked rows.

Choices of this implementation (see also `MABELOptions`):

- Sentence representation: [CLS] of the last layer *without* MABEL's MLP pooler. run.sh trains with
  `pooler_type cls`, a two-layer Tanh MLP over [CLS] with its own weights, which convert_to_hf.py drops
  when it exports the masked LM. Parameters outside the masked LM are not optimized by the recipe and
  would not survive a checkpoint, so the embedding is the MLP's input (`cls_before_pooler`).
- One forward per step: the unmasked rows (4 sentences per pair) and their masked copies go through
  `ctx.forward` as one padded batch with labels only on the masked copies, so the contrastive terms and
  NC3 read the unmasked rows and the MLM loss is the masked rows' (MABEL runs 4 + 1 encoder calls).
- Data: the trial's `batch_size` counts pairs (global, over all workers; MABEL: 32 per device) and
  `max_length` truncates each sentence. The corpus defaults to an offline substitute (GLUE RTE
  entailment + MRPC paraphrase pairs, `ncsearch.data.load_entailment_pairs`); `describe()` records it.
- Workers: the contrastive and alignment terms are computed over the global batch on every worker
  (differentiable all-gather), and the MLM term is weighted by the worker's share of the global masked
  tokens, so N workers compute the same loss and gradients as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.debias._base import GENDER_WORD_FILES, Baseline, NC3Features, StepContext, StepTerms, register
from ncsearch.errors import DataError

if TYPE_CHECKING:
    from torch import Tensor

    from ncsearch.data import EntailmentPair

__all__ = ["MABEL", "CounterfactualPair", "MABELOptions", "alignment_loss", "counterfactual_pairs", "info_nce"]

# StepSampler stream of the pair order (1 is the recipe's MLM corpus) and the generator key of the masking.
_PAIR_STREAM = 10
_MASK_KEY = 11

_CORPUS_NOTES = {
    "offline": "offline: GLUE RTE+MRPC entailment pairs (substitute for SNLI+MNLI)",
    "snli_mnli": "snli_mnli: SNLI+MNLI entailment pairs (the paper's data)",
}


class MABELOptions(StrictOptions):
    """MABEL's published settings (princeton-nlp/MABEL training/train.py and run.sh)."""

    #: Entailment pairs: "offline" (GLUE RTE + MRPC, in the mirror) or "snli_mnli" (files under <data>/nli/).
    corpus: Literal["offline", "snli_mnli"] = "offline"
    #: tau of the cosine similarities in both the contrastive and the alignment term (`softmax_temp`).
    temperature: Annotated[float, Field(gt=0)] = 0.05
    #: lambda_AL, the weight of the alignment term (run.sh `--align_temp 0.05`).
    alignment_weight: Annotated[float, Field(ge=0)] = 0.05
    #: lambda_MLM, the weight of the auxiliary masked-LM term (`mlm_weight`).
    mlm_weight: Annotated[float, Field(ge=0)] = 0.1
    #: Share of the pair sentences' tokens masked for the auxiliary MLM (`mlm_probability`).
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] = 0.15


class CounterfactualPair(NamedTuple):
    """An entailment pair and its gender counterfactual (MABEL's orig_sent0/1, aug_sent0/1)."""

    premise: str
    hypothesis: str
    aug_premise: str
    aug_hypothesis: str


def counterfactual_pairs(pairs: Iterable[EntailmentPair], swap: Callable[[str], str]) -> list[CounterfactualPair]:
    """The pairs with a gendered word in the premise or the hypothesis, each with both sentences swapped
    (a pair without one has no counterfactual and is dropped, as in MABEL's data)."""
    out: list[CounterfactualPair] = []
    for pair in pairs:
        aug_premise, aug_hypothesis = swap(pair.premise), swap(pair.hypothesis)
        if aug_premise != pair.premise or aug_hypothesis != pair.hypothesis:
            out.append(CounterfactualPair(pair.premise, pair.hypothesis, aug_premise, aug_hypothesis))
    return out


def _similarities(x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """(len(x), len(y)) cosine similarities divided by the temperature, in fp32."""
    import torch.nn.functional as F

    x = F.normalize(x.float(), dim=-1, eps=1e-8)
    y = F.normalize(y.float(), dim=-1, eps=1e-8)
    return x @ y.T / temperature


def info_nce(anchors: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """InfoNCE with in-batch negatives: row i's positive is `positives[i]`, every other row a negative.

    -1/n sum_i log softmax_j( cos(anchors_i, positives_j) / temperature )[i]
    """
    import torch
    import torch.nn.functional as F

    logits = _similarities(anchors, positives, temperature)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))


def alignment_loss(premises: Tensor, hypotheses: Tensor, aug_premises: Tensor, aug_hypotheses: Tensor, temperature: float) -> Tensor:
    """MABEL's `a1_loss`: mean over rows of the squared distance between the original and the
    counterfactual premise-hypothesis similarity matrices (cosine / temperature)."""
    original = _similarities(premises, hypotheses, temperature)
    augmented = _similarities(aug_premises, aug_hypotheses, temperature)
    return (original - augmented).pow(2).sum(dim=1).mean()


def _gather_rows(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Every worker's rows of `x` in rank order, differentiably (the gradient of a row flows back to the
    worker that computed it). Rows are padded to the largest share for the collective, then cut."""
    import torch
    from torch.distributed.nn.functional import all_gather

    width = max(sizes)
    if x.shape[0] < width:
        x = torch.cat([x, x.new_zeros((width - x.shape[0], *x.shape[1:]))])
    parts = all_gather(x.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


@register
class MABEL(Baseline):
    """Contrastive + alignment + auxiliary MLM on gender-augmented entailment pairs (`baseline_options.mabel`);
    the equations are in the module docstring."""

    name = "mabel"
    Options = MABELOptions
    options: MABELOptions
    paper_alpha = 10.0  # Fairness-NC-main mabel/training/model_nc.py: loss + 10 * loss_nc3
    mlm_stream = False
    nc3_pass = "unmasked"  # NC3 reads its features from its unmasked contrastive pass
    #: The gender lists of the swapper; the entailment files depend on `corpus` (see `preflight`).
    required_files = GENDER_WORD_FILES

    def preflight(self, model_path: str) -> None:
        """The gender lists and the entailment files of the chosen corpus (the SNLI/MNLI message names
        'ncsearch data pull --only nli')."""
        from ncsearch.data._entailment import check_entailment_files

        super().preflight(model_path)
        check_entailment_files(self.data_root, self.options.corpus)

    # ----- data -----------------------------------------------------------------------------------

    def pairs(self) -> list[CounterfactualPair]:
        """The training pairs of the chosen corpus with their counterfactuals (read once, then kept)."""
        cached = getattr(self, "_pairs", None)
        if cached is None:
            from ncsearch.data import load_entailment_pairs, load_gender_words
            from ncsearch.debias._cda import CounterfactualSwapper

            swap = CounterfactualSwapper(load_gender_words(self.data_root).pairs)
            cached = counterfactual_pairs(load_entailment_pairs(self.data_root, self.options.corpus), swap)
            if not cached:
                raise DataError(f"no entailment pair of corpus {self.options.corpus!r} contains a gendered word")
            self._pairs = cached
        return cached

    def source_corpus(self) -> list[str]:
        """The original pair sentences (premise, hypothesis, ...): the NC3 vocabulary's corpus, since
        this method has no MLM stream of its own."""
        return [text for pair in self.pairs() for text in (pair.premise, pair.hypothesis)]

    def transform_corpus(self, texts: list[str]) -> list[str]:
        """The originals plus the counterfactual of every sentence that changes (what the model sees)."""
        from ncsearch.data import load_gender_words
        from ncsearch.debias._cda import CounterfactualSwapper, augment_two_sided

        return augment_two_sided(texts, CounterfactualSwapper(load_gender_words(self.data_root).pairs))

    def build(self) -> None:
        """Tokenize the four sentences of every pair (each truncated to `self.max_length`) and build the
        step-indexed pair stream (`self.batch_size` pairs a global batch)."""
        from ncsearch.training import StepSampler

        if self.tokenizer.mask_token_id is None or self.tokenizer.pad_token_id is None:
            raise DataError(f"tokenizer {type(self.tokenizer).__name__} has no mask or pad token; MABEL's MLM term needs both")
        pairs = self.pairs()
        texts = [text for pair in pairs for text in pair]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_attention_mask=False, verbose=False)["input_ids"]
        self._ids: list[tuple[list[int], ...]] = [tuple(encoded[4 * i : 4 * i + 4]) for i in range(len(pairs))]
        self.sampler = StepSampler(len(pairs), self.batch_size, seed=self.seed, stream=_PAIR_STREAM, rank=self.rank, world_size=self.world_size)
        self._special_ids = tuple(sorted(set(self.tokenizer.all_special_ids)))
        self._pad_id = self.tokenizer.pad_token_id
        self._mask_id = self.tokenizer.mask_token_id
        self._vocab_size = len(self.tokenizer)

    def batch(self, step: int) -> dict[str, Tensor]:
        """This worker's rows of global batch `step`, trimmed to their longest row.

        Rows: the unmasked premises, hypotheses, counterfactual premises, counterfactual hypotheses
        (n each, n = this worker's pairs), then the same 4n rows masked. `labels` are IGNORE_INDEX on
        the unmasked rows. The masking is drawn over the whole global batch from (seed, step), so it does
        not depend on the number of workers; `masked_global` counts the masked tokens of the global batch.
        """
        import torch

        from ncsearch._batching import pad_batch
        from ncsearch.training import IGNORE_INDEX, maskable, mlm_mask
        from ncsearch.training._seeding import generator

        if not hasattr(self, "sampler"):
            raise RuntimeError("MABEL.setup() must run before its batches are drawn")
        indices = self.sampler.global_indices(step)
        count = len(indices)
        rows = [self._ids[i][k] for k in range(4) for i in indices]  # sentence-major: p..., h..., p^..., h^...
        input_ids, attention_mask = pad_batch(rows, self._pad_id)
        masked, labels = mlm_mask(
            input_ids,
            maskable(input_ids, self._special_ids, attention_mask),
            generator(self.seed, _MASK_KEY, step),
            probability=self.options.mlm_probability,
            mask_id=self._mask_id,
            vocab_size=self._vocab_size,
            ensure_one=True,
        )
        local = self.sampler.local_rows()
        select = torch.cat([local + k * count for k in range(4)])
        attention_mask = attention_mask.index_select(0, select)
        width = int(attention_mask.sum(dim=1).max())
        plain = input_ids.index_select(0, select)[:, :width]
        masked = masked.index_select(0, select)[:, :width]
        local_labels = labels.index_select(0, select)[:, :width]
        attention_mask = attention_mask[:, :width]
        return {
            "input_ids": torch.cat([plain, masked]),
            "attention_mask": torch.cat([attention_mask, attention_mask]),
            "labels": torch.cat([torch.full_like(local_labels, IGNORE_INDEX), local_labels]),
            "masked_global": torch.tensor(int((labels != IGNORE_INDEX).sum())),
        }

    def epoch_of(self, step: int) -> int | None:
        """NC3's features come from the pair stream, so its epochs are the pair stream's."""
        return self.sampler.epoch_of(step) if hasattr(self, "sampler") else None

    # ----- per step -------------------------------------------------------------------------------

    def step_terms(self, ctx: StepContext) -> StepTerms:
        """The three weighted terms of step `ctx.step` from one pass over its unmasked and masked rows,
        and the unmasked rows as NC3's features."""
        import torch

        batch = self.batch(ctx.step)
        masked_global = int(batch.pop("masked_global"))
        batch = {k: v.to(ctx.device) for k, v in batch.items()}
        out = ctx.forward(batch["input_ids"], batch["attention_mask"], batch["labels"])
        rows = batch["input_ids"].shape[0] // 2  # 4n unmasked rows
        sentences = out.hidden[:rows, 0].reshape(4, rows // 4, -1)  # [CLS] of p, h, p^, h^
        premises, hypotheses, aug_premises, aug_hypotheses = sentences.unbind(0)
        distributed = self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            sizes = [len(part) for part in torch.tensor_split(torch.arange(self.batch_size), self.world_size)]
            premises, hypotheses, aug_premises, aug_hypotheses = (
                _gather_rows(x, sizes) for x in (premises, hypotheses, aug_premises, aug_hypotheses)
            )
        tau = self.options.temperature
        with torch.autocast(device_type=out.hidden.device.type, enabled=False):
            contrastive = info_nce(torch.cat([premises, aug_premises]), torch.cat([hypotheses, aug_hypotheses]), tau)
            alignment = alignment_loss(premises, hypotheses, aug_premises, aug_hypotheses, tau)
            # mean over this worker's masked tokens -> its share of the global mean (DDP averages workers)
            share = out.index.numel() * self.world_size / max(masked_global, 1)
            mlm = out.loss.float() * share
        losses = {
            "mabel_contrastive": contrastive,
            "mabel_alignment": self.options.alignment_weight * alignment,
            "mabel_mlm": self.options.mlm_weight * mlm,
        }
        features = NC3Features(out.hidden[:rows], batch["input_ids"][:rows], batch["attention_mask"][:rows], labels=None)
        return StepTerms(losses=losses, nc3=features)

    def describe(self) -> dict[str, Any]:
        """The options, with the corpus spelled out (the offline corpus is a substitute for the paper's)."""
        out = super().describe()
        out[f"{self.name}.corpus"] = _CORPUS_NOTES[self.options.corpus]
        out[f"{self.name}.pooler"] = "cls_before_pooler"
        return out
