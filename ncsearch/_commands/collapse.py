"""`ncsearch collapse`: NC1-NC4 on a fairness vocabulary subset vs a random subset of the same size.

The paper's observation study as one command: one pass of the model over a corpus (GAP by default),
class statistics for the gender words and for a random control subset, each metric with a 95%
bootstrap interval over classes (why classes: see `ncsearch.collapse._metrics`). The random control is
frequency-matched on the same corpus by default, so that a difference is not just "gender words are
frequent words"; `--no-frequency-matched` draws uniformly.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ncsearch.errors import ConfigError, NcsearchError

_METRIC_LABELS = {
    "nc1": "NC1 CDNV (↓ collapsed)",
    "nc2_equinorm": "NC2 equinorm CoV (↓)",
    "nc2_equiangular": "NC2 equiangular std (↓)",
    "nc2_cos_mean": "NC2 mean pair cosine",
    "nc3": "NC3 1−mean cos (↓)",
    "unc3": "UNC3 std cos (↓)",
    "nc4": "NC4 lin=NCC agreement (↑)",
}


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="HF masked-LM id, checkpoint dir, or alias (minilm-l6)")
    parser.add_argument("--vocab", choices=("gender", "file"), default="gender", help="the subset studied")
    parser.add_argument("--vocab-file", type=Path, help="word list for --vocab file (one word per line)")
    parser.add_argument("--compare", choices=("random", "none"), default="random",
                        help="control subset of the same size (default random)")
    parser.add_argument("--no-frequency-matched", dest="frequency_matched", action="store_false",
                        help="draw the random control uniformly instead of frequency-matched on the corpus")
    parser.add_argument("--corpus", choices=("gap",), default="gap", help="text to run the model on")
    parser.add_argument("--max-sentences", type=int, default=None, metavar="N", help="use the first N sentences")
    parser.add_argument("--features", choices=("encoder", "head"), default="encoder",
                        help="last encoder layer (the paper) or the MLM transform output (what W classifies)")
    parser.add_argument("--positions", choices=("all", "masked"), default="all",
                        help="every token of the unmasked text, or a seeded 15%% of tokens replaced by the mask")
    parser.add_argument("--label-shift", type=int, choices=(0, 1), default=0,
                        help="pair the feature at t with the token at t+shift (1 = the paper's code)")
    parser.add_argument("--min-count", type=int, default=2, help="classes with fewer tokens are left out")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results as JSON")
    from ncsearch._commands.eval import TRUST_HELP

    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)


def _check(args: argparse.Namespace) -> None:
    for name in ("max_sentences", "batch_size", "max_length", "min_count"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, but got {value}")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, but got {args.bootstrap}")
    if args.vocab == "file" and args.vocab_file is None:
        raise ConfigError("--vocab file needs --vocab-file PATH")
    if args.vocab == "file" and not args.vocab_file.is_file():
        raise ConfigError(f"--vocab-file {str(args.vocab_file)!r}: no such file")


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _fmt(value: float, interval: tuple[float, float] | None) -> str:
    if not math.isfinite(value):
        return "–"
    text = f"{value:.4g}"
    if interval and all(math.isfinite(v) for v in interval):
        text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
    return text


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from ncsearch._atomic import atomic_write

    atomic_write(path, json.dumps(payload, indent=2) + "\n")


def main(args: argparse.Namespace) -> int:
    _check(args)
    import torch
    from rich.console import Console
    from rich.table import Table

    from ncsearch.collapse import METRIC_NAMES, collapse_study, split_sentences
    from ncsearch.data import load_gap_corpus, resolve_data_root
    from ncsearch.models import load_mlm
    from ncsearch.vocab import build_vocab

    torch.manual_seed(args.seed)
    root = resolve_data_root(args.data_dir)
    sentences = split_sentences(load_gap_corpus(root))
    if args.max_sentences is not None:
        sentences = sentences[: args.max_sentences]
    model, tokenizer = load_mlm(args.model, data_root=root, trust_remote_code=args.trust_remote_code)

    subsets = {}
    studied = build_vocab(tokenizer, source=args.vocab, file=args.vocab_file, seed=args.seed,
                          corpus=sentences, data_root=root)
    subsets[args.vocab] = studied
    if args.compare == "random":
        subsets["random"] = build_vocab(tokenizer, source="random", size=len(studied.token_ids), seed=args.seed,
                                        frequency_matched=args.frequency_matched, corpus=sentences,
                                        data_root=root)
    if not studied.token_ids:
        raise NcsearchError(f"no word of the {args.vocab!r} subset is a token of {args.model!r}")

    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("corpus pass", total=len(sentences))
        result = collapse_study(
            model, tokenizer, sentences, {name: v.token_ids for name, v in subsets.items()},
            features=args.features, positions=args.positions, label_shift=args.label_shift,
            batch_size=args.batch_size, max_length=args.max_length, min_count=args.min_count,
            n_boot=args.bootstrap, seed=args.seed, progress=lambda done: bar.update(task, completed=done),
        )

    console = Console()
    table = Table(title=f"Neural collapse on {args.model} ({result.sentences} sentences, "
                        f"features={args.features}, positions={args.positions}, shift={args.label_shift}; "
                        f"95% bootstrap over classes, B={args.bootstrap})")
    table.add_column("metric")
    for name in subsets:
        table.add_column(name, justify="right")
    for key in METRIC_NAMES:
        if key not in _METRIC_LABELS:
            continue
        table.add_row(_METRIC_LABELS[key], *[
            _fmt(result.metrics[n][key], result.intervals[n].get(key) if args.bootstrap else None) for n in subsets
        ])
    table.add_row("classes analysed / |V|", *[
        f"{result.summaries[n].classes} / {result.summaries[n].vocab_size}" for n in subsets
    ])
    table.add_row("tokens", *[str(int(result.metrics[n]["tokens"])) for n in subsets])
    console.print(table)

    if args.json is not None:
        payload = {
            "model": args.model,
            "corpus": args.corpus,
            "sentences": result.sentences,
            "tokens_seen": result.tokens,
            "settings": {k: getattr(args, k) for k in ("features", "positions", "label_shift", "min_count",
                                                       "bootstrap", "seed", "frequency_matched", "max_length")},
            "bootstrap": "percentile, over classes",
            "subsets": {
                name: {
                    "size": len(v.token_ids),
                    "words": list(v.words),
                    "dropped": list(v.dropped),
                    "classes_observed": result.summaries[name].observed,
                    "classes_analysed": result.summaries[name].classes,
                    "metrics": {k: _finite(x) for k, x in result.metrics[name].items()},
                    "ci95": {k: [_finite(lo), _finite(hi)] for k, (lo, hi) in result.intervals[name].items()},
                }
                for name, v in subsets.items()
            },
        }
        _write_json(args.json, payload)
        console.print(f"wrote {args.json}")
    return 0
