"""Run several benchmarks on one model and merge their results.

The trial driver and `ncsearch eval` both call `run_suite`; it owns the only loop over benchmarks, so
progress display, timing, intervals and the merged key layout (`<benchmark>/...` metrics,
`<benchmark>/<table>` details) are the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from ncsearch.errors import DataError, NcsearchError, UserInputError
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, get_benchmark
from ncsearch.evaluate._scoring import report_progress
from ncsearch.stats import LEVEL, RESAMPLES, SEED

__all__ = ["build_benchmarks", "run_suite"]


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield progress


def build_benchmarks(
    names: Sequence[str],
    *,
    data_root: str | Path,
    limits: Mapping[str, int] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    fast_path: bool = True,
) -> list[Benchmark]:
    """The benchmark objects of a suite, constructed (cheap: nothing is loaded) so that unknown names,
    limits or options, or a dataset missing from the data root, fail before any scoring, or before Ray
    starts."""
    limits, options = dict(limits or {}), dict(options or {})
    classes = [get_benchmark(name) for name in names]
    for name, cls in zip(names, classes):
        for dataset in cls.data_folders():
            if not (Path(data_root) / dataset).is_dir():
                raise DataError(f"benchmark {name!r} needs the {dataset!r} data, but {Path(data_root) / dataset} does "
                                f"not exist; run 'ncsearch data pull --only {dataset}' (or pass another --data-dir)")
    for what, given in (("limits", limits), ("options", options)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise UserInputError(f"{what} given for benchmarks not in the suite: {', '.join(map(repr, unknown))}")
    # Every benchmark's options against its `Options` model first (one ConfigError line each, naming
    # eval.options.<name>.<field>), so no benchmark is built while another's options are wrong.
    validated = [cls.validate_options(options.get(name, {})) for name, cls in zip(names, classes)]
    return [cls(Path(data_root), limit=limits.get(name), batch_size=batch_size, seed=seed,
                domains=tuple(domains) if domains else None, fast_path=fast_path, **dict(checked))
            for name, cls, checked in zip(names, classes, validated)]


def run_suite(
    model: Any,
    tokenizer: Any,
    names: Sequence[str],
    *,
    data_root: str | Path,
    limits: Mapping[str, int] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    fast_path: bool = True,
    progress: bool = True,
    resamples: int = RESAMPLES,
    interval_seed: int = SEED,
    level: float = LEVEL,
    precision: str = "fp32",
) -> BenchmarkResult:
    """Score `model` on each named benchmark, in order, and merge the results.

    `limits` maps benchmark names to example caps (absent: no cap); `options` to the benchmark's own
    options, validated by its `Options` model (e.g. {"crows_pairs": {"scorers": ["bias_bench", "nangia"]}}); `domains` keeps only
    those bias types in the benchmarks that have them (the `gender` suite passes ("gender",));
    `fast_path` off scores with the plain Hugging Face forward only (`score_masked`). `precision`
    "bf16" scores under bfloat16 autocast with the fast path off (`ncsearch.evaluate._precision`);
    "fp32" (the default) is the plain arithmetic.
    Metrics are merged flat; with `resamples` > 0 each metric also gets a percentile bootstrap interval
    over its benchmark's resampling unit (`result.intervals`). Details are keyed "<benchmark>/<table>",
    plus "suite/timings" (seconds per benchmark, scoring and bootstrap apart, and the precision). Unknown names, limits
    and options raise before anything runs.
    """
    from ncsearch.evaluate._precision import scoring_context, scoring_fast_path
    from ncsearch.evaluate._resample import intervals as bootstrap_intervals

    fast_path = scoring_fast_path(precision, fast_path)
    benchmarks = build_benchmarks(names, data_root=data_root, limits=limits, options=options,
                                  batch_size=batch_size, seed=seed, domains=domains, fast_path=fast_path)
    metrics: dict[str, float] = {}
    details: dict[str, pd.DataFrame] = {}
    spans: dict[str, tuple[float, float]] = {}
    timings = []
    model.eval()
    with _progress_bars(progress) as bars:
        for name, benchmark in zip(names, benchmarks):
            hook_context: Any = nullcontext()
            if bars is not None:
                task = bars.add_task(name, total=0)

                def hook(added: int, advanced: int, task: Any = task) -> None:
                    if added:
                        bars.update(task, total=bars.tasks[task].total + added)
                    if advanced:
                        bars.advance(task, advanced)

                hook_context = report_progress(hook)
            start = time.perf_counter()
            with hook_context, scoring_context(precision, model):
                result = benchmark.score(model, tokenizer)
            seconds = time.perf_counter() - start
            if bars is not None:
                done = bars.tasks[task]
                bars.update(task, total=max(done.total or 1, 1), completed=max(done.total or 1, 1))
            stray = [key for key in result.metrics if not key.startswith(f"{name}/")]
            if stray:
                raise NcsearchError(f"benchmark {name!r} returned metrics outside its namespace: {stray[:3]}")
            start = time.perf_counter()
            if resamples > 0:
                found = bootstrap_intervals(name, result.details, resamples=resamples, seed=interval_seed, level=level)
                spans.update({key: (e.low, e.high) for key, e in found.items() if key in result.metrics})
            bootstrap_seconds = time.perf_counter() - start
            metrics.update({key: float(value) for key, value in result.metrics.items()})
            for table_name, table in result.details.items():
                details[f"{name}/{table_name}"] = table
            timings.append({"benchmark": name, "seconds": seconds, "bootstrap_seconds": bootstrap_seconds,
                            "limit": limits.get(name) if limits else None,
                            "unit": type(benchmark).resampling.describe(), "precision": precision})
    details["suite/timings"] = pd.DataFrame(timings, columns=["benchmark", "seconds", "bootstrap_seconds", "limit", "unit",
                                                              "precision"])
    return BenchmarkResult(metrics, details, spans)
