"""Drawing the Pareto front of configuration means: a static PNG (matplotlib, Agg) and an interactive
HTML page (plotly), both with interval error bars on every axis.

The error bars are the point of these plots: a front whose members' intervals overlap on every
objective is a tie, not a trade-off, and the plots must not suggest otherwise. Points are labelled by
their searched values (configurations on the same point share a label); the control (alpha = 0),
when there is one, is drawn with its own intervals; front members that no objective tells apart from
the control are drawn hollow. Two objectives give one scatter plot, and with a control a second one
of the paired differences to it, where effects too small for the first plot show; three or more
objectives a matrix of every pair.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ncsearch.report import Report

__all__ = ["save_html", "save_png"]

_FRONT = "#d62728"
_OTHER = "#9e9e9e"
_CONTROL = "#222222"


def _label(metric: str, mode: str) -> str:
    return f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)"


def _errors(frame: Any, metric: str) -> np.ndarray:
    values = frame[metric].to_numpy(dtype=float)
    low = np.nan_to_num(values - frame[f"{metric}.ci_low"].to_numpy(dtype=float), nan=0.0)
    high = np.nan_to_num(frame[f"{metric}.ci_high"].to_numpy(dtype=float) - values, nan=0.0)
    return np.vstack([np.maximum(low, 0), np.maximum(high, 0)])


def _title(report: Report) -> str:
    hv = report.hypervolume
    hv_text = "n/a" if not math.isfinite(hv.value) else hv.format(3)
    return (f"{len(report.front)} of {len(report.table)} configurations on the front (means over seeds, "
            f"95% intervals); hypervolume {hv_text}")


def _draw_pair(ax: Any, report: Report, mx: str, my: str, *, annotate: bool) -> None:
    table = report.table
    rest = table[~table["pareto"]]
    ax.errorbar(rest[mx], rest[my], xerr=_errors(rest, mx), yerr=_errors(rest, my), fmt="o", color=_OTHER,
                ms=5, lw=1, capsize=2, label="dominated")
    front = report.front
    tied = front["vs_control"] == "tie"
    for mask, face, name in ((~tied, _FRONT, "front"), (tied, "white", "front, tied with control")):
        part = front[mask]
        if len(part):
            ax.errorbar(part[mx], part[my], xerr=_errors(part, mx), yerr=_errors(part, my), fmt="o", color=_FRONT,
                        mfc=face, ms=7, lw=1.2, capsize=3, label=name, zorder=3)
    control = report.control_point(mx, my)
    if control is not None:
        (x, xl, xh), (y, yl, yh) = control
        ax.errorbar([x], [y], xerr=[[x - xl], [xh - x]], yerr=[[y - yl], [yh - y]], fmt="D", color=_CONTROL, ms=6,
                    capsize=3, label="control (alpha = 0)", zorder=4)
    if annotate:
        _annotate(ax, [(row[mx], row[my], str(row["label"])) for _, row in table.iterrows()])


def _annotate(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """One label per position: configurations that sit on the same point (a tie) share one label."""
    spots: dict[tuple[str, str], list[str]] = {}
    where: dict[tuple[str, str], tuple[float, float]] = {}
    for x, y, label in points:
        key = (f"{x:.4g}", f"{y:.4g}")
        spots.setdefault(key, []).append(label)
        where[key] = (x, y)
    for key, labels in spots.items():
        ax.annotate(", ".join(labels), where[key], fontsize=7, xytext=(4, 4), textcoords="offset points")


def _draw_deltas(ax: Any, report: Report, mx: str, my: str) -> None:
    """Each configuration's paired differences to its control on two objectives, with intervals."""
    analysis = report.analysis
    front = set(report.front["group"]) if len(report.front) else set()
    points = []
    for s in analysis.configurations:
        ex, ey = s.deltas.get(mx.removeprefix("delta/")), s.deltas.get(my.removeprefix("delta/"))
        if ex is None or ey is None:
            continue
        colour = _FRONT if s.info.group in front else _OTHER
        ax.errorbar([ex.value], [ey.value], xerr=[[ex.value - ex.low], [ex.high - ex.value]],
                    yerr=[[ey.value - ey.low], [ey.high - ey.value]], fmt="o", color=colour, ms=6, capsize=3, lw=1.2)
        points.append((ex.value, ey.value, s.info.label))
    if not points:
        return
    ax.axhline(0.0, color=_CONTROL, lw=0.8, ls="--")
    ax.axvline(0.0, color=_CONTROL, lw=0.8, ls="--")
    _annotate(ax, points)


def save_png(report: Report, path: Path) -> Path:
    """The static plot (reports, the MLflow artifact view)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objs = report.objectives
    k = len(objs)
    if k == 2:
        (mx, dx), (my, dy) = objs
        paired = any(s.deltas for s in report.analysis.configurations)
        fig = Figure(figsize=(12.0 if paired else 7.2, 5.4), dpi=110)
        ax = fig.add_subplot(1, 2 if paired else 1, 1)
        _draw_pair(ax, report, mx, my, annotate=True)
        ax.set_xlabel(_label(mx, dx), fontsize=8)
        ax.set_ylabel(_label(my, dy), fontsize=8)
        ax.legend(loc="best", fontsize=7)
        ax.set_title("configuration means", fontsize=8)
        if paired:
            right = fig.add_subplot(1, 2, 2)
            _draw_deltas(right, report, mx, my)
            right.set_xlabel(f"Δ {mx.removeprefix('delta/')} vs control ({'higher' if dx == 'max' else 'lower'} is better)", fontsize=8)
            right.set_ylabel(f"Δ {my.removeprefix('delta/')} vs control ({'higher' if dy == 'max' else 'lower'} is better)", fontsize=8)
            right.set_title("paired differences to the seed-matched control (0: no effect)", fontsize=8)
        fig.suptitle(_title(report), fontsize=8)
    else:
        fig = Figure(figsize=(3.0 * (k - 1), 3.0 * (k - 1)), dpi=100)
        axes = fig.subplots(k - 1, k - 1, squeeze=False)
        for i in range(1, k):
            for j in range(k - 1):
                ax = axes[i - 1][j]
                if j >= i:
                    ax.axis("off")
                    continue
                (my, dy), (mx, dx) = objs[i], objs[j]
                _draw_pair(ax, report, mx, my, annotate=False)
                if i == k - 1:
                    ax.set_xlabel(_label(mx, dx), fontsize=7)
                if j == 0:
                    ax.set_ylabel(_label(my, dy), fontsize=7)
                ax.tick_params(labelsize=6)
        axes[0][0].legend(loc="best", fontsize=6)
        fig.suptitle(_title(report), fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)
    return path


def save_html(report: Report, path: Path) -> Path:
    """Interactive page (self-contained, plotly.js inlined so it works offline): hover shows the
    configuration, its values with intervals, and what it can be told apart from."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table = report.table
    objs = report.objectives
    pairs = [(objs[0], objs[1])] if len(objs) == 2 else [(objs[j], objs[i]) for i in range(len(objs)) for j in range(i)]
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)

    def hover(frame: Any) -> list[str]:
        texts = []
        for _, row in frame.iterrows():
            parts = [f"<b>{row['label']}</b> ({int(row['seeds'])} seed(s))"]
            parts += [f"{m} = {row[m]:.4g} [{row[m + '.ci_low']:.4g}, {row[m + '.ci_high']:.4g}]" for m, _ in objs]
            if row.get("pareto"):
                parts.append(f"vs control: {row.get('vs_control', '')}; distinct from: {row.get('distinct_from', '') or 'none'}")
            texts.append("<br>".join(parts))
        return texts

    for col, ((mx, dx), (my, dy)) in enumerate(pairs, start=1):
        for name, frame, color in (("Pareto front", table[table["pareto"]], _FRONT), ("dominated", table[~table["pareto"]], _OTHER)):
            ex, ey = _errors(frame, mx), _errors(frame, my)
            fig.add_trace(go.Scatter(
                x=frame[mx], y=frame[my], mode="markers+text", name=name, text=frame["label"], textposition="top center",
                marker={"color": color, "size": 10}, hovertext=hover(frame), hoverinfo="text", showlegend=col == 1,
                error_x={"type": "data", "symmetric": False, "array": ex[1], "arrayminus": ex[0]},
                error_y={"type": "data", "symmetric": False, "array": ey[1], "arrayminus": ey[0]},
            ), row=1, col=col)
        control = report.control_point(mx, my)
        if control is not None:
            (x, xl, xh), (y, yl, yh) = control
            fig.add_trace(go.Scatter(
                x=[x], y=[y], mode="markers", name="control (alpha = 0)", marker={"color": _CONTROL, "size": 10, "symbol": "diamond"},
                error_x={"type": "data", "symmetric": False, "array": [xh - x], "arrayminus": [x - xl]},
                error_y={"type": "data", "symmetric": False, "array": [yh - y], "arrayminus": [y - yl]},
                showlegend=col == 1, hovertext=[f"control<br>{mx} = {x:.4g} [{xl:.4g}, {xh:.4g}]<br>{my} = {y:.4g} [{yl:.4g}, {yh:.4g}]"],
                hoverinfo="text",
            ), row=1, col=col)
        fig.update_xaxes(title_text=_label(mx, dx), row=1, col=col)
        fig.update_yaxes(title_text=_label(my, dy), row=1, col=col)
    fig.update_layout(title=_title(report), template="plotly_white")
    tmp = path.with_name(path.name + ".tmp.html")
    fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    tmp.replace(path)
    return path
