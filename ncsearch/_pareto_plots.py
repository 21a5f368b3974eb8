"""Drawing a `ParetoInfo`: a static PNG (matplotlib, Agg) and an interactive HTML page (plotly).

Kept apart from `ncsearch.pareto` so the front math can be used (and tested) without a plotting stack,
and so matplotlib/plotly are imported only when a plot is written. Two objectives give one scatter
plot with the front drawn as a staircase; three or more give a scatter matrix of every pair.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ncsearch.pareto import ParetoInfo

__all__ = ["save_html", "save_png"]

_FRONT = "#d62728"
_OTHER = "#9e9e9e"


def _label(metric: str, mode: str) -> str:
    return f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)"


def _id_column(info: ParetoInfo) -> str | None:
    return next((c for c in ("trial", "trial_id") if c in info.trials.columns), None)


def save_png(info: ParetoInfo, path: Path) -> Path:
    """Static plot for reports and the MLflow artifact view."""
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objs = info.objectives
    k = len(objs)
    trials = info.trials
    id_col = _id_column(info)
    hv = "n/a" if not math.isfinite(info.hypervolume) else f"{info.hypervolume:.4g}"
    if k == 2:
        fig = Figure(figsize=(6.4, 4.8), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
        (mx, dx), (my, dy) = objs
        rest = trials[~trials["pareto"]]
        ax.scatter(rest[mx], rest[my], c=_OTHER, label="dominated", s=28)
        front = info.front.sort_values(mx, kind="stable")
        ax.scatter(front[mx], front[my], c=_FRONT, label="Pareto front", s=40, zorder=3)
        # The staircase bounds the region the front dominates: between neighbours (sorted by x) its
        # corner takes the worse x and the worse y of the two.
        ax.step(front[mx], front[my], where="post" if dx == "min" else "pre", c=_FRONT, alpha=0.5)
        if id_col:
            for _, row in front.iterrows():
                ax.annotate(str(row[id_col])[-5:], (row[mx], row[my]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(_label(mx, dx))
        ax.set_ylabel(_label(my, dy))
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"{len(front)} of {len(trials)} trials on the front; hypervolume {hv}", fontsize=9)
    else:
        fig = Figure(figsize=(2.6 * k, 2.6 * k), dpi=100)
        axes = fig.subplots(k, k, squeeze=False)
        for i, (mi, di) in enumerate(objs):
            for j, (mj, dj) in enumerate(objs):
                ax = axes[i][j]
                if i == j:
                    ax.hist(trials[mi].dropna(), bins=10, color=_OTHER)
                else:
                    rest = trials[~trials["pareto"]]
                    ax.scatter(rest[mj], rest[mi], c=_OTHER, s=12)
                    ax.scatter(info.front[mj], info.front[mi], c=_FRONT, s=16)
                if i == k - 1:
                    ax.set_xlabel(_label(mj, dj), fontsize=7)
                if j == 0:
                    ax.set_ylabel(_label(mi, di), fontsize=7)
                ax.tick_params(labelsize=6)
        fig.suptitle(f"{len(info.front)} of {len(trials)} trials on the front; hypervolume {hv}", fontsize=9)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)
    return path


def save_html(info: ParetoInfo, path: Path) -> Path:
    """Interactive page (self-contained, plotly.js inlined so it works offline): hover shows the
    trial and its parameters."""
    import plotly.graph_objects as go

    trials = info.trials
    id_col = _id_column(info)
    objs = info.objectives
    params = [c for c in trials.columns if c.startswith("param.") or c.startswith("config/")]

    def hover(frame) -> list[str]:
        texts = []
        for _, row in frame.iterrows():
            parts = [f"trial {row[id_col]}"] if id_col else []
            parts += [f"{m} = {row[m]:.4g}" for m, _ in objs]
            parts += [f"{p} = {row[p]}" for p in params]
            texts.append("<br>".join(parts))
        return texts

    groups = [("Pareto front", trials[trials["pareto"]], _FRONT), ("dominated", trials[~trials["pareto"]], _OTHER)]
    fig = go.Figure()
    if len(objs) == 2:
        (mx, dx), (my, dy) = objs
        for name, frame, color in groups:
            fig.add_trace(go.Scatter(x=frame[mx], y=frame[my], mode="markers", name=name,
                                     marker={"color": color, "size": 10}, text=hover(frame),
                                     hoverinfo="text"))
        fig.update_layout(xaxis_title=_label(mx, dx), yaxis_title=_label(my, dy))
    else:
        for name, frame, color in groups:
            fig.add_trace(go.Splom(dimensions=[{"label": m, "values": frame[m]} for m, _ in objs], name=name,
                                   marker={"color": color, "size": 7}, text=hover(frame), hoverinfo="text",
                                   diagonal_visible=False))
    hv = "n/a" if not math.isfinite(info.hypervolume) else f"{info.hypervolume:.4g}"
    fig.update_layout(title=f"Pareto front: {len(info.front)} of {len(trials)} trials; hypervolume {hv}",
                      template="plotly_white")
    tmp = path.with_name(path.name + ".tmp.html")
    fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    tmp.replace(path)
    return path
