"""The per-search report (DESIGN.md §10): computed by `build_report`, written by `write_report`.

`write_report` writes the Pareto artifacts (front and configurations as CSV, pareto.png, pareto.html)
and the report itself (report.html, self-contained; report.md; figures/). Plotting libraries are
imported only when something is drawn.
"""

from ncsearch.report._build import ALPHA, Report, build_report
from ncsearch.report._render import SECTIONS, write_report

__all__ = ["ALPHA", "SECTIONS", "Report", "build_report", "write_report"]
