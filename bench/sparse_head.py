"""Sparse MLM head step vs the Hugging Face full-head step (logits at every position). Target >= 2x on CPU.

Both variants run forward, backward and an AdamW step on the same masked batch; they compute the same
loss (tests/test_heads.py), the full head just computes logits for all B x T positions instead of the
~15% that carry labels.

    python bench/sparse_head.py                  # MiniLM-L6, batch 16 x 128, 2 threads
    python bench/sparse_head.py --tiny --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nc3_common import add_common_args, load_model, load_note, median_ms, mlm_batch, time_interleaved  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ncsearch.heads import sparse_mlm_loss

    model, tok = load_model(args)
    model.train()
    ids, mask, labels, _, source = mlm_batch(tok, args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    losses: dict[str, float] = {}

    def full() -> None:
        torch.manual_seed(0)  # same dropout masks in both variants
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses["full"] = loss.item()

    def sparse() -> None:
        torch.manual_seed(0)
        loss = sparse_mlm_loss(model, ids, mask, labels).loss
        loss.backward()
        losses["sparse"] = loss.item()

    def step(fn):
        def run() -> None:
            fn()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    times = time_interleaved({"full": step(full), "sparse": step(sparse)}, args.steps, args.warmup)
    t_full, t_sparse = median_ms(times["full"]), median_ms(times["sparse"])
    print(f"model: {'tiny random BERT' if args.tiny else args.model}  batch {args.batch_size}x{args.length} ({source}), "
          f"{int((labels != -100).sum())} labelled positions, threads={args.threads}, steps={args.steps}")
    print(f"loss        full {losses['full']:.6f}   sparse {losses['sparse']:.6f}")
    print(f"train step  HF full head {t_full:8.1f} ms   sparse head {t_sparse:8.1f} ms   "
          f"speed-up {t_full / t_sparse:.2f}x  (target >= 2x)")
    # what the ratio should be from arithmetic alone (matmul FLOPs, forward + backward = 3 x forward), to
    # read a timing taken on a busy machine against
    from ncsearch.heads import mlm_head

    head = mlm_head(model)
    n_head = head.weight.numel() + sum(p.numel() for p in model.cls.predictions.transform.parameters())
    n_layers = sum(p.numel() for p in model.base_model.encoder.parameters())
    rows, labelled = ids.numel(), int((labels != -100).sum())
    flops_full = 6 * (n_layers + n_head) * rows
    flops_sparse = 6 * (n_layers * rows + n_head * labelled)
    print(f"matmul FLOPs per step: full {flops_full / 1e9:.0f} G, sparse {flops_sparse / 1e9:.0f} G, "
          f"arithmetic ratio {flops_full / flops_sparse:.2f}x")
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
