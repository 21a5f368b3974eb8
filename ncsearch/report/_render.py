"""Writing a `Report`: the Pareto artifacts, a self-contained HTML page and a Markdown summary.

The HTML embeds its figures (base64 PNG) and the interactive front is a separate self-contained page
(`pareto.html`, plotly inlined), so both open offline, from the run directory or from the MLflow
artifact view. The Markdown refers to the same figures as files beside it (`figures/*.png`).
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ncsearch._atomic import atomic_write
from ncsearch.report._build import Report, build_report
from ncsearch.report._tables import claims_rows, configuration_rows, control_rows, front_rows, render, runs_rows

__all__ = ["SECTIONS", "write_report"]

#: The report's sections, in order (tests check the rendered files for these headings).
SECTIONS = ("Verdict", "Configurations", "Pareto front", "Response curves", "Paired differences against the control",
            "The paper's claim: collapse and fairness", "Runs", "Run facts")


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, frame.to_csv(index=False))


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for package in ("ncsearch", "torch", "transformers", "ray", "optuna", "mlflow", "numpy", "pandas"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _runs_frame(report: Report) -> pd.DataFrame:
    rows = []
    for run in report.record.runs:
        row = {"trial": run.trial_id, "group": run.group, "role": run.role, "replicate": run.replicate,
               "status": run.status, "mlflow_run_id": run.run_id, "error": run.error}
        row.update({k: v for k, v in run.metrics.items() if not k.startswith("time/") or k in ("time/train_s", "time/eval_s")})
        rows.append(row)
    return pd.DataFrame(rows)


def _facts(report: Report, facts: dict[str, float]) -> list[tuple[str, str]]:
    record, spec, analysis = report.record, report.record.spec, report.analysis
    tags = record.parent.data.tags
    k = spec.search.replicates
    seeds = ", ".join(str(spec.train.seed + r) for r in range(k))
    timings = pd.DataFrame([r.metrics for r in analysis.bank.runs])
    out = [
        ("experiment", f"{record.experiment} (search run {record.parent.info.run_id})"),
        ("tracking URI", record.tracking_uri),
        ("model", spec.model),
        ("search", f"{spec.search.algorithm} (Optuna, seed {spec.search.seed}), "
                   f"{sum(1 for g in record.groups.values() if g.role == 'trial')} configurations"),
        ("training seeds", f"{seeds} (train.seed + replicate); control: {'yes, alpha = 0 at every seed' if spec.search.control else 'no'}"),
        ("runs", f"{len(analysis.bank.runs)} finished of {len(record.runs)}"),
        ("git sha", tags.get("ncsearch.git_sha", "unknown")),
        ("ncsearch version (search)", tags.get("ncsearch.version", "unknown")),
        ("versions (report)", ", ".join(f"{k} {v}" for k, v in _versions().items())),
        ("bootstrap", f"{analysis.bank.resamples} resamples, percentile {report.analysis.level:.0%} intervals, "
                      f"seed {analysis.bank.seed}; seeds resampled with examples (two-level)"),
        ("evaluation units", "; ".join(f"{name}: {n} {unit}" for name, (n, unit) in analysis.bank.units.items())),
    ]
    for column, what in (("time/train_s", "training per run"), ("time/eval_s", "evaluation per run")):
        if column in timings:
            values = timings[column].dropna()
            if len(values):
                out.append((what, f"{values.mean():.0f} s mean ({values.min():.0f}-{values.max():.0f} s)"))
    wall = facts.get("search/wall_s", record.parent.data.metrics.get("search/wall_s"))
    if wall is not None:
        out.append(("search wall time", f"{wall:.0f} s"))
    out.append(("report written", time.strftime("%Y-%m-%d %H:%M:%S")))
    return out


class _Document:
    """Collects sections once and renders them as Markdown and as HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple[str, Any]] = []
        self.figures: dict[str, bytes] = {}

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, rows: Any) -> None:
        self.blocks.append(("table", rows))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.figures[name] = png
        self.blocks.append(("img", (name, caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                out += [render(value, markdown=True), ""]
            elif kind == "img":
                name, caption = value
                out += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
            elif kind == "pre":
                out += ["```", value, "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{esc(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{esc(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in value) + "</ul>")
            elif kind == "table":
                heads, rows = value
                if not rows:
                    body.append("<p>(none)</p>")
                    continue
                head = "".join(f"<th>{esc(h)}</th>" for h in heads)
                lines = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>")
            elif kind == "img":
                name, caption = value
                data = base64.b64encode(self.figures[name]).decode("ascii")
                body.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{esc(caption)}</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{esc(value)}</pre>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
                 "text-align:left}th{background:#f3f3f3}img{max-width:100%}figcaption{font-size:12px;color:#555}"
                 "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}")
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def _document(report: Report, pareto_png: bytes, facts: dict[str, float]) -> _Document:
    from ncsearch.report._figures import claim_scatter, response_curve

    record, spec, analysis = report.record, report.record.spec, report.analysis
    doc = _Document(f"ncsearch report: {record.experiment}")
    if spec.description:
        doc.paragraph(spec.description)
    doc.heading(SECTIONS[0])
    doc.bullets(report.verdict)
    doc.heading(SECTIONS[1])
    doc.paragraph("Each value is the mean over a configuration's training seeds with its 95% interval, from a "
                  "bootstrap that resamples both the seeds and each benchmark's examples. * marks the Pareto front.")
    doc.table(configuration_rows(report, report.headline))
    doc.heading(SECTIONS[2])
    doc.figure("pareto.png", pareto_png, "Configuration means with 95% intervals on both objectives; hollow: a front "
                                         "member no objective tells apart from the control. Interactive: pareto/pareto.html.")
    doc.table(front_rows(report))
    doc.paragraph(f"Hypervolume {report.hypervolume.format()}, its interval from the same two-level bootstrap at a "
                  "fixed reference point: " + ", ".join(f"{k}={v:.6g}" for k, v in (report.reference or {}).items()) + ".")
    doc.heading(SECTIONS[3])
    searched = list(spec.distributions())
    metrics = report.headline[:6]
    for parameter in searched:
        if metrics and any(parameter in s.info.values for s in analysis.configurations):  # no metric: every run failed
            doc.figure(f"response_{parameter}.png", response_curve(report, parameter, metrics),
                       f"{parameter}: each metric's mean over seeds with its 95% interval; dots are single seeds; the "
                       "dashed line and band are the control (alpha = 0) and its interval.")
    if not searched:
        doc.paragraph("Nothing is searched.")
    elif not metrics:
        doc.paragraph("No run finished, so there is no response to show.")
    doc.heading(SECTIONS[4] + (" (baseline x NC3)" if "baseline" in searched else ""))
    if analysis.controls:
        doc.paragraph("Each configuration against the control trained at the same seeds (same data order and masks); "
                      "Δ is the mean over seeds of the per-seed paired difference, with its two-level bootstrap "
                      "interval; p is its two-sided bootstrap p-value, Holm-adjusted across the configuration's objectives, "
                      "bias measures and UNC3 measures.")
        doc.table(control_rows(report, report.headline))
    else:
        doc.paragraph("No control was trained (search.control: false).")
    doc.heading(SECTIONS[5])
    doc.paragraph("The paper's central claim is that collapse on fairness-sensitive words goes with fairness. Tested on "
                  "every search: Spearman's rank correlation of train-time UNC3 on V (last training window) and held-out "
                  "UNC3 on V (GAP validation passages) with each bias measure, across runs; with a control, on each "
                  "run's difference to the control at the same seed, which removes what the seed moves in both. "
                  "p is a permutation test; the interval (Fisher z, Bonett-Wright variance) is given from 10 points. "
                  "Lower UNC3 means more collapse; the claim predicts it goes with higher ICAT and smaller bias.")
    doc.table(claims_rows(report))
    for x in ("collapse/unc3", "train/unc3"):
        ys = [c.y for c in report.claims if c.x == x][:6]
        if ys:
            doc.figure(f"claim_{x.replace('/', '_')}.png", claim_scatter(report, x, ys), f"{x} against bias measures, one point per run.")
    doc.heading(SECTIONS[6])
    doc.paragraph("Every run (one training seed) with its own value and 95% interval over examples; for a "
                  "configuration's seed, Δ is its paired difference to the control at the same seed, which "
                  "`ncsearch compare CONTROL_RUN RUN` reproduces from the two runs.")
    doc.table(runs_rows(report, [m for m, _ in report.objectives if not m.startswith("delta/")] or report.headline[:2]))
    doc.heading(SECTIONS[7])
    doc.table((["fact", "value"], [[k, v] for k, v in _facts(report, facts)]))
    import yaml

    doc.pre(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return doc


def write_report(record: Any, *, pareto_dir: str | Path, report_dir: str | Path,
                 facts: dict[str, float] | None = None, **analysis_options: Any) -> Report:
    """Analyse `record` and write pareto/ (pareto.csv: the front; configurations.csv; all_trials.csv:
    every run; pareto.png; pareto.html) and report/ (report.html, report.md, figures/)."""
    from ncsearch.report import _pareto_plots

    report = build_report(record, **analysis_options)
    pareto_dir, report_dir = Path(pareto_dir), Path(report_dir)
    pareto_dir.mkdir(parents=True, exist_ok=True)
    _atomic_csv(report.front, pareto_dir / "pareto.csv")
    _atomic_csv(report.table, pareto_dir / "configurations.csv")
    _atomic_csv(_runs_frame(report), pareto_dir / "all_trials.csv")
    if len(report.table):
        _pareto_plots.save_png(report, pareto_dir / "pareto.png")
        _pareto_plots.save_html(report, pareto_dir / "pareto.html")
        pareto_png = (pareto_dir / "pareto.png").read_bytes()
    else:
        pareto_png = b""
    doc = _document(report, pareto_png, dict(facts or {}))
    for name, png in doc.figures.items():
        if png:
            atomic_write(report_dir / "figures" / name, png)
    atomic_write(report_dir / "report.md", doc.markdown())
    atomic_write(report_dir / "report.html", doc.html())
    report.files = {"html": report_dir / "report.html", "markdown": report_dir / "report.md"}
    return report
