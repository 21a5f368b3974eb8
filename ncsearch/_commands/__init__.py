"""One module per `ncsearch` subcommand: `add_parser(parser)` and `main(args) -> int`.

Command modules import heavy libraries inside `main`, never at module level, because the CLI imports
every command module to build `--help`.
"""
