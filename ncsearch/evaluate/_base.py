"""The benchmark interface and its registry.

A benchmark is a small class: it loads its examples from the data root, scores one model, and returns
a flat `{benchmark/.../metric: value}` dict plus per-example tables. Every registered benchmark must
pass the shared test case in tests/test_evaluate_contract.py on a tiny model.

Uncertainty comes with the contract: a benchmark declares its resampling unit (`resampling`: which
details table holds the units, which columns identify a unit across checkpoints, which columns
stratify it) and writes its metrics once, as a function of per-row weights
(`metrics_from_weights`). Weight 1 on every row gives the published metrics; a (B, rows) matrix of
bootstrap counts gives B resamples in one vectorised call. `ncsearch.evaluate._resample` then gives
every benchmark intervals and paired comparisons without knowing what it measures.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ncsearch._options import NoOptions, StrictOptions
from ncsearch._registry import Registry
from ncsearch.errors import ConfigError, UserInputError

__all__ = ["Benchmark", "BenchmarkResult", "Resampling", "available", "get_benchmark", "options_problem", "point_metrics",
           "register", "unit_weight_metrics"]

_BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")


@dataclass(frozen=True)
class Resampling:
    """How a benchmark's examples are resampled for its intervals.

    `table`: the details table with one or more rows per unit; `unit`: what a unit is, in words;
    `key`: columns whose values identify a unit, so that two checkpoints' tables can be aligned unit
    by unit; `strata`: columns within which units are resampled (each stratum keeps its size).
    """

    table: str
    unit: str
    key: tuple[str, ...]
    strata: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.unit + (f", stratified by {' x '.join(self.strata)}" if self.strata else "")


@dataclass
class BenchmarkResult:
    """Flat metrics (keys start with the benchmark's name), per-example tables by table name, and
    (when computed) a percentile interval per metric."""

    metrics: dict[str, float]
    details: dict[str, pd.DataFrame] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)


class Benchmark(abc.ABC):
    """One benchmark. Subclasses set `name` and `resampling` and implement `score` and
    `metrics_from_weights`.

    `limit` caps the number of examples (first N in file order, or a seeded sample where the file is
    ordered by category); `batch_size` is the number of sequences per forward pass. `domains`, where
    given, keeps only examples of those bias types (StereoSet domains, CrowS-Pairs bias types) before
    the limit applies; benchmarks without categories ignore it. `fast_path` is passed to
    `score_masked` by the benchmarks that score masked tokens (exact up to float rounding; off, they
    use only the plain Hugging Face forward).

    Benchmark-specific options (`eval.options.<name>` in a search space) are declared by `Options`, a
    strict pydantic model with the published defaults; they are passed as further keyword arguments,
    validated by the base constructor and kept as `self.options` (a bad one is a one-line ConfigError
    naming `eval.options.<name>.<field>`).
    """

    name: ClassVar[str]
    resampling: ClassVar[Resampling]
    #: The benchmark's own options (not the common ones above); see the class docstring.
    Options: ClassVar[type[StrictOptions]] = NoOptions
    #: Metric keys (fnmatch patterns) that reports show by default.
    headline: ClassVar[tuple[str, ...]] = ()
    #: Metric keys (fnmatch patterns) that measure bias (the fairness side of a trade-off).
    bias_measures: ClassVar[tuple[str, ...]] = ()
    #: Datasets of the data manifest (folders under the data root) the benchmark reads; empty: the one
    #: named like the benchmark, if any. `build_benchmarks` checks them before any model is loaded.
    datasets: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def data_folders(cls) -> tuple[str, ...]:
        from ncsearch.data import DATASETS

        return cls.datasets or ((cls.name,) if cls.name in DATASETS else ())

    def __init__(
        self,
        data_root: Path,
        *,
        limit: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        domains: tuple[str, ...] | None = None,
        fast_path: bool = True,
        **options: Any,
    ):
        self.options = self.validate_options(options)
        self.data_root = Path(data_root)
        self.limit = limit
        self.batch_size = batch_size
        self.seed = seed
        self.domains = tuple(domains) if domains else None
        self.fast_path = fast_path

    @classmethod
    def validate_options(cls, options: Mapping[str, Any] | StrictOptions | None) -> StrictOptions:
        """`options` as this benchmark's `Options` (defaults filled in); any problem is one ConfigError
        line naming `eval.options.<name>.<field>`."""
        if isinstance(options, cls.Options):
            return options
        try:
            return cls.Options.model_validate(dict(options or {}))
        except ValidationError as err:
            raise ConfigError("; ".join(options_problem(cls, err, prefix=f"eval.options.{cls.name}"))) from None

    def in_domains(self, items: list[Any], key: str = "bias_type") -> list[Any]:
        """The items whose `key` is one of `self.domains` (all items when no domains are set)."""
        if self.domains is None:
            return list(items)
        kept = [item for item in items if getattr(item, key) in self.domains]
        if not kept:
            found = sorted({getattr(item, key) for item in items})
            raise UserInputError(
                f"{self.name}: no examples in domains {list(self.domains)}; its domains are: {', '.join(found)}"
            )
        return kept

    @abc.abstractmethod
    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        """Evaluate `model` (a Hugging Face masked LM in eval mode) and return its metrics."""

    @classmethod
    @abc.abstractmethod
    def metrics_from_weights(cls, table: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every resampled metric as a (B,) array, from the `resampling.table` rows weighted by
        `weights` (B, rows). Weight 1 everywhere must give exactly the published metrics."""


def unit_weight_metrics(metrics_from_weights: Callable[..., dict[str, np.ndarray]], table: pd.DataFrame,
                        *args: Any) -> dict[str, float]:
    """The published metrics of `table`: a weighted metric function at weight 1 on every row."""
    values = metrics_from_weights(table, np.ones((1, len(table))), *args)
    return {key: float(array[0]) for key, array in values.items()}


def point_metrics(cls: type[Benchmark], table: pd.DataFrame) -> dict[str, float]:
    """The published metrics of `table`: the benchmark's `metrics_from_weights` at weight 1."""
    return unit_weight_metrics(cls.metrics_from_weights, table)


def options_problem(cls: type[Benchmark], err: ValidationError, *, prefix: str) -> list[str]:
    """One line per problem of `err` (from `cls.Options`): `<prefix>.<field>: <what is wrong>`."""
    problems = []
    errors = err.errors()
    for e in errors:
        if any(len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"] for o in errors):
            continue  # a list's length after its bad items were dropped: the items' errors say it
        where = prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            takes = ", ".join(cls.Options.model_fields)
            msg = f"unknown option; {cls.name} takes: {takes}" if takes else f"unknown option; {cls.name} takes no options"
        elif e["type"] not in ("value_error", "assertion_error", "missing") and "input" in e:
            msg = f"{msg} (got {e['input']!r})"
        problems.append(f"{where}: {msg}")
    return problems


#: Class decorator: make a benchmark available by its `name` (its `Options` must be a strict options model).
register = _BENCHMARKS.register


available = _BENCHMARKS.available


def get_benchmark(name: str) -> type[Benchmark]:
    """The benchmark class registered as `name`; an unknown name lists the valid ones."""
    return _BENCHMARKS.get(name)
