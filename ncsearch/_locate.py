"""Finding a search's tracking store from what a user types: a run directory, a YAML file, a name.

Shared by `ncsearch pareto` and `ncsearch ui`, so both accept the same things.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ncsearch.errors import UserInputError

__all__ = ["StoreLocation", "locate_store"]


@dataclass(frozen=True)
class StoreLocation:
    tracking_uri: str
    experiment: str | None
    run_dir: Path | None
    how: str


def _from_run_dir(run_dir: Path, how: str) -> StoreLocation:
    data = json.loads((run_dir / "tracking.json").read_text())
    return StoreLocation(data["tracking_uri"], data.get("experiment"), run_dir.resolve(), how)


def _run_dirs(storage: Path) -> list[Path]:
    if not storage.is_dir():
        return []
    found = [p for p in storage.iterdir() if (p / "tracking.json").is_file()]
    return sorted(found, key=lambda p: (p / "tracking.json").stat().st_mtime, reverse=True)


def locate_store(target: str | None, *, tracking_uri: str | None = None, storage: str | None = None,
                 overrides: list[str] | None = None) -> StoreLocation:
    """Resolve `target` (a run directory, a search-space YAML, an experiment name, or nothing).

    Order: an explicit `tracking_uri`; a run directory (its tracking.json); a YAML file (its run
    directory `<storage>/<name>`); `<storage>/<target>` (default storage `runs`); $MLFLOW_TRACKING_URI;
    with no target, the most recently used run directory under the storage folder.
    """
    from ncsearch._endpoints import adopt_credentials, check_tracking_uri

    storage_dir = Path(storage or "runs").expanduser()
    if tracking_uri:
        tracking_uri = adopt_credentials(tracking_uri)
        check_tracking_uri(tracking_uri, existing=True)  # a store that is not there is not created by reading it
        return StoreLocation(tracking_uri, target if target and not Path(target).exists() else None, None, "--tracking-uri")
    if target:
        path = Path(target).expanduser()
        if path.is_dir() and (path / "tracking.json").is_file():
            return _from_run_dir(path, f"run directory {path}")
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            from ncsearch.config import load_spec
            from ncsearch.paths import run_dir_for

            spec = load_spec(path, overrides)
            run_dir = run_dir_for(spec, storage)
            if (run_dir / "tracking.json").is_file():
                return _from_run_dir(run_dir, f"run directory of {path}")
            raise UserInputError(f"{path}: no search has run yet in its run directory {run_dir}")
        candidate = storage_dir / target
        if (candidate / "tracking.json").is_file():
            return _from_run_dir(candidate, f"run directory {candidate}")
        if os.environ.get("MLFLOW_TRACKING_URI"):
            uri = adopt_credentials(os.environ["MLFLOW_TRACKING_URI"])
            check_tracking_uri(uri, existing=True, what="$MLFLOW_TRACKING_URI")
            return StoreLocation(uri, target, None, "$MLFLOW_TRACKING_URI")
        raise UserInputError(
            f"cannot find a tracking store for {target!r}: not a run directory, not a YAML file, no "
            f"{candidate}/tracking.json and no $MLFLOW_TRACKING_URI; pass --tracking-uri"
        )
    if os.environ.get("MLFLOW_TRACKING_URI"):
        uri = adopt_credentials(os.environ["MLFLOW_TRACKING_URI"])
        check_tracking_uri(uri, existing=True, what="$MLFLOW_TRACKING_URI")
        return StoreLocation(uri, None, None, "$MLFLOW_TRACKING_URI")
    dirs = _run_dirs(storage_dir)
    if not dirs:
        raise UserInputError(f"no search run found under {storage_dir.resolve()}; name a run directory or pass --tracking-uri")
    others = f" (others: {', '.join(d.name for d in dirs[1:])})" if len(dirs) > 1 else ""
    return _from_run_dir(dirs[0], f"latest run directory {dirs[0]}{others}")
