"""`ncsearch pareto EXPERIMENT`: the noise-aware Pareto front of a finished search, from MLflow.

The search is read back from its tracking store (`ncsearch._records`), so the front can be rebuilt from
any tracking server without the run directory. The front is computed on configuration means; each
member is shown with its intervals and with what noise allows to say of it.
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment",
                        help="experiment name (looked up under <storage>/<name>), a run directory, or a search-space YAML")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the run directory's store)")
    parser.add_argument("--storage", default=None, help="folder holding run directories (default: runs)")
    parser.add_argument("--csv", default=None, metavar="OUT", help="also write the front (with intervals) to this CSV file")
    parser.add_argument("--all", action="store_true", help="also print every configuration, not only the front")


def main(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ncsearch._locate import locate_store

    where = locate_store(args.experiment, tracking_uri=args.tracking_uri, storage=args.storage)
    experiment = where.experiment or args.experiment
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from ncsearch._records import load_search
    from ncsearch.report import build_report
    from ncsearch.report._tables import configuration_rows, front_rows, render

    record = load_search(experiment, tracking_uri=where.tracking_uri)
    report = build_report(record)
    parent = record.parent
    print(f"experiment {experiment!r} at {where.tracking_uri}, search run {parent.info.run_id} ({parent.info.status})")
    finished = sum(1 for r in record.runs if r.finished)
    print(f"{len(record.runs)} runs, {finished} finished, {report.configurations} configurations; objectives: "
          + ", ".join(f"{mode} {metric}" for metric, mode in report.objectives))
    if args.all:
        print(render(configuration_rows(report, [m for m, _ in report.objectives])))
        print()
    print(render(front_rows(report)))
    print(f"hypervolume {report.hypervolume.format()}")
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        report.front.to_csv(out, index=False)
        print(f"front written to {out}")
    return 0
