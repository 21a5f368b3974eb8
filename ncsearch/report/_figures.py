"""The report's figures (matplotlib, Agg, no global state), each returned as PNG bytes.

- `response_curve`: for one searched parameter, each headline metric of every configuration (mean over
  seeds with its 95% band, the seeds as light dots) against the parameter, with the control's value
  and interval as a horizontal line and band, and below it the paired difference to the control. A
  second searched categorical parameter (vocabulary source, baseline) colours the points.
- `claim_scatter`: the points the claim is tested on, with the rank correlation in the title.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ncsearch.report._build import Report

__all__ = ["claim_scatter", "response_curve"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.tight_layout()
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _panel(ax: Any, groups: dict[Any, list[Any]], parameter: str, numeric: bool, categories: list[str],
           value_of: Any, seeds_of: Any) -> None:
    """One metric against the parameter: a band (numeric) or error bars (categories) per colour group."""
    for n, (key, members) in enumerate(groups.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        members = sorted(members, key=lambda s: s.info.values[parameter] if numeric else categories.index(str(s.info.values[parameter])))
        xs, ys, lo, hi = [], [], [], []
        for s in members:
            e = value_of(s)
            if e is None:
                continue
            x = s.info.values[parameter] if numeric else categories.index(str(s.info.values[parameter]))
            xs.append(x)
            ys.append(e.value)
            lo.append(e.low if math.isfinite(e.low) else e.value)
            hi.append(e.high if math.isfinite(e.high) else e.value)
            seeds = seeds_of(s)
            ax.scatter([x] * len(seeds), seeds, s=10, color=colour, alpha=0.4, zorder=2)
        label = str(key) if key is not None else None
        if numeric:
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, lw=0)
            ax.plot(xs, ys, "o-", color=colour, ms=5, lw=1.2, label=label, zorder=3)
        else:
            ax.errorbar(xs, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]], fmt="o",
                        color=colour, capsize=3, ms=5, lw=1.2, label=label, zorder=3)


def response_curve(report: Report, parameter: str, metrics: list[str]) -> bytes:
    """See the module docstring. With controls, each metric gets a second panel: the configuration's
    paired difference to its control (per seed, then averaged), whose interval is much tighter than
    the absolute one because seed and example noise cancel."""
    from matplotlib.figure import Figure

    from ncsearch.analysis import short_names

    analysis = report.analysis
    spec = report.record.spec
    configs = [s for s in analysis.configurations if s.runs and parameter in s.info.values]
    searched = list(spec.distributions())
    names = short_names(searched)
    colour_by = next((k for k in searched if k != parameter and not _numeric([s.info.values.get(k) for s in configs])), None)
    groups: dict[Any, list[Any]] = {}
    for s in configs:
        key = f"{names[colour_by]}={s.info.values.get(colour_by)}" if colour_by else None
        groups.setdefault(key, []).append(s)
    xs_all = [s.info.values[parameter] for s in configs]
    numeric = _numeric(xs_all)
    categories = list(dict.fromkeys(map(str, xs_all)))
    dist = spec.distributions().get(parameter)
    log_x = numeric and bool(xs_all) and min(xs_all) > 0 and (
        (dist is not None and dist.kind == "loguniform") or max(xs_all) / min(xs_all) >= 10)
    controls = [c for c in analysis.controls if c.runs]
    paired = any(s.deltas for s in configs)
    cols = min(3, len(metrics))
    blocks = math.ceil(len(metrics) / cols)
    rows = blocks * (2 if paired else 1)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, metric in enumerate(metrics):
        block, col = divmod(index, cols)
        ax = axes[block * (2 if paired else 1)][col]
        _panel(ax, groups, parameter, numeric, categories, lambda s, m=metric: s.estimates.get(m),
               lambda s, m=metric: list(s.per_seed.get(m, {}).values()))
        for n, control in enumerate(controls):
            e = control.estimates.get(metric)
            if e is not None:
                ax.axhline(e.value, color="#222222", lw=1, ls="--", label="control (alpha = 0)" if n == 0 else None)
                if math.isfinite(e.low) and math.isfinite(e.high):
                    ax.axhspan(e.low, e.high, color="#222222", alpha=0.07)
        ax.set_title(metric, fontsize=8)
        axes_used = [ax]
        if paired:
            dax = axes[block * 2 + 1][col]
            _panel(dax, groups, parameter, numeric, categories, lambda s, m=metric: s.deltas.get(m),
                   lambda s, m=metric: [e.value for e in s.seed_deltas.get(m, {}).values()])
            dax.axhline(0.0, color="#222222", lw=1, ls="--")
            dax.set_title(f"Δ {metric} vs control (paired)", fontsize=8)
            axes_used.append(dax)
        for a in axes_used:
            if log_x:
                a.set_xscale("log")
            if not numeric:
                a.set_xticks(range(len(categories)), categories, rotation=20, fontsize=7)
            a.set_xlabel(names[parameter], fontsize=8)
            a.tick_params(labelsize=7)
        if index == 0 and (colour_by or controls):
            ax.legend(fontsize=6, loc="best")
    for index in range(len(metrics), blocks * cols):
        block, col = divmod(index, cols)
        for r in range(2 if paired else 1):
            axes[block * (2 if paired else 1) + r][col].axis("off")
    fig.suptitle(f"{names[parameter]}: mean over seeds with 95% band (seeds and examples); dots: single seeds", fontsize=8)
    return _png(fig)


def claim_scatter(report: Report, x: str, ys: list[str]) -> bytes:
    """The points each claim is tested on (`SearchAnalysis.claim_points`): `x` (a UNC3 measure)
    against each bias measure in `ys`."""
    from matplotlib.figure import Figure

    analysis = report.analysis
    cols = min(3, len(ys))
    rows = math.ceil(len(ys) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.2 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    claims = {(c.x, c.y): c for c in report.claims}
    for index, y in enumerate(ys):
        ax = axes[index // cols][index % cols]
        xs, values, basis = analysis.claim_points(x, y)
        ax.scatter(xs, values, s=18, color="#1f77b4")
        claim = claims.get((x, y))
        ax.set_title(f"{y}\nSpearman rho {claim.rho.format(2)}" if claim else y, fontsize=8)
        prefix = "Δ " if basis.startswith("differences") else ""
        ax.set_xlabel(prefix + x, fontsize=8)
        ax.set_ylabel(prefix + y, fontsize=7)
        ax.tick_params(labelsize=7)
    for index in range(len(ys), rows * cols):
        axes[index // cols][index % cols].axis("off")
    return _png(fig)
