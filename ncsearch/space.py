"""SearchSpec -> what Ray Tune and Optuna need: a param space, a sampler, a searcher.

A pure translation (DESIGN.md §2, STYLE.md 7): `translate(spec)` reads the spec and builds objects, and
refuses what it cannot express with a `ConfigError`. Nothing here starts Ray or writes files except
`SearchPlan.searcher()`, which opens the Optuna study's SQLite storage it is given.

Mapping of the YAML distributions (bounds are inclusive in the YAML):

| YAML                 | Tune param space               | Optuna distribution (via OptunaSearch)       |
|----------------------|--------------------------------|----------------------------------------------|
| `choice: [a, b]`     | `tune.choice([a, b])`          | `CategoricalDistribution`                    |
| `uniform: [lo, hi]`  | `tune.uniform(lo, hi)`         | `FloatDistribution(lo, hi)`                  |
| `loguniform: [l, h]` | `tune.loguniform(l, h)`        | `FloatDistribution(l, h, log=True)`          |
| `int: [lo, hi]`      | `tune.randint(lo, hi + 1)`     | `IntDistribution(lo, hi)` (hi included)      |
| `grid: [a, b]`       | `tune.choice([a, b])`          | `CategoricalDistribution`, enumerated by `GridSampler` |

Fixed fields are not in the param space: the trial driver resolves the spec with `spec.resolve(config)`.

Why grid search goes through Optuna's `GridSampler` and not Tune's `tune.grid_search`: Tune's grid
variables cannot be handed to `OptunaSearch` (its `convert_search_space` raises on them), so a Tune
grid would bypass Optuna altogether and leave no study to inspect. `GridSampler` is objective-agnostic
(works with any number of objectives), assigns grid point `i` to Optuna trial `i` (so concurrent trials
never collide) and keeps the study in the same SQLite file as every other algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ncsearch.config import Distribution, SearchSpec
from ncsearch.errors import ConfigError

import optuna

if TYPE_CHECKING:
    from ray.tune.search import Searcher

__all__ = ["AskTellGridSampler", "SearchPlan", "grid_size", "make_sampler", "param_space", "translate"]


def _tune_domain(key: str, dist: Distribution) -> Any:
    from ray import tune

    kind, args = dist.kind, list(dist.args)
    if kind in ("choice", "grid"):
        return tune.choice(args)
    if kind == "uniform":
        return tune.uniform(float(args[0]), float(args[1]))
    if kind == "loguniform":
        return tune.loguniform(float(args[0]), float(args[1]))
    if kind == "int":
        # tune.randint excludes its upper bound; the YAML's [lo, hi] includes it.
        return tune.randint(int(args[0]), int(args[1]) + 1)
    raise ConfigError(f"{key}: distribution {kind!r} has no Ray Tune equivalent")


def param_space(spec: SearchSpec) -> dict[str, Any]:
    """The Tune param space: one flat `{dotted.path: tune domain}` entry per searched field."""
    space = {}
    for key, dist in spec.distributions().items():
        if "/" in key:
            raise ConfigError(f"{key!r}: '/' in a key collides with Tune's nesting separator")
        if dist.kind in ("uniform", "loguniform") and dist.args[0] == dist.args[1]:
            raise ConfigError(f"{key}: {dist.kind} [{dist.args[0]}, {dist.args[1]}] is a single value; write it as a fixed value")
        space[key] = _tune_domain(key, dist)
    return space


class AskTellGridSampler(optuna.samplers.GridSampler):
    """`GridSampler` that does not call `study.stop()` after the last grid point.

    `GridSampler.after_trial` stops the study when the grid is exhausted, which Optuna allows only
    inside `study.optimize`; under Tune's ask/tell loop it raises (and Ray logs a warning) on the last
    trial. Tune's `num_samples` already bounds the number of trials, so stopping is not needed.
    Defined at module level so Tune can pickle it with the searcher state.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def grid_size(spec: SearchSpec) -> int:
    return math.prod(len(d.args) for d in spec.distributions().values())


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for `spec.search.algorithm`, seeded with `spec.search.seed`.

    - tpe: `TPESampler` (multi-objective capable); its random start-up phase is shortened to half
      the trial budget (at most Optuna's default 10) so that small searches still reach the model.
    - nsga2: `NSGAIISampler` with a population of about a quarter of the budget (4..50), so a small
      search sees several generations instead of one random population of Optuna's default 50.
    - random: `RandomSampler`.
    - grid: `GridSampler` over the grid/choice values (see the module docstring).
    """
    algo, seed, n = spec.search.algorithm, spec.search.seed, spec.search.num_samples
    if algo == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, n // 2)))
    if algo == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, math.ceil(n / 4))))
    if algo == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algo == "grid":
        dists = spec.distributions()
        bad = [k for k, d in dists.items() if d.kind not in ("grid", "choice")]
        if bad:
            raise ConfigError(f"algorithm 'grid' cannot enumerate {', '.join(bad)} (only grid/choice)")
        return AskTellGridSampler({k: list(d.args) for k, d in dists.items()}, seed=seed)
    raise ConfigError(f"search.algorithm {algo!r} is not one of tpe, nsga2, random, grid")


@dataclass
class SearchPlan:
    """The translated search: hand `param_space` to the Tuner and `searcher(...)` to its TuneConfig.

    `num_samples` counts configurations (what Optuna proposes); each is trained `replicates` times,
    and with `control` beside alpha = 0 twins, so Tune runs up to `expected_runs` trials.
    """

    param_space: dict[str, Any]
    metrics: list[str]
    modes: list[str]
    sampler: Any
    num_samples: int
    max_concurrent: int
    algorithm: str
    spec: dict[str, Any]
    replicates: int = 1
    control: bool = False
    controls: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def expected_runs(self) -> int:
        """Tune trials the search will run (at most, when the number of controls is an upper bound)."""
        return (self.num_samples + self.controls) * self.replicates

    def searcher(self, *, storage_url: str | None, study_name: str) -> Searcher:
        """`OptunaSearch` (metric/mode lists: multi-objective) over an Optuna `RDBStorage` at
        `storage_url` (e.g. ``sqlite:////abs/run/optuna.db``; None keeps the study in memory), inside
        `ReplicatedSearch`, which runs each configuration's seeds and controls as Tune trials and tells
        Optuna their mean (see `ncsearch._replicates`); it also caps concurrency at `max_concurrent`."""
        from ray.tune.search.optuna import OptunaSearch

        from ncsearch._replicates import ReplicatedSearch

        storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
        search = OptunaSearch(metric=list(self.metrics), mode=list(self.modes), sampler=self.sampler,
                              storage=storage, study_name=study_name)
        return ReplicatedSearch(search, spec=self.spec, configurations=self.num_samples, replicates=self.replicates,
                                control=self.control, max_concurrent=self.max_concurrent)


def translate(spec: SearchSpec, *, num_samples: int | None = None) -> SearchPlan:
    """Translate `spec` into a `SearchPlan`; raise ConfigError on what Tune/Optuna cannot express.

    `num_samples` overrides `spec.search.num_samples` (the `--num-samples` flag). For `grid`, the
    number of trials is the grid size, or fewer when a smaller `num_samples` is asked for explicitly.
    """
    space = param_space(spec)
    if not space:
        raise ConfigError(
            f"search space {spec.name!r} searches nothing (every field is fixed); "
            "add a distribution or use 'ncsearch train' for a single run"
        )
    notes: list[str] = []
    n = num_samples if num_samples is not None else spec.search.num_samples
    if n < 1:
        raise ConfigError(f"num_samples must be >= 1, got {n}")
    if spec.search.algorithm == "grid":
        size = grid_size(spec)
        explicit = num_samples is not None or "num_samples" in spec.search.model_fields_set
        if not explicit:
            n = size
        elif n > size:
            notes.append(f"grid has {size} points; running {size} trials, not {n}")
            n = size
        elif n < size:
            notes.append(f"grid has {size} points; running the first {n} (seeded order)")
    sampler = make_sampler(spec.model_copy(update={"search": spec.search.model_copy(update={"num_samples": n})}))
    controls = 0
    if spec.search.control:
        # One control per distinct non-NC3 setting: all of them when those are enumerable, else at most one per configuration.
        other = [d for k, d in spec.distributions().items() if not k.startswith("nc3.")]
        enumerable = all(d.kind in ("choice", "grid") for d in other)
        controls = min(n, math.prod(len(d.args) for d in other)) if enumerable else n
    runs = (n + controls) * spec.search.replicates
    return SearchPlan(
        param_space=space,
        metrics=[o.metric for o in spec.objectives],
        modes=[o.mode for o in spec.objectives],
        sampler=sampler,
        num_samples=n,
        max_concurrent=min(spec.search.max_concurrent, runs),
        algorithm=spec.search.algorithm,
        spec=spec.to_dict(),
        replicates=spec.search.replicates,
        control=spec.search.control,
        controls=controls,
        notes=notes,
    )
