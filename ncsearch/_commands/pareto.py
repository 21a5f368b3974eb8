"""`ncsearch pareto EXPERIMENT`: print (and export) the Pareto front of a finished search from MLflow.

The objectives and their directions are read from the parent run (tag `ncsearch.objectives`), the
trials from its child runs, so the front can be rebuilt from any tracking server without the run
directory.
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment",
                        help="experiment name (looked up under <storage>/<name>), a run directory, or a search-space YAML")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the run directory's store)")
    parser.add_argument("--storage", default=None, help="folder holding run directories (default: runs)")
    parser.add_argument("--csv", default=None, metavar="OUT", help="also write the front to this CSV file")
    parser.add_argument("--all", action="store_true", help="print every trial, not only the front")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ncsearch._locate import locate_store
    from ncsearch.errors import NcsearchError

    where = locate_store(args.experiment, tracking_uri=args.tracking_uri, storage=args.storage)
    experiment = where.experiment or args.experiment

    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from ncsearch.pareto import format_front, pareto_info
    from ncsearch.tracking import load_trials

    trials, objectives, parent = load_trials(experiment, tracking_uri=where.tracking_uri)
    if not objectives:
        raise NcsearchError(f"parent run {parent.info.run_id} records no objectives (tag ncsearch.objectives)")
    info = pareto_info(trials, objectives)
    params = [c for c in info.trials.columns if c.startswith("param.")]
    print(f"experiment {experiment!r} at {where.tracking_uri}, search run {parent.info.run_id} ({parent.info.status})")
    finished = int((info.trials["status"] == "FINISHED").sum()) if len(info.trials) else 0
    print(f"{len(info.trials)} trials, {finished} finished; objectives: "
          + ", ".join(f"{mode} {metric}" for metric, mode in objectives))
    if args.all:
        from ncsearch.search import summary_table

        print(summary_table(info))
        print()
    print(format_front(info, extra=params))
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        info.front.to_csv(out, index=False)
        print(f"front written to {out}")
    return 0
