"""`ncsearch report EXPERIMENT|RUN_DIR`: the search's report, as one self-contained HTML file and a
Markdown summary, logged to the search's parent MLflow run.

Every `ncsearch run` writes it at its end; this command writes it again (after a `--resume`, with
other bootstrap settings, or from a tracking server without the run directory).
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run directory, a search name (under <storage>) or a search-space YAML")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the run directory's store)")
    parser.add_argument("--storage", default=None, help="folder holding run directories (default: runs)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write report/ and pareto/ here (default: the run directory, else ./report-<experiment>)")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 2000)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent MLflow run")


def main(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ncsearch._locate import locate_store
    from ncsearch.errors import ConfigError, UserInputError
    from ncsearch.stats import RESAMPLES

    resamples = RESAMPLES if args.resamples is None else args.resamples
    if resamples < 1:
        raise ConfigError(f"--resamples must be positive, but got {resamples}")
    where = locate_store(args.target, tracking_uri=args.tracking_uri, storage=args.storage)
    experiment = where.experiment or args.target
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from ncsearch._records import load_search
    from ncsearch.paths import RunLayout
    from ncsearch.report import write_report

    record = load_search(experiment, tracking_uri=where.tracking_uri)
    if not any(r.finished for r in record.runs):
        raise UserInputError(f"{where.run_dir or experiment}: the search holds no finished trial, so there is nothing to report")
    root = Path(args.out) if args.out else (where.run_dir or Path(f"report-{experiment}"))
    layout = RunLayout(root)
    report = write_report(record, pareto_dir=layout.pareto_dir, report_dir=layout.report_dir, resamples=resamples)
    if not args.no_log:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=where.tracking_uri)
        parent = record.parent.info.run_id
        for artifact_path, folder in (("report", layout.report_dir), ("pareto", layout.pareto_dir)):
            client.log_artifacts(parent, str(folder), artifact_path=artifact_path)
        client.set_tag(parent, "ncsearch.verdict", " ".join(report.verdict))
    print(report.text())
    print(f"report: {layout.report_dir / 'report.html'} and {layout.report_dir / 'report.md'}")
    if not args.no_log:
        print(f"logged to MLflow run {record.parent.info.run_id} (artifacts report/ and pareto/)")
    return 0
