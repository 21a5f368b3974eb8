"""The observation study behind `ncsearch collapse`: one corpus pass, NC1-NC4 per vocabulary subset.

All subsets share one forward pass per batch (the expensive part); each keeps its own streaming
`ClassStatistics`. The features of tokens in any subset are held in memory between the two passes
(NC4 needs the final class means), which is bounded by the corpus size the caller passes in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ncsearch.collapse._metrics import ClassStatistics, ClassSummary, bootstrap_intervals, collapse_metrics
from ncsearch.collapse._pairs import select_pairs
from ncsearch.errors import ConfigError

__all__ = ["StudyResult", "collapse_study", "split_sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9(])")


def split_sentences(passages: Iterable[str]) -> list[str]:
    """Split passages at sentence ends (., ! or ? followed by space and a capital); drops empty pieces."""
    out: list[str] = []
    for passage in passages:
        out.extend(piece.strip() for piece in _SENTENCE_END.split(passage) if piece.strip())
    return out


@dataclass
class StudyResult:
    """Per subset: the class summary, the metrics, and their bootstrap intervals."""

    summaries: dict[str, ClassSummary]
    metrics: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, tuple[float, float]]]
    sentences: int
    tokens: int


def collapse_study(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    vocabularies: Mapping[str, Sequence[int]],
    *,
    features: str = "encoder",
    positions: str = "all",
    label_shift: int = 0,
    batch_size: int = 32,
    max_length: int = 128,
    min_count: int = 2,
    n_boot: int = 1000,
    seed: int = 0,
    mlm_probability: float = 0.15,
    progress: Callable[[int], None] | None = None,
) -> StudyResult:
    """NC1-NC4 with bootstrap intervals for each named vocabulary subset over `texts`.

    positions="masked" masks a seeded `mlm_probability` of each sentence's tokens (all replaced by the
    mask token) and measures at those positions; "all" reads the unmasked text at every position.
    NC4's linear rule includes the decoder bias for features="head" (the model's actual classifier on
    those features) and uses W alone for features="encoder" (as the paper's code does).
    `progress(n)` is called with the number of sentences done after each batch.
    """
    from ncsearch.heads import encode, mlm_head
    from ncsearch.training import mlm_mask  # lazily: `import ncsearch.collapse` stays free of training

    if not texts:
        raise ConfigError("the corpus for the collapse study is empty")
    if positions == "masked" and tokenizer.mask_token_id is None:
        raise ConfigError("positions='masked' needs a tokenizer with a mask token")
    head = mlm_head(model)
    stats = {name: ClassStatistics(ids, min_count=min_count) for name, ids in vocabularies.items()}
    union = torch.tensor(sorted({int(i) for ids in vocabularies.values() for i in ids}), dtype=torch.long)
    kept: list[tuple[Tensor, Tensor]] = []
    gen = torch.Generator().manual_seed(seed)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = [texts[i] for i in order[start : start + batch_size]]
                enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                                return_special_tokens_mask=True)
                input_ids, real = enc["input_ids"], enc["attention_mask"].bool()
                labels = None
                if positions == "masked":
                    # The template's special tokens ([CLS], [SEP], padding), as the tokenizer marks them.
                    candidates = real & ~enc["special_tokens_mask"].bool()
                    input_ids, labels = mlm_mask(input_ids, candidates, gen, probability=mlm_probability,
                                                 mask_id=tokenizer.mask_token_id, replace_all=True)
                hidden = encode(model, input_ids.to(device), enc["attention_mask"].to(device))
                feats, tokens = select_pairs(
                    hidden, input_ids=input_ids.to(device), labels=None if labels is None else labels.to(device),
                    attention_mask=enc["attention_mask"].to(device), features=features, positions=positions,
                    label_shift=label_shift, head_transform=head.transform,
                )
                total += tokens.numel()
                for acc in stats.values():
                    acc.update(feats, tokens)
                inside = torch.isin(tokens.cpu(), union)
                kept.append((feats.cpu()[inside].float(), tokens.cpu()[inside]))
                if progress is not None:
                    progress(min(start + batch_size, len(order)))
            # pass 2 (inside inference mode too: the accumulators were created there)
            bias = head.bias if features == "head" else None
            for feats, tokens in kept:
                for acc in stats.values():
                    acc.update_agreement(feats, tokens, head.weight, bias)
    finally:
        model.train(was_training)
    summaries = {name: acc.summary(head.weight) for name, acc in stats.items()}
    metrics = {name: collapse_metrics(s) for name, s in summaries.items()}
    intervals = {name: bootstrap_intervals(s, n_boot=n_boot, seed=seed) for name, s in summaries.items()}
    return StudyResult(summaries, metrics, intervals, sentences=len(texts), tokens=total)
