"""The report's tables, as plain text (the console) and as Markdown, from one set of rows.

Every number is shown as "value [low, high]" (`Estimate.format`); a value without an interval says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncsearch.report._build import Report

__all__ = ["claims_rows", "configuration_rows", "control_rows", "front_rows", "render", "runs_rows"]

Rows = tuple[list[str], list[list[str]]]


def render(table: Rows, *, markdown: bool = False) -> str:
    """Aligned plain text, or a Markdown table."""
    heads, rows = table
    if not rows:
        return "(none)"
    if markdown:
        escape = lambda cell: cell.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(map(escape, heads)) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(map(escape, r)) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def configuration_rows(report: Report, metrics: Sequence[str]) -> Rows:
    """Every configuration and control: seeds, and each metric as mean over seeds [interval]."""
    heads = ["configuration", "seeds", *metrics, "off the front"]
    rows = []
    analysis = report.analysis
    beaten = dict(zip(report.table.get("group", []), report.table.get("beaten_beyond_noise_by", [])))
    front = set(report.front["group"]) if len(report.front) else set()
    for s in analysis.controls + analysis.configurations:
        seeds = f"{s.seeds}" + (f" (+{len(s.failed)} failed)" if s.failed else "")
        cells = []
        for m in metrics:
            e = analysis.objective_estimate(s, m)
            cells.append(e.format() if e is not None else "-")
        group = s.info.group
        if s.info.role == "control" or not s.runs:
            status = ""
        elif group in front:
            status = "on the front"
        else:
            status = f"beaten beyond noise by {beaten[group]}" if beaten.get(group) else "within noise"
        rows.append([s.info.label + (" *" if group in front else ""), seeds, *cells, status])
    return heads, rows


def front_rows(report: Report) -> Rows:
    """The front: objectives with intervals, and what noise allows to say of each member."""
    metrics = [m for m, _ in report.objectives]
    heads = ["configuration", *metrics, "vs control", "distinguishable from", "tied with"]
    rows = []
    members = {m.group: m for m in report.members}
    for _, row in report.front.iterrows():
        member = members[row["group"]]
        cells = [str(row["label"])]
        for m in metrics:
            e = report.analysis.objective_estimate(report.analysis.summaries[row["group"]], m)
            cells.append(e.format() if e is not None else "-")
        cells += [member.vs_control, ", ".join(member.distinct_from) or "none", ", ".join(member.tied_with) or "none"]
        rows.append(cells)
    return heads, rows


def control_rows(report: Report, metrics: Sequence[str]) -> Rows:
    """Each configuration against its seed-matched control: control, configuration, paired Δ, p, and
    Holm's adjustment across the configuration's metrics."""
    heads = ["configuration", "metric", "control", "configuration value", "Δ (paired)", "p", "p (Holm, across metrics)"]
    rows = []
    analysis = report.analysis
    for s in analysis.configurations:
        control = analysis.summaries.get(s.info.control or "")
        for m in metrics:
            e = s.deltas.get(m)
            if e is None or control is None:
                continue
            rows.append([s.info.label, m, control.estimates[m].format(), s.estimates[m].format(), e.format(),
                         _p(e.p_value), _p(s.delta_holm.get(m))])
    return heads, rows


def claims_rows(report: Report) -> Rows:
    heads = ["UNC3 measure", "bias measure", "points", "basis", "Spearman rho [95% interval]", "p (permutation)"]
    rows = [[c.x, c.y, str(c.runs), c.basis, c.rho.format(3), _p(c.rho.p_value)] for c in report.claims]
    return heads, rows


def runs_rows(report: Report, metrics: Sequence[str]) -> Rows:
    """Every run (seed) with its own values [interval over examples] and, vs its control, the paired Δ."""
    heads = ["run", "group", "seed", "status", *metrics]
    rows = []
    analysis = report.analysis
    for run in sorted(report.record.runs, key=lambda r: (r.group, r.replicate)):
        cells = [run.trial_id, analysis.groups[run.group].label if run.group in analysis.groups else run.group,
                 str(run.replicate), run.status if not run.error else f"{run.status}: {run.error[:60]}"]
        summary = analysis.summaries.get(run.group)
        for m in metrics:
            value = run.metrics.get(m)
            low, high = run.metrics.get(f"{m}.ci_low"), run.metrics.get(f"{m}.ci_high")
            text = "-" if value is None else (f"{value:.4g} [{low:.4g}, {high:.4g}]" if low is not None and high is not None else f"{value:.4g}")
            seed_delta = summary.seed_deltas.get(m, {}).get(run.replicate) if summary else None
            if seed_delta is not None:
                text += f"; Δ {seed_delta.format()}"
            cells.append(text)
        rows.append(cells)
    return heads, rows


def cells(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]
