"""Where the benchmark files live: one resolution order shared by the CLI, loaders and trials."""

from __future__ import annotations

import os
from pathlib import Path

from ncsearch.errors import DataError

__all__ = ["ENV_VAR", "default_data_dir", "resolve_data_root", "require_file"]

ENV_VAR = "NCSEARCH_DATA_DIR"

# A folder counts as a data root once it holds at least one of these (a partial pull still counts:
# the loader for a missing dataset then names the file and says how to fetch it).
_MARKERS = (
    "stereoset/dev.jsonl",
    "crows_pairs/crows_pairs_anonymized.csv",
    "gap/gap-development.tsv",
    "words/male.txt",
    "seat/weat6.jsonl",
    "winobias/pro_stereotyped_type1.txt.dev",
    "bec_pro/BEC-Pro_EN.tsv",
    "glue/RTE/dev.tsv",
)


def default_data_dir() -> Path:
    """Where `ncsearch data pull` writes when no folder is given: `$NCSEARCH_DATA_DIR`, else the cache.

    Unlike `resolve_data_root`, the folder need not exist yet and the read-only mirror is never chosen.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from ncsearch.paths import cache_dir

    return cache_dir(create=False) / "data"


def _holds_files(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in _MARKERS)


def _mirror_candidates(start: Path) -> list[Path]:
    """`<dir>/../shared/data` for `start` and each of its ancestors (the mirror sits beside the checkout)."""
    start = start.resolve()
    return [parent / "shared" / "data" for parent in (start, *start.parents)]


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The folder holding the benchmark files.

    Order: `explicit` (the `--data-dir` flag or the spec's `data_dir`), then `$NCSEARCH_DATA_DIR`,
    then `~/.cache/ncsearch/data` (the cache, see `ncsearch.paths.cache_dir`) if it holds any files,
    then the offline mirror `shared/data` found beside the checkout, walking up from this package's
    source and from the working directory. A folder named explicitly (flag or variable) must exist:
    silently falling back would evaluate on different data than the user asked for.
    """
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataError(f"data directory {str(explicit)!r} does not exist; run 'ncsearch data pull --data-dir {explicit}'")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"${ENV_VAR}={env!r} is not a directory; run 'ncsearch data pull' or unset it")
        return path.resolve()
    tried: list[str] = []
    cache = default_data_dir()
    if _holds_files(cache):
        return cache.resolve()
    tried.append(str(cache))
    seen: set[Path] = set()
    for start in (Path(__file__).parent, Path.cwd()):
        for candidate in _mirror_candidates(start):
            if candidate in seen:
                continue
            seen.add(candidate)
            if (candidate / "README.md").is_file() and _holds_files(candidate):
                return candidate
    tried.append("shared/data beside the checkout or the working directory")
    raise DataError(
        f"no benchmark data found (tried --data-dir, ${ENV_VAR}, {', '.join(tried)}); "
        "run 'ncsearch data pull' or pass --data-dir"
    )


def require_file(root: str | Path, relative: str) -> Path:
    """`root/relative`, or a DataError naming the path and the command that fetches it."""
    path = Path(root) / relative
    if not path.is_file():
        dataset = relative.split("/", 1)[0]
        raise DataError(
            f"missing data file {str(path)!r}; run 'ncsearch data pull --only {dataset}' "
            f"(or 'ncsearch data pull --mirror DIR')"
        )
    return path
