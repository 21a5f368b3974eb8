"""The statistics of a search (DESIGN.md §10): configurations over seeds, paired differences against
seed-matched controls, a Pareto front that knows its noise, and the paper's central claim.

Inputs are the search's runs (`RunRecord`: one Tune trial = one training seed of a configuration or
of a control) with their evaluation folders. Every run of a search is scored on the same examples,
so one set of bootstrap draws serves all of them (`SampleBank`):

- **Examples.** For each benchmark, `evaluate.joint_samples` re-aggregates every run under the same
  resample indices of its units (stream = the benchmark's name).
- **Seeds.** A configuration's value is the mean over its finished seeds. Its interval resamples the
  seeds too (two-level bootstrap: seeds with replacement, crossed with the example draws), with the
  seed draws keyed by the number of seeds, so configurations with the same seeds draw the same ones.
- **Pairs.** A difference between two groups (a configuration and its control, or two
  configurations) is taken seed by seed on the seeds both finished (common random numbers: the same
  seed means the same data order and masks), then averaged, with the same two-level draws. With one
  seed the interval holds evaluation noise only, and the tables say so.

Metrics that are not re-aggregated from examples (train/*) vary over seeds only.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ncsearch.stats import LEVEL, RESAMPLES, SEED, Estimate, estimate, holm, rng, spearman, unit_draws

__all__ = [
    "Claim",
    "FrontMember",
    "GroupInfo",
    "GroupSummary",
    "RunRecord",
    "SampleBank",
    "SearchAnalysis",
    "label_of",
    "short_names",
]

#: Train-time values kept per run (the last reported window) and summarised like the eval metrics.
TRAIN_METRICS = ("train/unc3", "train/nc3", "train/mlm_loss")
#: UNC3 measures the paper's claim is tested with: at train time (on the training batches) and held out.
UNC3_MEASURES = ("train/unc3", "collapse/unc3")
#: Results that are bookkeeping, not measurements (never summarised).
_NOT_SUMMARISED = ("*/n", "collapse/classes", "seat/*/p_value")


@dataclass
class RunRecord:
    """One training run (a Tune trial): `role` "trial" (a configuration's seed) or "control"."""

    trial_id: str
    role: str
    group: str
    replicate: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: Any = None  # an EvalRecord, or a zero-argument callable returning one (lazy download)
    run_id: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED" and bool(self.metrics)

    def eval_record(self) -> Any:
        if callable(self.evaluation):
            self.evaluation = self.evaluation()
        return self.evaluation


@dataclass
class GroupInfo:
    """A configuration (role "trial") or a control: its searched values, its control, its label."""

    group: str
    role: str
    values: dict[str, Any]
    label: str
    control: str | None = None
    run_id: str | None = None


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Dotted keys shortened to their last part where that stays unique (nc3.alpha -> alpha)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def label_of(values: dict[str, Any], role: str = "trial") -> str:
    """"alpha=0.1152" from searched values; "control" (plus the non-NC3 values) for a control."""
    names = short_names(list(values))
    if role == "control":
        rest = [f"{names[k]}={_format_value(v)}" for k, v in values.items() if not k.startswith("nc3.")]
        return "control" + (f" ({', '.join(rest)})" if rest else "")
    return ", ".join(f"{names[k]}={_format_value(v)}" for k, v in values.items()) or "fixed"


class SampleBank:
    """Every finished run's metrics at weight 1 and under shared bootstrap draws of the examples."""

    def __init__(self, runs: Sequence[RunRecord], *, resamples: int = RESAMPLES, seed: int = SEED):
        from ncsearch.evaluate import available, joint_samples

        self.runs = [r for r in runs if r.finished]
        self.index = {r.trial_id: i for i, r in enumerate(self.runs)}
        self.resamples, self.seed = resamples, seed
        self.point: dict[str, np.ndarray] = {}
        self.samples: dict[str, np.ndarray] = {}
        self.units: dict[str, tuple[int, str]] = {}  # benchmark -> (shared units, unit)
        evaluations = [r.eval_record() for r in self.runs]
        benchmarks = sorted(set.intersection(*(set(e.benchmarks) for e in evaluations)) & set(available())) if evaluations else []
        for name in benchmarks:
            joint = joint_samples(name, [e.details(name) for e in evaluations], resamples=resamples, seed=seed)
            self.units[name] = (joint.units, joint.resampling.describe())
            for j, metric in enumerate(joint.metrics):
                self.point[metric] = joint.point[:, j]
                self.samples[metric] = joint.samples[:, :, j].T  # (B, runs)
        for metric in TRAIN_METRICS:
            values = np.array([r.metrics.get(metric, math.nan) for r in self.runs], dtype=np.float64)
            if np.isfinite(values).any():
                self.point[metric] = values
                self.samples[metric] = np.broadcast_to(values, (resamples, len(values)))

    @property
    def metrics(self) -> list[str]:
        return [m for m in self.point if not any(fnmatch.fnmatchcase(m, p) for p in _NOT_SUMMARISED)]

    def _seed_draws(self, count: int) -> np.ndarray:
        return unit_draws(count, resamples=self.resamples, generator=rng(self.seed, f"replicates:{count}"))

    def combine(self, terms: Sequence[tuple[float, Sequence[str]]], metric: str) -> tuple[float, np.ndarray]:
        """(point, (B,) samples) of the mean over seeds of Σ coefficient · run, where every term lists
        its runs (trial ids) in the same seed order: one term is a configuration's mean, (+1, a),
        (−1, b) a paired difference, four terms a difference of two differences."""
        seeds = len(terms[0][1])
        point = np.zeros(seeds)
        samples = np.zeros((self.resamples, seeds))
        for coefficient, runs in terms:
            cols = [self.index[t] for t in runs]
            point = point + coefficient * self.point[metric][cols]
            samples = samples + coefficient * self.samples[metric][:, cols]
        draws = self._seed_draws(seeds)
        return float(point.mean()), np.take_along_axis(samples, draws, axis=1).mean(axis=1)


@dataclass
class GroupSummary:
    """A configuration or control over its seeds: estimates, between-seed SD, paired deltas."""

    info: GroupInfo
    runs: dict[int, str]  # finished replicate -> trial id
    failed: list[int]
    estimates: dict[str, Estimate] = field(default_factory=dict)
    seed_sd: dict[str, float] = field(default_factory=dict)
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)
    deltas: dict[str, Estimate] = field(default_factory=dict)
    delta_holm: dict[str, float] = field(default_factory=dict)
    seed_deltas: dict[str, dict[int, Estimate]] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    delta_samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def mlflow_metrics(self) -> dict[str, float]:
        """Flat metrics for the group's MLflow run: `<m>` (mean over seeds), `<m>.ci_low/.ci_high`,
        `<m>.seed_sd`, `delta/<m>` (vs control) with `.ci_low/.ci_high/.p_value/.p_holm`."""
        out: dict[str, float] = {"replicates/finished": float(self.seeds), "replicates/failed": float(len(self.failed))}
        for metric, e in self.estimates.items():
            out.update({metric: e.value, f"{metric}.ci_low": e.low, f"{metric}.ci_high": e.high})
            if metric in self.seed_sd:
                out[f"{metric}.seed_sd"] = self.seed_sd[metric]
        for metric, e in self.deltas.items():
            key = f"delta/{metric}"
            out.update({key: e.value, f"{key}.ci_low": e.low, f"{key}.ci_high": e.high, f"{key}.p_value": e.p_value or math.nan})
            if metric in self.delta_holm:
                out[f"{key}.p_holm"] = self.delta_holm[metric]
        return {k: v for k, v in out.items() if isinstance(v, float) and math.isfinite(v)}


@dataclass(frozen=True)
class FrontMember:
    """A configuration on the Pareto front of configuration means, and what noise allows to say of it."""

    group: str
    label: str
    distinct_from: tuple[str, ...]  # labels of other front members it differs from on some objective
    tied_with: tuple[str, ...]  # front members it cannot be told from on any objective
    vs_control: str  # "differs", "tie" or "no control"


@dataclass(frozen=True)
class Claim:
    """A rank correlation across runs between a UNC3 measure and a bias measure. `basis` says what was
    correlated: each run's difference to its seed-matched control, or the runs' own values."""

    x: str
    y: str
    runs: int
    rho: Estimate
    basis: str


class SearchAnalysis:
    """Summaries, comparisons, the noise-aware front and the claim test for one search.

    `objectives` are (metric, mode) pairs (`delta/<m>` for differences to the control); `groups`
    describes every configuration and control; `runs` are all of the search's runs.
    """

    def __init__(
        self,
        runs: Sequence[RunRecord],
        groups: dict[str, GroupInfo],
        objectives: Sequence[tuple[str, str]],
        *,
        bias_patterns: Sequence[str] = (),
        skip_overall: bool = False,
        resamples: int = RESAMPLES,
        seed: int = SEED,
        level: float = LEVEL,
    ):
        self.runs = list(runs)
        self.groups = groups
        self.objectives = list(objectives)
        self.level = level
        self.bank = SampleBank(self.runs, resamples=resamples, seed=seed)
        self.bias_patterns = tuple(bias_patterns)
        self.skip_overall = skip_overall
        self.summaries: dict[str, GroupSummary] = {}
        for group in groups:
            self.summaries[group] = self._summarise(group)
        for group, summary in self.summaries.items():
            control = groups[group].control
            if control and control in self.summaries:
                self._deltas(summary, self.summaries[control])

    @classmethod
    def for_spec(cls, runs: Sequence[RunRecord], groups: dict[str, GroupInfo], spec: Any, **options: Any) -> SearchAnalysis:
        """The analysis of a search of `spec`: its objectives, the bias measures its benchmarks declare,
        and (when it scores a single bias domain, whose `overall` metrics repeat that domain's) no
        `overall` copies among them."""
        from ncsearch._trial_driver import trial_benchmarks
        from ncsearch.evaluate import get_benchmark

        patterns = [p for name in trial_benchmarks(spec) for p in get_benchmark(name).bias_measures]
        domains = spec.eval.domain_filter()
        return cls(runs, groups, [(o.metric, o.mode) for o in spec.objectives], bias_patterns=patterns,
                   skip_overall=bool(domains) and len(domains) == 1, **options)

    @property
    def family(self) -> list[str]:
        """The metrics each configuration's Holm adjustment runs over: its objectives, the bias
        measures and the UNC3 measures (not every re-aggregated sub-score)."""
        wanted = [m.removeprefix("delta/") for m, _ in self.objectives] + self.bias_metrics() + list(UNC3_MEASURES)
        return [m for m in dict.fromkeys(wanted) if m in self.bank.point]

    # ----- per group -----------------------------------------------------------------------------

    def _runs_of(self, group: str) -> tuple[dict[int, str], list[int]]:
        finished, failed = {}, []
        for r in self.runs:
            if r.group != group:
                continue
            if r.finished and r.trial_id in self.bank.index:
                finished[r.replicate] = r.trial_id
            elif r.status not in ("RUNNING", "PENDING"):
                failed.append(r.replicate)
        return dict(sorted(finished.items())), sorted(set(failed) - set(finished))

    def _summarise(self, group: str) -> GroupSummary:
        runs, failed = self._runs_of(group)
        summary = GroupSummary(self.groups[group], runs, failed)
        if not runs:
            return summary
        for metric in self.bank.metrics:
            values = self.bank.point[metric][[self.bank.index[t] for t in runs.values()]]
            if not np.isfinite(values).all():
                continue
            point, samples = self.bank.combine([(1.0, list(runs.values()))], metric)
            summary.estimates[metric] = estimate(point, samples, level=self.level)
            summary.samples[metric] = samples
            summary.per_seed[metric] = {r: float(v) for r, v in zip(runs, values)}
            if len(values) > 1:
                summary.seed_sd[metric] = float(np.std(values, ddof=1))
        return summary

    def same_vocabulary(self, group: str, control: str) -> bool:
        """Whether a configuration measures UNC3 on the same V as its control: a control is shared by
        every configuration that differs only in NC3 fields, and it keeps its statistics on the V of
        the configuration that first asked for it."""
        def vocab(values: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in values.items() if k.startswith("nc3.vocab.")}

        return vocab(self.groups[group].values) == vocab(self.groups[control].values)

    def _deltas(self, summary: GroupSummary, control: GroupSummary) -> None:
        common = [r for r in summary.runs if r in control.runs]
        if not common:
            return
        a = [summary.runs[r] for r in common]
        b = [control.runs[r] for r in common]
        same_v = self.same_vocabulary(summary.info.group, control.info.group)
        for metric in summary.estimates:
            if metric not in control.estimates or (metric in UNC3_MEASURES and not same_v):
                continue
            point, samples = self.bank.combine([(1.0, a), (-1.0, b)], metric)
            summary.deltas[metric] = estimate(point, samples, level=self.level, test=True)
            summary.delta_samples[metric] = samples
            per_seed = {}
            for r, ta, tb in zip(common, a, b):
                p, s = self.bank.combine([(1.0, [ta]), (-1.0, [tb])], metric)
                per_seed[r] = estimate(p, s, level=self.level, test=True)
            summary.seed_deltas[metric] = per_seed
        metrics = [m for m in self.family if m in summary.deltas]
        adjusted = holm([summary.deltas[m].p_value for m in metrics])
        summary.delta_holm = {m: float(p) for m, p in zip(metrics, adjusted)}

    def difference(self, group_a: str, group_b: str, metric: str, *, against_controls: bool = False) -> Estimate | None:
        """a − b on `metric`, paired seed by seed on the seeds both finished (None if none). With
        `against_controls`, the difference of their differences to their own controls (which is a − b
        itself when they share a control)."""
        sa, sb = self.summaries[group_a], self.summaries[group_b]
        members = [sa, sb]
        if against_controls:
            controls = [self.summaries.get(s.info.control or "") for s in (sa, sb)]
            if any(c is None for c in controls):
                return None
            members += controls
        common = [r for r in sa.runs if all(r in m.runs for m in members)]
        if not common or any(metric not in m.estimates for m in members):
            return None
        terms = [(1.0, [sa.runs[r] for r in common]), (-1.0, [sb.runs[r] for r in common])]
        if against_controls:
            ca, cb = members[2], members[3]
            if ca is not cb:
                terms += [(-1.0, [ca.runs[r] for r in common]), (1.0, [cb.runs[r] for r in common])]
        point, samples = self.bank.combine(terms, metric)
        return estimate(point, samples, level=self.level, test=True)

    # ----- views ---------------------------------------------------------------------------------

    @property
    def configurations(self) -> list[GroupSummary]:
        return [s for s in self.summaries.values() if s.info.role == "trial"]

    @property
    def controls(self) -> list[GroupSummary]:
        return [s for s in self.summaries.values() if s.info.role == "control"]

    def objective_estimate(self, summary: GroupSummary, metric: str) -> Estimate | None:
        if metric.startswith("delta/"):
            return summary.deltas.get(metric.removeprefix("delta/"))
        return summary.estimates.get(metric)

    def objective_samples(self, summary: GroupSummary, metric: str) -> np.ndarray | None:
        if metric.startswith("delta/"):
            return summary.delta_samples.get(metric.removeprefix("delta/"))
        return summary.samples.get(metric)

    def configuration_table(self) -> pd.DataFrame:
        """One row per configuration: group, label, searched values, seeds, and per objective the mean
        over seeds and its interval (`<m>`, `<m>.ci_low`, `<m>.ci_high`)."""
        rows = []
        for s in self.configurations:
            row: dict[str, Any] = {"group": s.info.group, "label": s.info.label, "seeds": s.seeds,
                                   "failed_seeds": len(s.failed)}
            row.update({f"param.{k}": v for k, v in s.info.values.items()})
            for metric, _ in self.objectives:
                e = self.objective_estimate(s, metric)
                row[metric] = e.value if e else math.nan
                row[f"{metric}.ci_low"] = e.low if e else math.nan
                row[f"{metric}.ci_high"] = e.high if e else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    # ----- the front -----------------------------------------------------------------------------

    def beaten_by(self, dominated: str, front: Sequence[str]) -> list[str]:
        """The front members that beat configuration `dominated` beyond noise on some objective (a
        paired difference whose interval lies on the better side of 0); empty when it is off the
        front only within noise."""
        out = []
        for member in front:
            for metric, mode in self.objectives:
                found = self.difference(member, dominated, metric.removeprefix("delta/"),
                                        against_controls=metric.startswith("delta/"))
                if found is not None and found.excludes(0.0) and ((found.value > 0) == (mode == "max")):
                    out.append(self.summaries[member].info.label)
                    break
        return out

    def pareto(self) -> tuple[Any, list[FrontMember], Estimate]:
        """(ParetoInfo on configuration means, what noise allows to say of each front member, the
        hypervolume with a bootstrap interval over seeds and examples, at the point estimate's
        reference point)."""
        from ncsearch.pareto import pareto_info

        table = self.configuration_table()
        info = pareto_info(table, self.objectives) if len(table) else pareto_info(
            pd.DataFrame(columns=["group", *[m for m, _ in self.objectives]]), self.objectives)
        front = [self.summaries[g] for g in info.front["group"]] if len(info.front) else []
        members = []
        for s in front:
            distinct, tied = [], []
            for other in front:
                if other is s:
                    continue
                differs = any(self._differs(s, other, metric) for metric, _ in self.objectives)
                (distinct if differs else tied).append(other.info.label)
            if not s.info.control or s.info.control not in self.summaries:
                versus = "no control"
            else:
                differs = any((e := s.deltas.get(metric.removeprefix("delta/"))) is not None and e.excludes(0.0)
                              for metric, _ in self.objectives)
                versus = "differs" if differs else "tie"
            members.append(FrontMember(s.info.group, s.info.label, tuple(distinct), tuple(tied), versus))
        hv = self._hypervolume_interval(info) if info.reference else Estimate(math.nan, math.nan, math.nan)
        return info, members, hv

    def _differs(self, a: GroupSummary, b: GroupSummary, metric: str) -> bool:
        found = self.difference(a.info.group, b.info.group, metric.removeprefix("delta/"),
                                against_controls=metric.startswith("delta/"))
        return bool(found is not None and found.excludes(0.0))

    def _hypervolume_interval(self, info: Any) -> Estimate:
        from ncsearch.pareto import hypervolume

        configs = self.configurations
        metrics = [m for m, _ in self.objectives]
        modes = [d for _, d in self.objectives]
        reference = [info.reference[m] for m in metrics]
        stacks = []
        for s in configs:
            columns = [self.objective_samples(s, m) for m in metrics]
            if any(c is None for c in columns):
                continue
            stacks.append(np.stack(columns, axis=-1))  # (B, objectives)
        if not stacks:
            return Estimate(info.hypervolume, math.nan, math.nan)
        values = np.stack(stacks, axis=1)  # (B, configs, objectives)
        samples = np.array([hypervolume(values[b], modes, reference) for b in range(values.shape[0])])
        return estimate(info.hypervolume, samples, level=self.level)

    # ----- the paper's claim ---------------------------------------------------------------------

    def bias_metrics(self) -> list[str]:
        """Metrics measuring bias that this search has (benchmarks' `bias_measures`, fairness objectives)."""
        found = [m for m in self.bank.metrics if any(fnmatch.fnmatchcase(m, p) for p in self.bias_patterns)]
        return [m for m in found if not (self.skip_overall and "/overall/" in m)]

    def claim_points(self, x: str, y: str) -> tuple[np.ndarray, np.ndarray, str]:
        """The (x, y) points the claim is tested on, and their basis.

        With controls, each configuration seed's difference to the control at the same seed: the
        training seed moves UNC3 and the bias measures together (same data order, same masks), and a
        correlation of raw values across seeds would show that shared seed effect, not the
        regularizer's. Without controls, or when configurations measure UNC3 on other vocabularies
        than their control (a searched V), the configuration runs' own values.
        """
        xs, ys = [], []
        paired = [s for s in self.configurations if s.deltas and s.info.control in self.summaries]
        if paired and all(self.same_vocabulary(s.info.group, s.info.control) for s in paired):
            for s in self.configurations:
                control = self.summaries.get(s.info.control or "")
                if control is None:
                    continue
                for r, trial in s.runs.items():
                    if r in control.runs:
                        a, b = self.bank.index[trial], self.bank.index[control.runs[r]]
                        xs.append(self.bank.point[x][a] - self.bank.point[x][b])
                        ys.append(self.bank.point[y][a] - self.bank.point[y][b])
            return np.array(xs), np.array(ys), "differences to the seed-matched control"
        cols = [self.bank.index[t] for s in self.configurations for t in s.runs.values()]
        return self.bank.point[x][cols], self.bank.point[y][cols], "values of the configurations' runs"

    def claims(self, bias_metrics: Sequence[str] | None = None) -> list[Claim]:
        """Spearman's rho between each UNC3 measure and each bias measure (default: `bias_metrics()`;
        see `claim_points`)."""
        out = []
        for x in UNC3_MEASURES:
            if x not in self.bank.point:
                continue
            for y in (self.bias_metrics() if bias_metrics is None else bias_metrics):
                xs, ys, basis = self.claim_points(x, y)
                rho = spearman(xs, ys, stream=f"claim:{x}:{y}", resamples=self.bank.resamples, seed=self.bank.seed,
                               level=self.level)
                out.append(Claim(x, y, int(np.isfinite(xs).sum()), rho, basis))
        return out

    # ----- the verdict ---------------------------------------------------------------------------

    def control_tests(self, metrics: Sequence[str]) -> pd.DataFrame:
        """Every configuration's paired difference to its control on `metrics`, with Holm's adjustment
        over the whole family (all configurations x metrics): the test behind the verdict."""
        rows = []
        for s in self.configurations:
            for metric in metrics:
                e = s.deltas.get(metric)
                if e is not None:
                    rows.append({"group": s.info.group, "label": s.info.label, "metric": metric, "delta": e.value,
                                 "ci_low": e.low, "ci_high": e.high, "p_value": e.p_value, "seeds": s.seeds})
        frame = pd.DataFrame(rows, columns=["group", "label", "metric", "delta", "ci_low", "ci_high", "p_value", "seeds"])
        frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=np.float64)) if len(frame) else []
        return frame


