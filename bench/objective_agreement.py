"""Does held-out masked-LM loss rank checkpoints as pseudo-perplexity does, and at what precision per second?

Scores every given checkpoint (real trials' `checkpoint_*` folders, e.g. from bench/trial_cost.py's
runs or a search's run folder, plus the base model) with exact pseudo-perplexity on the first
`--pppl-passages` held-out passages, sampled pseudo-perplexity (`--positions` tokens of every
passage) and `heldout_mlm/loss` (`--masks` seeded patterns per passage), one thread each. Prints:

- per checkpoint: the three values with their intervals;
- Spearman's rho of each cheap measure against exact PPPL across checkpoints, with its permutation p
  and Fisher-z interval (ncsearch.stats.spearman);
- per measure: seconds per checkpoint, median interval half-width in nats (of log PPPL, and of the
  loss, both a mean NLL per token), and precision per second 1 / (half-width^2 x seconds).

heldout_mlm/loss becomes a default objective only if it agrees (rho close to 1, interval well above 0).

    .venv/bin/python bench/objective_agreement.py /tmp/tc-full/run-*/runs --base minilm-l6
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders searched for checkpoint_*/model")
    parser.add_argument("--base", default=None, help="also score this model (e.g. minilm-l6)")
    parser.add_argument("--pppl-passages", type=int, default=100)
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--data-dir", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import run_suite
    from ncsearch.models import ensure_model, load_mlm
    from ncsearch.stats import spearman

    torch.set_num_threads(1)
    data_root = resolve_data_root(args.data_dir)
    models = sorted({str(p) for folder in args.folders for p in Path(folder).glob("**/checkpoint_*/model")})
    if args.base:
        models.insert(0, ensure_model(args.base, data_root=data_root))
    if len(models) < 4:
        raise SystemExit(f"need at least 4 models for a rank correlation, found {len(models)}")
    measures = {
        "pppl exact": (["perplexity"], {"perplexity": args.pppl_passages}, {}, "perplexity/pppl"),
        f"pppl sampled k={args.positions}": (["perplexity"], {}, {"perplexity": {"positions": args.positions}},
                                            "perplexity/pppl_sampled"),
        f"heldout_mlm masks={args.masks}": (["heldout_mlm"], {}, {"heldout_mlm": {"masks": args.masks}},
                                           "heldout_mlm/loss"),
    }
    values = {name: [] for name in measures}
    widths = {name: [] for name in measures}
    seconds = {name: [] for name in measures}
    for path in models:
        model, tokenizer = load_mlm(path)
        shown = []
        for name, (benchmarks, limits, options, key) in measures.items():
            started = time.perf_counter()
            result = run_suite(model, tokenizer, benchmarks, data_root=data_root, limits=limits, options=options,
                               progress=False)
            seconds[name].append(time.perf_counter() - started)
            value, (low, high) = result.metrics[key], result.intervals[key]
            values[name].append(value)
            # half-width in nats: log PPPL and the MLM loss are both mean NLL per token
            widths[name].append((high - low) / 2 if key == "heldout_mlm/loss" else float(np.log(high / low)) / 2)
            shown.append(f"{name} {value:.4g} [{low:.4g}, {high:.4g}]")
        print(f"{Path(path).parent.name if 'checkpoint' in path else 'base'} {path}\n    " + "; ".join(shown), flush=True)
    exact = next(iter(measures))
    print(f"\n{len(models)} models; Spearman against {exact}:")
    for name in list(measures)[1:]:
        rho = spearman(values[exact], values[name])
        print(f"  {name:28s} rho {rho.value:.3f} [{rho.low:.3f}, {rho.high:.3f}], permutation p {rho.p_value:.4f}")
    print(f"\n{'measure':28s}{'s/model':>10s}{'half-width (nats)':>18s}{'precision/s':>14s}")
    for name in measures:
        s, w = float(np.mean(seconds[name])), float(np.median(widths[name]))
        print(f"{name:28s}{s:10.1f}{w:18.4f}{1 / (w * w * s):14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
