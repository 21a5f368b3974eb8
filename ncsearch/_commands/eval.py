"""`ncsearch eval MODEL`: run the fairness/performance suite on one checkpoint.

Prints a table of metrics as "value [low, high]" (95% percentile bootstrap over each benchmark's
resampling unit; progress bars while scoring) and, with `--json OUT`, writes them as JSON and every
per-example table as a CSV next to it (`OUT-stem.<benchmark>.<table>.csv`).

JSON keys: `metrics` {key: value}; `intervals` {key: [low, high]}; `resampling` {benchmark: unit}
(what was resampled); `bootstrap` {resamples, seed, level, method}; `precision`; `seconds` (scoring and
bootstrap wall time).

`--precision bf16` scores under bfloat16 autocast (ncsearch.evaluate._precision) and, so that the cost
in accuracy is measured rather than assumed, scores the same checkpoint in fp32 too: it prints every
headline metric's deviation (bf16 - fp32) and the time of each run, and the JSON gains
`fp32_reference` {metrics, seconds} and `deviation` {headline metric: bf16 - fp32}. The main table
and `metrics` are the bf16 scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ncsearch.config import DOMAINS, SUITE_DOMAINS, SUITES, benchmark_names
from ncsearch.errors import ConfigError

TRUST_HELP = "run Python code the checkpoint ships (config.json auto_map); off by default, use only for code you trust"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="masked-LM checkpoint dir, Hugging Face id, or the alias 'minilm-l6'")
    add_suite_arguments(parser)
    parser.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write metrics JSON here (+ CSVs beside it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="scoring arithmetic (default fp32); bf16 also scores in fp32 and prints each headline "
                             "metric's deviation (bf16 - fp32) and both times")


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """How a checkpoint is scored: suite, limits, domains, options and bootstrap settings. Shared with
    `ncsearch compare`, and read back by `suite_settings`."""
    from ncsearch.stats import RESAMPLES

    parser.add_argument("--suite", choices=sorted(SUITES), default="gender", help="benchmark suite (default: gender)")
    parser.add_argument("--benchmarks", nargs="+", metavar="NAME", help="run these instead of the suite (any registered benchmark; an unknown name lists them)")
    parser.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=N",
                        help="cap a benchmark's examples (repeatable), e.g. --limit crows_pairs=100")
    parser.add_argument("--domains", nargs="+", metavar="TYPE",
                        help="bias types StereoSet/CrowS-Pairs keep (default: the suite's; gender for --suite gender, "
                             "all with --benchmarks)")
    parser.add_argument("--data-dir", type=Path, help="benchmark data root (default: resolved as `ncsearch data` does)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed for benchmarks that sample (default: 0)")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a benchmark option (value read as YAML), e.g. --option crows_pairs.scorers=[bias_bench,nangia]")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="score with the plain Hugging Face forward only, not the row encoder and oneDNN fused "
                             "linears (same results up to float rounding, slower on CPU)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"bootstrap resamples behind each interval (default {RESAMPLES}; 0: no intervals)")


def suite_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The checked settings of `add_suite_arguments`: benchmarks, limits, options, domains (list or
    None), batch_size, seed and fast_path, as `run_suite` takes them; every bad value is a ConfigError."""
    limits = parse_limits(args.limits)
    options = parse_options(args.options)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, but got {args.batch_size}")
    if args.resamples < 0:
        raise ConfigError(f"--resamples must be >= 0, but got {args.resamples}")
    names = list(args.benchmarks) if args.benchmarks else list(SUITES[args.suite])
    valid = benchmark_names()
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError([f"unknown benchmark {name!r}; valid: {', '.join(valid)}" for name in unknown])
    extra = [name for name in limits if name not in names]
    if extra:
        raise ConfigError([f"--limit {name}=... names a benchmark that is not run ({', '.join(names)})" for name in extra])
    extra = [name for name in options if name not in names]
    if extra:
        raise ConfigError([f"--option {name}.... names a benchmark that is not run ({', '.join(names)})" for name in extra])
    if args.domains:
        bad = [d for d in args.domains if d not in DOMAINS]
        if bad:
            raise ConfigError(f"--domains: unknown bias type {bad[0]!r}; valid: {', '.join(DOMAINS)}")
        domains = list(args.domains)
    else:
        domains = None if args.benchmarks else list(SUITE_DOMAINS[args.suite] or []) or None
    return {"benchmarks": names, "limits": limits, "options": options, "domains": domains,
            "batch_size": args.batch_size, "seed": args.seed, "fast_path": args.fast_path}


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """`["crows_pairs.scorers=[a,b]", ...]` -> {"crows_pairs": {"scorers": ["a", "b"]}}."""
    import yaml

    options: dict[str, dict[str, Any]] = {}
    problems = []
    valid = benchmark_names() if items else ()
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not option:
            problems.append(f"--option must be NAME.KEY=VALUE, but got {item!r}")
        elif name not in valid:
            problems.append(f"--option names an unknown benchmark {name!r}; valid: {', '.join(valid)}")
        else:
            try:
                options.setdefault(name, {})[option] = yaml.safe_load(raw)
            except yaml.YAMLError:
                problems.append(f"--option {item!r}: the value is not valid YAML")
    if problems:
        raise ConfigError(problems)
    return options


def parse_limits(items: list[str]) -> dict[str, int]:
    """`["crows_pairs=100", ...]` -> {"crows_pairs": 100}; every bad item reported at once."""
    limits: dict[str, int] = {}
    problems: list[str] = []
    valid = benchmark_names() if items else ()
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            problems.append(f"--limit must be NAME=N, but got {item!r}")
        elif name not in valid:
            problems.append(f"--limit names an unknown benchmark {name!r}; valid: {', '.join(valid)}")
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
    from ncsearch._atomic import atomic_write

    atomic_write(out, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return [out, *written]


def _print_table(metrics: dict[str, float], intervals: dict[str, tuple[float, float]], units: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ncsearch.stats import Estimate

    caption = "; ".join(f"{name}: {unit}" for name, unit in units.items())
    table = Table(title="ncsearch eval: value [95% bootstrap interval]", caption=f"resampled: {caption}")
    table.add_column("metric", no_wrap=True)
    table.add_column("value [low, high]", justify="right", no_wrap=True)
    for key, value in metrics.items():
        low, high = intervals.get(key, (float("nan"), float("nan")))
        shown = Estimate(value, low, high).format() if key in intervals else f"{value:.4g} (no interval)"
        table.add_row(key, shown)
    Console().print(table)


def _scoring_seconds(result: Any) -> float:
    """Seconds spent scoring (bootstrap excluded), from the suite's timings table."""
    return float(result.details["suite/timings"]["seconds"].sum())


def _print_deviations(names: list[str], reference: Any, reference_s: float, result: Any, seconds: float,
                      precision: str) -> dict[str, Any]:
    """Print each headline metric at fp32 and at `precision` with the deviation, and both times;
    return the JSON additions (`fp32_reference`, `deviation`)."""
    from rich.console import Console
    from rich.table import Table

    from ncsearch.evaluate._precision import deviations

    found = deviations(names, reference.metrics, result.metrics)
    table = Table(title=f"ncsearch eval: {precision} against fp32 on the same checkpoint (headline metrics)")
    for column in ("metric", "fp32", precision, f"{precision} - fp32"):
        table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
    for d in found:
        table.add_row(d.metric, f"{d.fp32:.6g}", f"{d.bf16:.6g}", f"{d.deviation:+.3g}")
    fp32_scoring, scoring = _scoring_seconds(reference), _scoring_seconds(result)
    table.caption = (f"scoring time: fp32 {fp32_scoring:.1f} s, {precision} {scoring:.1f} s "
                     f"(fp32 / {precision}: {fp32_scoring / max(scoring, 1e-9):.2f}x)")
    Console().print(table)
    return {
        "fp32_reference": {"metrics": reference.metrics, "seconds": reference_s, "scoring_seconds": fp32_scoring},
        "scoring_seconds": scoring,
        "deviation": {d.metric: d.deviation for d in found},
    }


def main(args: argparse.Namespace) -> int:
    settings = suite_settings(args)
    names = settings.pop("benchmarks")

    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import build_benchmarks, run_suite
    from ncsearch.models import load_mlm

    data_root = resolve_data_root(args.data_dir)
    benchmarks = build_benchmarks(names, data_root=data_root, **settings)  # bad options fail before the model loads
    model, tokenizer = load_mlm(args.model, data_root=data_root, trust_remote_code=args.trust_remote_code)
    precision = getattr(args, "precision", "fp32")
    reference = None
    if precision != "fp32":  # the fp32 scores of the same checkpoint, to measure the deviation against
        start = time.perf_counter()
        reference = run_suite(model, tokenizer, names, data_root=data_root, **settings, progress=not args.no_progress,
                              resamples=0)
        reference_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_suite(model, tokenizer, names, data_root=data_root, **settings, progress=not args.no_progress,
                       resamples=args.resamples, precision=precision)
    seconds = time.perf_counter() - start
    units = {name: type(b).resampling.describe() for name, b in zip(names, benchmarks)}
    _print_table(result.metrics, result.intervals, units)
    comparison: dict[str, Any] = {}
    if reference is not None:
        comparison = _print_deviations(names, reference, reference_s, result, seconds, precision)
    if args.json_out is not None:
        from ncsearch.stats import LEVEL, SEED

        payload = {
            "model": args.model,
            "benchmarks": names,
            **settings,
            "data_root": str(data_root),
            "metrics": result.metrics,
            "intervals": {key: list(span) for key, span in result.intervals.items()},
            "resampling": units,
            "bootstrap": {"resamples": args.resamples, "seed": SEED, "level": LEVEL, "method": "percentile"},
            "precision": precision,
            "seconds": seconds,
            **comparison,
        }
        written = _write_outputs(args.json_out, payload, result.details)
        print(f"wrote {written[0]} and {len(written) - 1} CSV table(s) beside it")
    return 0
