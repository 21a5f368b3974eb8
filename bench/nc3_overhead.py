"""Training-step time with the NC3 term vs without, and the paper's one-hot mean collection vs ours.

A step is a real MLM training step (sparse head forward, backward, AdamW); the NC3 variant adds
select_pairs + NC3Regularizer.update + loss on the decoder rows of V. Target: ratio <= 1.05 on
MiniLM-L6 at batch 16 x 128 with 2 threads.

The second part times how the class sums are collected per step: the paper's code builds a one-hot
(N x |vocab|) matrix and multiplies it with the features (`idxs = Y[:, None] == arange(C)`,
`totals += idxs.T.float() @ X`), for the paper's pairs (all positions, label shift 1); ncsearch maps
labels to rows of V and index_adds into a |V| x d buffer.

    python bench/nc3_overhead.py                 # MiniLM-L6, 10 timed steps per variant
    python bench/nc3_overhead.py --tiny --steps 2  # smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nc3_common import (  # noqa: E402
    add_common_args,
    gender_ids,
    load_model,
    load_note,
    median_ms,
    mlm_batch,
    time_interleaved,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--means", default="cumulative", choices=("cumulative", "ema", "batch"))
    parser.add_argument("--features", default="encoder", choices=("encoder", "head"))
    parser.add_argument("--positions", default="masked", choices=("masked", "all"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ncsearch.collapse import NC3Regularizer, select_pairs
    from ncsearch.heads import mlm_head, sparse_mlm_loss

    model, tok = load_model(args)
    model.train()
    ids, mask, labels, original, source = mlm_batch(tok, args)
    vocab = gender_ids(tok)
    head = mlm_head(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    reg = NC3Regularizer(vocab, means=args.means)

    def plain() -> None:
        out = sparse_mlm_loss(model, ids, mask, labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def with_nc3() -> None:
        out = sparse_mlm_loss(model, ids, mask, labels)
        reg.update(*select_pairs(out.hidden, input_ids=ids, labels=labels, attention_mask=mask,
                                 features=args.features, positions=args.positions, label_shift=0,
                                 head_transform=head.transform))
        term, _ = reg.loss(head.weight)
        (out.loss + args.alpha * term).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # the NC3 work alone (pairs, statistics, loss, its backward into W), on a fixed encoder output: on a
    # shared machine the whole-step ratio is noisy, this isolates what the term adds
    with torch.no_grad():
        fixed = sparse_mlm_loss(model, ids, mask, labels).hidden

    def nc3_only() -> None:
        reg.update(*select_pairs(fixed, input_ids=ids, labels=labels, attention_mask=mask, features=args.features,
                                 positions=args.positions, label_shift=0, head_transform=head.transform))
        term, _ = reg.loss(head.weight)
        (args.alpha * term).backward()
        head.weight.grad = None

    times = time_interleaved({"plain": plain, "nc3": with_nc3, "nc3_only": nc3_only}, args.steps, args.warmup)
    t_plain, t_nc3 = median_ms(times["plain"]), median_ms(times["nc3"])
    t_only = median_ms(times["nc3_only"])

    # -- collecting class sums: the paper's one-hot over the vocabulary vs index_add on V ------------------
    with torch.no_grad():
        hidden = model.base_model(input_ids=original, attention_mask=mask).last_hidden_state
    x, y = select_pairs(hidden, input_ids=original, labels=None, attention_mask=mask, positions="all", label_shift=1)
    x = x.float()
    n_vocab, d = head.weight.shape
    paper_counts = torch.zeros(n_vocab, dtype=torch.int32)
    paper_totals = torch.zeros(n_vocab, d)
    label_range = torch.arange(n_vocab)

    def paper_collect() -> None:
        idxs = y[:, None] == label_range  # N x |vocab| one-hot
        paper_counts.add_(idxs.sum(0, dtype=torch.int32))
        paper_totals.add_(idxs.T.to(x.dtype) @ x)

    ours = NC3Regularizer(vocab)

    def ours_collect() -> None:
        ours.update(x, y)

    collect = time_interleaved({"paper": paper_collect, "ours": ours_collect}, max(args.steps, 5), 1)
    t_paper, t_ours = median_ms(collect["paper"]), median_ms(collect["ours"])

    print(f"model: {'tiny random BERT' if args.tiny else args.model}  batch {args.batch_size}x{args.length} ({source}), "
          f"{int((labels != -100).sum())} masked, |V|={len(vocab)}, threads={args.threads}, steps={args.steps}")
    print(f"NC3 options: means={args.means} features={args.features} positions={args.positions}")
    print(f"train step  plain {t_plain:8.1f} ms   with NC3 {t_nc3:8.1f} ms   ratio {t_nc3 / t_plain:.3f}  (target <= 1.05)")
    print(f"NC3 term alone {t_only:8.2f} ms = {100 * t_only / t_plain:.2f}% of a plain step "
          f"(implied ratio {(t_plain + t_only) / t_plain:.3f})")
    print(f"class sums  paper one-hot ({x.shape[0]} x {n_vocab}) {t_paper:8.2f} ms   ours index_add on V "
          f"{t_ours:8.3f} ms   speed-up {t_paper / t_ours:.0f}x")
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
