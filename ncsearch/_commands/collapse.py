"""`ncsearch collapse`: collapse (not implemented yet; see the open issues)."""

from __future__ import annotations

import argparse

from ncsearch.errors import NcsearchError


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    raise NcsearchError("'ncsearch collapse' is not implemented yet")
