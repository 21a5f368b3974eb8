"""`ncsearch data`: stage benchmark files (`pull`) and verify them against the manifest (`check`).

Without --only both act on the datasets of the mirror; the opt-in `nli` (SNLI 1.0 + MultiNLI 1.0
train files for MABEL's `corpus: snli_mnli`, about 320 MB of archives) only when named.

Exit codes: 0 all good; 2 (DataError) when any file could not be staged (missing from the mirror,
download failed, checksum mismatch; the message names each file and both checksums) or a name is
unknown; 1 from `check` when a dataset is missing or corrupt.
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    from ncsearch.data._manifest import DATASETS, OPT_IN_DATASETS

    only_help = f"datasets to {{}} (default: {', '.join(DATASETS)}; {', '.join(OPT_IN_DATASETS)} only when named)"
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    pull = sub.add_parser(
        "pull",
        help="copy from a mirror or download from the canonical URLs, verifying sha256",
        description="Stage benchmark files into the data directory. Each file goes to a temporary file, "
        "its sha256 is checked against the manifest, then it is moved into place. The opt-in nli "
        "dataset pins its canonical zip archives instead: each is downloaded, its sha256 checked, then "
        "the train file extracted.",
    )
    source = pull.add_mutually_exclusive_group()
    source.add_argument("--mirror", metavar="DIR", help="a folder with the data layout (e.g. ../shared/data)")
    source.add_argument(
        "--base-url", metavar="URL", help="an HTTP(S) server with the data layout, instead of the canonical URLs"
    )
    pull.add_argument("--only", nargs="+", metavar="NAME", help=only_help.format("pull"))
    pull.add_argument(
        "--data-dir", metavar="DIR", help="destination (default: $NCSEARCH_DATA_DIR, else ~/.cache/ncsearch/data)"
    )
    pull.add_argument("--force", action="store_true", help="re-fetch files that are already present and valid")

    check = sub.add_parser(
        "check",
        help="show each dataset as present/missing/corrupt",
        description="Verify every manifest file under the data root against its sha256.",
    )
    check.add_argument("--data-dir", metavar="DIR", help="data root (default: the usual resolution order)")
    check.add_argument("--only", nargs="+", metavar="NAME", help=only_help.format("check"))


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _pull(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from rich.console import Console

    from ncsearch.errors import UserInputError

    if args.base_url is not None and (urlsplit(args.base_url).scheme not in ("http", "https")
                                      or not urlsplit(args.base_url).netloc):
        raise UserInputError(f"--base-url {args.base_url!r}: expected an http:// or https:// URL")

    from ncsearch.data import default_data_dir, pull

    console = Console(highlight=False, soft_wrap=True)
    dest = args.data_dir if args.data_dir else default_data_dir()
    counts: dict[str, int] = {}

    def on_file(status) -> None:
        counts[status.state] = counts.get(status.state, 0) + 1
        if status.state == "failed":
            console.print(f"[red]failed[/red]  {status.entry.path}")
        elif status.state != "present":
            console.print(f"{status.state:10s} {status.entry.path}" + (f" ({status.detail})" if status.detail else ""))

    results = pull(dest, mirror=args.mirror, base_url=args.base_url, only=args.only, force=args.force, on_file=on_file)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    console.print(f"{len(results)} file(s) in {dest}: {summary}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ncsearch.data import check, resolve_data_root

    root = resolve_data_root(args.data_dir)
    datasets, files = check(root, only=args.only)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"data root: {root}")
    table = Table()
    table.add_column("dataset")
    table.add_column("status")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    colour = {"present": "green", "missing": "yellow", "corrupt": "red"}
    for ds in datasets:
        table.add_row(
            ds.dataset, f"[{colour[ds.state]}]{ds.state}[/]", f"{ds.files_ok}/{ds.files_total}", _human(ds.size)
        )
    console.print(table)
    # Whole datasets that are missing show in the table; list files only where a dataset is partial.
    wholly_missing = {ds.dataset for ds in datasets if ds.files_ok == 0 and ds.state == "missing"}
    problems = [f for f in files if f.state != "present"]
    for f in files:
        if f.state == "present" and f.detail:  # pinned through its archive: say what was verified
            console.print(f"{'note':8s} {f.entry.path}: {f.detail}")
    for f in problems:
        if f.state == "missing" and f.entry.dataset in wholly_missing:
            continue
        console.print(f"{f.state:8s} {f.entry.path}" + (f": {f.detail}" if f.detail else ""))
    if problems:
        from ncsearch.data._manifest import OPT_IN_DATASETS

        opt_in = sorted({f.entry.dataset for f in problems} & set(OPT_IN_DATASETS))
        if opt_in:
            console.print(f"run 'ncsearch data pull --only {' '.join(opt_in)}' to fetch {', '.join(opt_in)}")
        if any(f.entry.dataset not in OPT_IN_DATASETS for f in problems):
            console.print("run 'ncsearch data pull' (or 'ncsearch data pull --mirror DIR') to fetch them")
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    if args.data_command == "pull":
        return _pull(args)
    return _check(args)
