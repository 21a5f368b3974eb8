"""A search's report, computed: the analysis, the noise-aware front, the claim test and the verdict.

`build_report` reads nothing itself: it takes a `SearchRecord` (what `ncsearch._records.load_search`
read from MLflow) and returns a `Report`, which the renderers turn into text, Markdown and HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ncsearch.analysis import Claim, FrontMember, SearchAnalysis
from ncsearch.stats import LEVEL, RESAMPLES, SEED, Estimate

__all__ = ["ALPHA", "Report", "build_report"]

#: Family-wise error rate of the verdict (Holm over every configuration x fairness metric).
ALPHA = 0.05


@dataclass
class Report:
    """Everything the report shows; see the module docstring."""

    record: Any
    analysis: SearchAnalysis
    objectives: list[tuple[str, str]]
    table: pd.DataFrame
    front: pd.DataFrame
    members: list[FrontMember]
    hypervolume: Estimate
    reference: dict[str, float] | None
    claims: list[Claim]
    tests: pd.DataFrame
    fairness: list[str]
    headline: list[str]
    verdict: list[str] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def configurations(self) -> int:
        return sum(1 for s in self.analysis.configurations if s.runs)

    def control_point(self, mx: str, my: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """The control's (value, low, high) on two objectives, when the search has exactly one control
        and the objectives are not themselves differences to it."""
        controls = [s for s in self.analysis.controls if s.runs]
        if len(controls) != 1 or mx.startswith("delta/") or my.startswith("delta/"):
            return None
        out = []
        for metric in (mx, my):
            e = controls[0].estimates.get(metric)
            if e is None:
                return None
            out.append((e.value, e.low, e.high))
        return out[0], out[1]

    def text(self) -> str:
        """The console summary: configurations with intervals, the front, the verdict."""
        from ncsearch.report._tables import configuration_rows, front_rows, render

        metrics = [m for m, _ in self.objectives]
        parts = ["Configurations (mean over seeds [95% interval over seeds and examples]; * on the Pareto front):",
                 render(configuration_rows(self, metrics)), "",
                 "Pareto front of configuration means:", render(front_rows(self)),
                 f"hypervolume {self.hypervolume.format()} (reference: "
                 + ", ".join(f"{k}={v:.6g}" for k, v in (self.reference or {}).items()) + ")", "",
                 "Verdict:", *[f"- {line}" for line in self.verdict]]
        return "\n".join(parts)

    def parent_metrics(self) -> dict[str, float]:
        hv = self.hypervolume
        out = {"pareto/hypervolume": hv.value, "pareto/hypervolume.ci_low": hv.low, "pareto/hypervolume.ci_high": hv.high,
               "pareto/front_size": float(len(self.front)), "search/configurations": float(self.configurations)}
        if len(self.tests):
            out["verdict/significant"] = float((self.tests["p_holm"] < ALPHA).sum())
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def parent_tags(self) -> dict[str, str]:
        tags = {"ncsearch.verdict": " ".join(self.verdict)}
        if self.reference:
            import json

            tags["ncsearch.hypervolume_reference"] = json.dumps(self.reference)
        return tags


def build_report(record: Any, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Report:
    """Analyse `record` (a `SearchRecord`) and decide what it shows."""
    spec = record.spec
    analysis = SearchAnalysis.for_spec(record.runs, record.groups, spec, resamples=resamples, seed=seed, level=level)
    info, members, hv = analysis.pareto()
    table = info.trials.copy()
    marks = {m.group: m for m in members}
    table["vs_control"] = [marks[g].vs_control if g in marks else "" for g in table.get("group", [])]
    table["distinct_from"] = ["; ".join(marks[g].distinct_from) if g in marks else "" for g in table.get("group", [])]
    table["tied_with"] = ["; ".join(marks[g].tied_with) if g in marks else "" for g in table.get("group", [])]
    front_groups = [m.group for m in members]
    table["beaten_beyond_noise_by"] = ["" if g in marks else "; ".join(analysis.beaten_by(g, front_groups))
                                       for g in table.get("group", [])]
    front = table[table["pareto"]] if len(table) else table
    fairness = analysis.bias_metrics()
    objective_metrics = [o.base_metric for o in spec.objectives]
    headline = list(dict.fromkeys([*objective_metrics, *fairness, "collapse/unc3", "train/unc3"]))
    headline = [m for m in headline if m in analysis.bank.point]
    tests = analysis.control_tests(fairness)
    report = Report(record, analysis, record.objectives, table, front, members, hv, info.reference,
                    analysis.claims(fairness), tests, fairness, headline)
    report.verdict = verdict(report)
    return report


def _noise_sentence(report: Report) -> str | None:
    """How much the training seed and the evaluation sample move the first fairness objective."""
    analysis = report.analysis
    target = next((o.base_metric for o in report.record.spec.objectives if o.base_metric in report.fairness),
                  report.fairness[0] if report.fairness else None)
    if target is None:
        return None
    sds = [s.seed_sd[target] for s in analysis.summaries.values() if target in s.seed_sd]
    halves = []
    for run in analysis.bank.runs:
        low, high = run.metrics.get(f"{target}.ci_low"), run.metrics.get(f"{target}.ci_high")
        if low is not None and high is not None:
            halves.append((high - low) / 2)
    parts = []
    if sds:
        parts.append(f"the training seed alone moves {target} by {np.mean(sds):.3g} (mean between-seed SD)")
    if halves:
        parts.append(f"one run's value carries ±{np.mean(halves):.3g} of evaluation noise (95% half-width)")
    return ("Noise: " + "; ".join(parts) + ".") if parts else None


def verdict(report: Report) -> list[str]:
    """The report's conclusion in words, from its own numbers."""
    analysis = report.analysis
    spec = report.record.spec
    lines: list[str] = []
    configs = [s for s in analysis.configurations if s.runs]
    if not configs:
        return ["No configuration finished, so there is nothing to conclude."]
    k = spec.search.replicates
    if k == 1:
        lines.append("One seed per configuration: intervals hold evaluation noise only; training-seed noise is not "
                     "in them (set search.replicates to measure it).")
    elif k == 2:
        lines.append("Two seeds per configuration: the seed part of each interval rests on two values, so treat "
                     "the intervals as approximate.")
    tests = report.tests
    if len(tests):
        family = f"{tests['group'].nunique()} configurations x {tests['metric'].nunique()} fairness metrics"
        significant = tests[tests["p_holm"] < ALPHA]
        if significant.empty:
            best = tests.sort_values("p_value", kind="stable").iloc[0]
            lines.append(
                f"No configuration moved any fairness metric beyond noise at this budget: none of the {len(tests)} "
                f"paired differences against the seed-matched control ({family}) survives Holm's correction at "
                f"{ALPHA:g}. The closest, {best['label']} on {best['metric']}: "
                f"Δ = {Estimate(best['delta'], best['ci_low'], best['ci_high']).format()} "
                f"(p = {best['p_value']:.3g}, Holm-adjusted {best['p_holm']:.3g})."
            )
        else:
            for _, row in significant.iterrows():
                lines.append(
                    f"{row['label']} moved {row['metric']} beyond noise: Δ = "
                    f"{Estimate(row['delta'], row['ci_low'], row['ci_high']).format()} against its control "
                    f"(Holm-adjusted p = {row['p_holm']:.3g}, over {family})."
                )
        performance = [o.base_metric for o in spec.objectives if o.base_metric not in report.fairness]
        for metric in performance:
            moved = [(s.info.label, s.deltas[metric]) for s in configs if metric in s.deltas and s.deltas[metric].excludes(0.0)]
            if moved:
                shown = "; ".join(f"{label} {e.format()}" for label, e in moved)
                lines.append(f"{metric} differs from the control (paired 95% interval excludes 0) for: {shown}.")
            else:
                lines.append(f"{metric}: no configuration differs from the control beyond noise.")
    elif spec.search.control:
        lines.append("Every control run failed, so no configuration can be compared with the unregularised model; "
                     "only configurations are compared with each other.")
    else:
        lines.append("This search trained no control (search.control: false), so no configuration is compared "
                     "with the unregularised model; only configurations are compared with each other.")
    within = [row["label"] for _, row in report.table.iterrows() if not row["pareto"] and not row["beaten_beyond_noise_by"]
              and row["seeds"] > 0]
    if within:
        lines.append(f"Off the front only within noise (no front member beats them beyond noise on any objective): "
                     f"{', '.join(within)}.")
    members = report.members
    if members:
        ties = [m for m in members if not m.distinct_from]
        if len(members) > 1 and len(ties) == len(members):
            lines.append(f"The {len(members)} front members cannot be told apart on any objective: the front is a tie, "
                         "not a trade-off.")
        elif len(members) > 1:
            lines.append(f"{len(members) - len(ties)} of {len(members)} front members differ from another member on "
                         "some objective beyond noise.")
        versus = [m for m in members if m.vs_control == "differs"]
        if any(m.vs_control != "no control" for m in members):
            lines.append(f"{len(versus)} of {len(members)} front members differ from the control on some objective.")
    noise = _noise_sentence(report)
    if noise:
        lines.append(noise)
    for measure in ("train/unc3", "collapse/unc3"):
        moved = [(s.info.label, s.deltas[measure]) for s in configs if measure in s.deltas and s.deltas[measure].excludes(0.0)]
        if moved:
            where = "on the training batches" if measure.startswith("train/") else "on held-out text"
            lines.append(f"The regularizer moves its own target, {measure} ({where}), beyond noise for "
                         + "; ".join(f"{label} (Δ {e.format()})" for label, e in moved) + ".")
    claims = [c for c in report.claims if c.runs >= 4]
    if claims:
        from ncsearch.stats import holm

        adjusted = holm([c.rho.p_value for c in claims])
        strong = [(c, p) for c, p in zip(claims, adjusted) if p < ALPHA]
        if strong:
            shown = "; ".join(f"{c.x} vs {c.y}: rho {c.rho.format(3)} (Holm-adjusted p = {p:.3g})" for c, p in strong)
            lines.append(f"UNC3 tracks a bias measure across runs ({claims[0].basis}): {shown}.")
        else:
            lines.append(f"Across {claims[0].runs} runs ({claims[0].basis}), no UNC3 measure is rank-correlated with any "
                         "bias measure beyond noise (permutation tests, Holm-adjusted): this search gives no evidence "
                         "for or against the paper's claim.")
    elif report.claims:
        lines.append("Too few runs (fewer than 4) to test the paper's claim that UNC3 goes with fairness.")
    return lines
