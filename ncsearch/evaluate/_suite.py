"""Run several benchmarks on one model and merge their results.

The trial driver and `ncsearch eval` both call `run_suite`; it owns the only loop over benchmarks, so
progress display, timing and the merged key layout (`<benchmark>/...` metrics, `<benchmark>/<table>`
details) are the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from ncsearch.errors import NcsearchError, UserInputError
from ncsearch.evaluate._base import BenchmarkResult, get_benchmark
from ncsearch.evaluate._scoring import report_progress

__all__ = ["run_suite"]


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


def run_suite(
    model: Any,
    tokenizer: Any,
    names: Sequence[str],
    *,
    data_root: str | Path,
    limits: Mapping[str, int] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    progress: bool = True,
) -> BenchmarkResult:
    """Score `model` on each named benchmark, in order, and merge the results.

    `limits` maps benchmark names to example caps (absent: no cap); `domains` keeps only those bias
    types in the benchmarks that have them (the `gender` suite passes ("gender",)). Metrics are merged flat;
    details are keyed "<benchmark>/<table>", plus "suite/timings" (seconds per benchmark). Unknown
    names raise before anything runs.
    """
    limits = dict(limits or {})
    classes = [get_benchmark(name) for name in names]
    unknown = sorted(set(limits) - set(names))
    if unknown:
        raise UserInputError(f"limits given for benchmarks not in the suite: {', '.join(map(repr, unknown))}")
    metrics: dict[str, float] = {}
    details: dict[str, pd.DataFrame] = {}
    timings = []
    model.eval()
    with _progress_bars(progress) as bars:
        for name, cls in zip(names, classes):
            benchmark = cls(
                Path(data_root),
                limit=limits.get(name),
                batch_size=batch_size,
                seed=seed,
                domains=tuple(domains) if domains else None,
            )
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
            with hook_context:
                result = benchmark.score(model, tokenizer)
            seconds = time.perf_counter() - start
            if bars is not None:
                done = bars.tasks[task]
                bars.update(task, total=max(done.total or 1, 1), completed=max(done.total or 1, 1))
            stray = [key for key in result.metrics if not key.startswith(f"{name}/")]
            if stray:
                raise NcsearchError(f"benchmark {name!r} returned metrics outside its namespace: {stray[:3]}")
            metrics.update({key: float(value) for key, value in result.metrics.items()})
            for table_name, table in result.details.items():
                details[f"{name}/{table_name}"] = table
            timings.append({"benchmark": name, "seconds": seconds, "limit": limits.get(name)})
    details["suite/timings"] = pd.DataFrame(timings, columns=["benchmark", "seconds", "limit"])
    return BenchmarkResult(metrics, details)
