"""`ncsearch validate SPACE.yaml`: check a search space and print what it would search."""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search-space YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key (dotted path; value read as YAML); repeatable")


def main(args: argparse.Namespace) -> int:
    from ncsearch.config import describe, load_spec

    spec = load_spec(args.space, args.overrides)
    print(f"{args.space}: OK")
    print(describe(spec))
    return 0
