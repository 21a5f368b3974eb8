"""`ncsearch eval MODEL`: run the fairness/performance suite on one checkpoint.

Prints a table of metrics (with progress bars while scoring) and, with `--json OUT`, writes the
metrics as JSON and every per-example table as a CSV next to it (`OUT-stem.<benchmark>.<table>.csv`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ncsearch.config import BENCHMARKS, DOMAINS, SUITE_DOMAINS, SUITES
from ncsearch.errors import ConfigError


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="masked-LM checkpoint dir, Hugging Face id, or the alias 'minilm-l6'")
    parser.add_argument("--suite", choices=sorted(SUITES), default="gender", help="benchmark suite (default: gender)")
    parser.add_argument("--benchmarks", nargs="+", metavar="NAME", help=f"run these instead of the suite: {', '.join(BENCHMARKS)}")
    parser.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=N",
                        help="cap a benchmark's examples (repeatable), e.g. --limit crows_pairs=100")
    parser.add_argument("--domains", nargs="+", metavar="TYPE",
                        help="bias types StereoSet/CrowS-Pairs keep (default: the suite's; gender for --suite gender, "
                             "all with --benchmarks)")
    parser.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write metrics JSON here (+ CSVs beside it)")
    parser.add_argument("--data-dir", type=Path, help="benchmark data root (default: resolved as `ncsearch data` does)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed for benchmarks that sample (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_limits(items: list[str]) -> dict[str, int]:
    """`["crows_pairs=100", ...]` -> {"crows_pairs": 100}; every bad item reported at once."""
    limits: dict[str, int] = {}
    problems: list[str] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            problems.append(f"--limit must be NAME=N, but got {item!r}")
        elif name not in BENCHMARKS:
            problems.append(f"--limit names an unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
        elif not value.isdigit() or int(value) < 1:
            problems.append(f"--limit {name} must be a positive integer, but got {value!r}")
        else:
            limits[name] = int(value)
    if problems:
        raise ConfigError(problems)
    return limits


def _write_outputs(out: Path, payload: dict[str, Any], details: dict[str, Any]) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for key, table in details.items():
        path = out.with_name(f"{out.stem}.{key.replace('/', '.')}.csv")
        table.to_csv(path, index=False)
        written.append(path)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, prefix=f".{out.name}.", delete=False) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(handle.name, out)
    return [out, *written]


def _print_table(metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ncsearch eval")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    Console().print(table)


def main(args: argparse.Namespace) -> int:
    limits = parse_limits(args.limits)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, but got {args.batch_size}")
    names = list(args.benchmarks) if args.benchmarks else list(SUITES[args.suite])
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ConfigError([f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}" for name in unknown])
    extra = [name for name in limits if name not in names]
    if extra:
        raise ConfigError([f"--limit {name}=... names a benchmark that is not run ({', '.join(names)})" for name in extra])

    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import run_suite
    from ncsearch.models import load_mlm

    if args.domains:
        bad = [d for d in args.domains if d not in DOMAINS]
        if bad:
            raise ConfigError(f"--domains: unknown bias type {bad[0]!r}; valid: {', '.join(DOMAINS)}")
        domains: tuple[str, ...] | None = tuple(args.domains)
    else:
        domains = None if args.benchmarks else SUITE_DOMAINS[args.suite]

    data_root = resolve_data_root(args.data_dir)
    model, tokenizer = load_mlm(args.model, data_root=data_root)
    result = run_suite(
        model,
        tokenizer,
        names,
        data_root=data_root,
        limits=limits,
        batch_size=args.batch_size,
        seed=args.seed,
        domains=domains,
        progress=not args.no_progress,
    )
    _print_table(result.metrics)
    if args.json_out is not None:
        payload = {
            "model": args.model,
            "benchmarks": names,
            "limits": limits,
            "domains": list(domains) if domains else None,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "data_root": str(data_root),
            "metrics": result.metrics,
        }
        written = _write_outputs(args.json_out, payload, result.details)
        print(f"wrote {written[0]} and {len(written) - 1} CSV table(s) beside it")
    return 0
