"""`ncsearch run SPACE.yaml`: run a search space (Ray Tune + Optuna trials of NC3-regularized training).

Everything about the input (YAML, overrides, data root, model, run directory) is checked before Ray
starts; bad input exits 2 with one line per problem.
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search-space YAML file")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address ('auto', 'ray://host:10001', ...); default: a local Ray")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search in the run directory <storage>/<name> without re-running finished trials")
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="number of configurations Optuna proposes (overrides search.num_samples); each is trained search.replicates times")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key (dotted path; value read as YAML); repeatable")
    parser.add_argument("--data-dir", default=None, help="benchmark data root (default: NCSEARCH_DATA_DIR, cache, mirror)")
    parser.add_argument("--storage", default=None,
                        help="folder holding run directories (default: the spec's 'storage', 'runs')")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: tracking.uri, else sqlite:///<run dir>/mlflow.db)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and the workers' own logs")


def main(args: argparse.Namespace) -> int:
    from ncsearch.config import load_spec
    from ncsearch.errors import ConfigError

    overrides = list(args.overrides)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
        overrides.append(f"search.num_samples={args.num_samples}")
    spec = load_spec(args.space, overrides)

    _quiet_library_logs(verbose=args.verbose)
    from ncsearch.search import main_exit_code, run_search

    outcome = run_search(
        spec,
        address=args.address,
        resume=args.resume,
        data_dir=args.data_dir,
        storage=args.storage,
        yaml_path=args.space,
        tracking_uri=args.tracking_uri,
        verbose=args.verbose,
    )
    print(f"MLflow: ncsearch ui {outcome.run_dir}    (tracking URI {outcome.tracking_uri})")
    return main_exit_code(outcome)


def _quiet_library_logs(*, verbose: bool) -> None:
    """MLflow and Optuna log routine INFO lines (table creation, study creation) that drown the
    progress lines; keep their warnings."""
    if verbose:
        return
    import os

    import optuna

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    optuna.logging.set_verbosity(optuna.logging.WARNING)
