"""The `ncsearch` command: argument parsing, exit codes and one-line errors.

Each subcommand lives in its own module under `ncsearch/_commands/` with two functions,
`add_parser(subparsers)` and `main(args) -> int`. Modules are imported only when their subcommand
runs, so `ncsearch --help` and `ncsearch validate` never import torch, Ray or MLflow.

Exit codes: 0 success; 1 a run failed; 2 bad input (file, key, value, name), nothing started; 3 (`ncsearch
run`) the search finished, but its MLflow tracking server was unreachable for a while: every call
was buffered and replayed, and the summary says for how long.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ncsearch import __version__
from ncsearch.errors import NcsearchError

__all__ = ["main"]

# name -> (module under ncsearch._commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run a search space: Ray Tune + Optuna trials of NC3-regularized fine-tuning"),
    "train": ("train", "one fixed training run of a search space (no search), for debugging"),
    "eval": ("eval", "run the fairness/performance suite on one checkpoint"),
    "collapse": ("collapse", "neural-collapse metrics NC1-NC4 on a vocabulary subset"),
    "pareto": ("pareto", "print or export the noise-aware Pareto front of a finished search"),
    "report": ("report", "write a search's HTML + Markdown report and log it to MLflow"),
    "compare": ("compare", "paired bootstrap of two checkpoints, runs or trials on the same examples"),
    "data": ("data", "stage benchmark files from a mirror or canonical URLs; verify checksums"),
    "ui": ("ui", "start the MLflow UI over a search's tracking store"),
    "validate": ("validate", "check a search-space YAML file and print what it searches"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's errors in one line, like every other bad input (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ncsearch",
        description="Hyperparameter and ablation search for neural-collapse fairness regularization (NC3).",
    )
    parser.add_argument("--version", action="version", version=f"ncsearch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"ncsearch._commands.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_parser(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except NcsearchError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"ncsearch {args.command}: error: {line}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"ncsearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
