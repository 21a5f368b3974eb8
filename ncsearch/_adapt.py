"""MLM adaptation: give a head-less BERT encoder (MiniLM-L6) a working masked-LM head.

MiniLM-L6 ships as a sentence encoder without an MLM head. Training only a new head on the frozen
encoder learns token frequencies and nothing else (measured: after 300 steps it still predicts ",",
"the", "."), so the whole model is trained with MLM on a general corpus. This module is the recipe
only (build, pack, mask, train, score); `ncsearch.models` decides when to run it and caches the result.

Speed on 2 CPU cores comes from three choices: passages are packed into short blocks with no padding
(attention is cheaper and no compute is spent on pad tokens), the head runs only at masked positions
(`ncsearch.heads.sparse_mlm_loss`), and a larger learning rate with warmup reaches in ~600 small steps
what 400 steps of 16x128 at 2e-4 reached.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "AdaptSettings",
    "MaskedLMScore",
    "adapt_mlm",
    "build_mlm_from_encoder",
    "evaluate_mlm",
    "mask_tokens",
    "pack_blocks",
]

# Bump when the recipe changes in a way that changes the trained weights (it is part of the cache key).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class AdaptSettings:
    """Everything that shapes the adapted weights; all of it goes into the cache key.

    Defaults were tuned for >= 20% held-out masked-token accuracy in <= 8 minutes on 2 CPU cores.
    """

    steps: int = 600
    batch_size: int = 16
    max_length: int = 64
    lr: float = 5e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mlm_probability: float = 0.15
    seed: int = 0
    # Held-out blocks scored before and after (~2,900 masked tokens: +-0.8 points of accuracy); more
    # would cost tens of seconds on 2 cores and tell little more. Part of the key like everything else.
    eval_blocks: int = 320

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, but got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, but got {self.batch_size}")
        if self.max_length < 8:
            problems.append(f"max_length must be >= 8, but got {self.max_length}")
        if self.eval_blocks < 1:
            problems.append(f"eval_blocks must be >= 1, but got {self.eval_blocks}")
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"mlm_probability must be in (0, 1), but got {self.mlm_probability}")
        if problems:
            raise ModelError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"recipe_version": RECIPE_VERSION, **asdict(self)}


@dataclass(frozen=True)
class MaskedLMScore:
    """Masked-token cross-entropy and top-1 accuracy over a fixed, seeded set of masked positions."""

    loss: float
    accuracy: float
    masked_tokens: int


def build_mlm_from_encoder(encoder_dir: Path, *, seed: int = 0) -> PreTrainedModel:
    """A BertForMaskedLM holding the encoder weights of a head-less BERT checkpoint.

    The decoder is tied to the word embeddings (so it starts from meaningful token vectors) and the
    head transform gets BERT's standard initialisation from a seeded generator. Every encoder weight
    must be found in the checkpoint: a silently random encoder layer would adapt to garbage.
    """
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForMaskedLM

    weights = encoder_dir / "model.safetensors"
    if not (encoder_dir / "config.json").is_file() or not weights.is_file():
        raise ModelError(f"no encoder checkpoint (config.json + model.safetensors) in '{encoder_dir}'")
    config = BertConfig.from_pretrained(str(encoder_dir))
    config.architectures = ["BertForMaskedLM"]
    config.tie_word_embeddings = True
    with _seeded(seed):
        model = BertForMaskedLM(config)
    state = load_file(str(weights))
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("pooler.", "bert.pooler."))}
    result = model.bert.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise ModelError(f"encoder checkpoint '{encoder_dir}' lacks {len(missing)} weights, e.g. {missing[0]!r}")
    model.tie_weights()
    if model.cls.predictions.decoder.weight.data_ptr() != model.bert.embeddings.word_embeddings.weight.data_ptr():
        raise ModelError("could not tie the MLM decoder to the word embeddings")  # pragma: no cover
    return model


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for module initialisation, then restore the caller's state."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def pack_blocks(tokenizer: PreTrainedTokenizerBase, passages: Sequence[str], max_length: int) -> torch.Tensor:
    """Tokenize passages, join them with [SEP] and cut the stream into full `[CLS] ... [SEP]` blocks.

    Packing wastes no compute on padding; the remainder shorter than one block is dropped.
    """
    import torch

    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ModelError(f"tokenizer {type(tokenizer).__name__} has no [CLS]/[SEP] tokens to pack blocks with")
    encoded = tokenizer(list(passages), add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids)
        stream.append(sep_id)
    body = max_length - 2
    n = len(stream) // body
    if n == 0:
        raise ModelError(f"corpus too small: {len(stream)} tokens do not fill one block of {max_length}")
    blocks = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    cls = torch.full((n, 1), cls_id, dtype=torch.long)
    sep = torch.full((n, 1), sep_id, dtype=torch.long)
    return torch.cat([cls, blocks, sep], dim=1)


def mask_tokens(
    input_ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    probability: float,
    generator: torch.Generator,
    *,
    replace_all: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of packed blocks (`ncsearch.training.mlm_mask`): choose `probability` of the
    non-special tokens, at least one; labels are -100 elsewhere.

    Training uses 80% [MASK] / 10% random / 10% unchanged; scoring (`replace_all=True`) replaces every
    chosen token by [MASK], the stricter measure (an unchanged token is trivially easy to predict).
    """
    from ncsearch.training import maskable, mlm_mask

    return mlm_mask(
        input_ids,
        maskable(input_ids, tokenizer.all_special_ids),
        generator,
        probability=probability,
        mask_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        replace_all=replace_all,
        ensure_one=True,  # a tiny batch can draw no position at all; the loss needs one
    )


def evaluate_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    blocks: torch.Tensor,
    *,
    probability: float = 0.15,
    seed: int = 1234,
    batch_size: int = 64,
) -> MaskedLMScore:
    """Held-out masked-token loss and accuracy; the masked positions depend only on `seed`."""
    import torch
    import torch.nn.functional as F

    from ncsearch import heads

    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size]
            ids, labels = mask_tokens(batch, tokenizer, probability, generator, replace_all=True)
            out = heads.sparse_mlm_loss(model, ids, torch.ones_like(ids), labels)
            targets = labels.reshape(-1)[out.index]
            total_loss += F.cross_entropy(out.logits.float(), targets, reduction="sum").item()
            correct += int((out.logits.argmax(-1) == targets).sum())
            count += int(targets.numel())
    model.train(was_training)
    return MaskedLMScore(loss=total_loss / count, accuracy=correct / count, masked_tokens=count)


def adapt_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_blocks: torch.Tensor,
    heldout_blocks: torch.Tensor,
    settings: AdaptSettings,
    *,
    threads: int = 2,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Continue MLM training of the whole model in place; return before/after scores and timings.

    Dropout is off while adapting (model.eval() only switches dropout in BERT): this is a short run in
    the underfitting regime, where dropout only slows learning. Trials set their own dropout later.
    """
    import torch

    from ncsearch import heads
    from ncsearch.training import adamw, linear_warmup_decay

    say = report or _stderr
    heldout_blocks = heldout_blocks[: settings.eval_blocks]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        t0 = time.perf_counter()
        before = evaluate_mlm(model, tokenizer, heldout_blocks, probability=settings.mlm_probability)
        eval_seconds = time.perf_counter() - t0
        say(
            f"adapting: {settings.steps} steps of {settings.batch_size}x{settings.max_length} tokens, "
            f"lr {settings.lr:g}, {len(train_blocks)} training blocks; held-out before: "
            f"loss {before.loss:.3f}, masked accuracy {before.accuracy:.1%}"
        )
        # Not fused, and the warm-up peaks on its last step: the formulas this RECIPE_VERSION was cached with.
        optimizer = adamw(model, lr=settings.lr, weight_decay=settings.weight_decay)
        warmup = max(1, round(settings.warmup_ratio * settings.steps))
        schedule = linear_warmup_decay(optimizer, settings.steps, warmup, peak_at_warmup_end=True)
        generator = torch.Generator().manual_seed(settings.seed)
        batches = _batches(len(train_blocks), settings.batch_size, generator)
        model.eval()  # dropout off; gradients still flow (see docstring)
        losses: list[float] = []
        t_train = time.perf_counter()
        every = max(1, min(50, settings.steps // 10))
        for step in range(1, settings.steps + 1):
            ids, labels = mask_tokens(train_blocks[next(batches)], tokenizer, settings.mlm_probability, generator)
            loss = heads.sparse_mlm_loss(model, ids, torch.ones_like(ids), labels).loss
            if not math.isfinite(loss.item()):
                raise ModelError(f"MLM adaptation diverged at step {step} (loss {loss.item()}); lower the lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % every == 0 or step == settings.steps:
                elapsed = time.perf_counter() - t_train
                rate = step / elapsed
                recent = sum(losses[-every:]) / len(losses[-every:])
                say(
                    f"adapting: step {step}/{settings.steps}  loss {recent:.3f}  "
                    f"{rate:.2f} steps/s  eta {(settings.steps - step) / rate:.0f}s"
                )
        train_seconds = time.perf_counter() - t_train
        t1 = time.perf_counter()
        after = evaluate_mlm(model, tokenizer, heldout_blocks, probability=settings.mlm_probability)
        eval_seconds += time.perf_counter() - t1
        say(f"adapting: done in {train_seconds:.0f}s; held-out after: loss {after.loss:.3f}, "
            f"masked accuracy {after.accuracy:.1%}")
    finally:
        torch.set_num_threads(previous_threads)
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "before": asdict(before),
        "after": asdict(after),
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "steps_per_second": round(settings.steps / train_seconds, 4),
        "final_train_loss": sum(tail) / len(tail),
        "train_blocks": len(train_blocks),
        "heldout_blocks": len(heldout_blocks),
        "threads": max(1, threads),
    }


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless epochs over a seeded permutation of the blocks (batches never straddle epochs)."""
    import torch

    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _stderr(message: str) -> None:
    print(f"[ncsearch] {message}", file=sys.stderr, flush=True)
