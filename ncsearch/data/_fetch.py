"""`ncsearch data pull` and `data check`: stage files verified against the manifest, report their state.

Every file is written to a temporary file in its destination folder, its sha256 checked, and only
then moved into place with `os.replace`, so an interrupted or corrupt transfer never leaves a file
that a loader would trust. Files already present with the right checksum are left alone.

Entries pinned through their archive (`ManifestEntry.pinned_by_archive`, the opt-in `nli` dataset):
from the canonical URL the zip is downloaded to a temporary file, its size and sha256 checked, and
only then the member extracted and moved into place; a mismatch leaves nothing behind. Such a file
already on disk counts as present without hashing (there is no member checksum), and one copied from
a mirror or `--base-url` server is accepted unverified, which its status says.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ncsearch.data._manifest import ALL_DATASETS, ManifestEntry, manifest_entries
from ncsearch.errors import DataError

__all__ = ["DatasetStatus", "FileStatus", "check", "file_sha256", "pull"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60
#: Status details of entries pinned through their archive (see the module docstring).
VIA_ARCHIVE = "sha256 not pinned: verified through its archive's sha256 at pull time"
UNVERIFIED = "not checksum-verified: the manifest pins its archive, and this source holds the extracted file"


@dataclass
class FileStatus:
    """One manifest file after `pull` or `check`.

    state: present (checksum matches), missing, corrupt (wrong size or checksum), or, from `pull`,
    copied / downloaded (just staged and verified) and failed (`detail` says why). For an entry pinned
    through its archive, `detail` says what was verified (VIA_ARCHIVE or UNVERIFIED).
    """

    entry: ManifestEntry
    state: Literal["present", "missing", "corrupt", "copied", "downloaded", "failed"]
    size: int = 0
    detail: str = ""


@dataclass
class DatasetStatus:
    """A dataset's files summarized: present only if every file is; corrupt if any file is."""

    dataset: str
    state: Literal["present", "missing", "corrupt"]
    files_ok: int
    files_total: int
    size: int


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, entry: ManifestEntry) -> str | None:
    """None when `path` matches the manifest, else the actual sha256 (or a size note).

    An entry pinned through its archive has no checksum of its own: only its presence is checked.
    """
    if entry.sha256 is None:
        return None
    if path.stat().st_size != entry.size:
        return f"{file_sha256(path)} ({path.stat().st_size} bytes, expected {entry.size})"
    actual = file_sha256(path)
    return None if actual == entry.sha256 else actual


def _verify_archive(archive: Path, entry: ManifestEntry) -> None:
    """Raise a one-line DataError unless the downloaded archive has the pinned size and sha256."""
    size = archive.stat().st_size
    actual = file_sha256(archive)
    if size != entry.archive_size or actual != entry.archive_sha256:
        raise DataError(
            f"archive checksum mismatch for {entry.url}: expected sha256 {entry.archive_sha256} "
            f"({entry.archive_size} bytes), got {actual} ({size} bytes)"
        )


def _copy_stream(source: BinaryIO, target: BinaryIO) -> None:
    shutil.copyfileobj(source, target, _CHUNK)


def _download(url: str, target: BinaryIO) -> None:
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "ncsearch-data-pull"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 (scheme from manifest/flag)
        _copy_stream(response, target)


def _fetch_into(entry: ManifestEntry, tmp: Path, *, mirror: Path | None, base_url: str | None) -> str:
    """Write the entry's bytes to `tmp`; return "copied" or "downloaded". Raises OSError/DataError."""
    if mirror is not None:
        source = mirror / entry.path
        if not source.is_file():
            raise DataError(f"not in mirror: {str(source)!r}")
        with source.open("rb") as src, tmp.open("wb") as dst:
            _copy_stream(src, dst)
        return "copied"
    if base_url is not None:
        # A server laid out like the mirror: no archives, the manifest path appended to the base.
        with tmp.open("wb") as dst:
            _download(base_url.rstrip("/") + "/" + entry.path, dst)
        return "downloaded"
    if entry.url is None:
        raise DataError(f"no canonical URL for {entry.path!r}; pull it with --mirror DIR")
    if entry.archive_member is None:
        with tmp.open("wb") as dst:
            _download(entry.url, dst)
        return "downloaded"
    archive = tmp.with_name(tmp.name + ".zip")
    try:
        with archive.open("wb") as dst:
            _download(entry.url, dst)
        if entry.archive_sha256 is not None:
            _verify_archive(archive, entry)
        with zipfile.ZipFile(archive) as zf, zf.open(entry.archive_member) as src, tmp.open("wb") as dst:
            _copy_stream(src, dst)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{entry.url}: cannot extract {entry.archive_member!r}: {err}") from None
    finally:
        archive.unlink(missing_ok=True)
    return "downloaded"


def _present_detail(entry: ManifestEntry) -> str:
    return VIA_ARCHIVE if entry.pinned_by_archive else ""


def _stage(entry: ManifestEntry, dest_root: Path, *, mirror: Path | None, base_url: str | None) -> FileStatus:
    target = dest_root / entry.path
    # Folders this call creates, deepest first: removed again (if empty) when the file is not staged.
    made = list(itertools.takewhile(lambda folder: not folder.exists(), (target.parent, *target.parent.parents)))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            how = _fetch_into(entry, tmp, mirror=mirror, base_url=base_url)
        except DataError as err:
            return FileStatus(entry, "failed", detail=str(err))
        except OSError as err:  # urllib's URLError/HTTPError are OSErrors
            return FileStatus(entry, "failed", detail=f"download failed: {err}")
        bad = _verify(tmp, entry)
        if bad is not None:
            return FileStatus(entry, "failed", detail=f"checksum mismatch: expected sha256 {entry.sha256}, got {bad}")
        size = tmp.stat().st_size
        os.replace(tmp, target)
        detail = "" if not entry.pinned_by_archive else VIA_ARCHIVE if mirror is None and base_url is None else UNVERIFIED
        return FileStatus(entry, how, size=size, detail=detail)  # type: ignore[arg-type]
    finally:
        tmp.unlink(missing_ok=True)
        if not target.is_file():
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


def pull(
    dest: str | Path,
    *,
    mirror: str | Path | None = None,
    base_url: str | None = None,
    only: Iterable[str] | None = None,
    force: bool = False,
    on_file: Callable[[FileStatus], None] | None = None,
) -> list[FileStatus]:
    """Stage the manifest's files (or those of `only` datasets) under `dest`.

    Source: `mirror` (a folder with the same layout), else `base_url` (an HTTP server with that
    layout), else each file's canonical URL. With `only` empty, the DATASETS (not the opt-in
    `nli`). Files already present and valid are kept unless `force`. Every file is attempted; if any
    failed, a DataError lists each failed file with the expected and actual checksum or the transfer
    error, after the good files are in place (a failed file leaves no folder it created behind).
    """
    if mirror is not None and base_url is not None:
        raise DataError("give either --mirror or --base-url, not both")
    mirror_path = Path(mirror).expanduser() if mirror is not None else None
    if mirror_path is not None and not mirror_path.is_dir():
        raise DataError(f"mirror directory {str(mirror)!r} does not exist")
    dest_root = Path(dest).expanduser()
    entries = manifest_entries(list(only) if only else None)
    if mirror_path is not None and mirror_path.resolve() == dest_root.resolve():
        raise DataError(f"--mirror and the data directory are the same folder: {str(dest_root)!r}")
    results: list[FileStatus] = []
    for entry in entries:
        target = dest_root / entry.path
        if not force and target.is_file() and _verify(target, entry) is None:
            status = FileStatus(entry, "present", size=target.stat().st_size, detail=_present_detail(entry))
        else:
            status = _stage(entry, dest_root, mirror=mirror_path, base_url=base_url)
        results.append(status)
        if on_file is not None:
            on_file(status)
    failed = [s for s in results if s.state == "failed"]
    if failed:
        lines = [f"{len(failed)} of {len(results)} file(s) not staged in {str(dest_root)!r}:"]
        lines += [f"{s.entry.path}: {s.detail}" for s in failed]
        raise DataError("\n".join(lines))
    return results


def check(root: str | Path, *, only: Iterable[str] | None = None) -> tuple[list[DatasetStatus], list[FileStatus]]:
    """Verify every manifest file under `root` against its sha256; summarize per dataset.

    With `only` empty, the DATASETS (not the opt-in `nli`). A file pinned through its archive is
    present when it exists (its detail says it was verified through the archive at pull time).
    """
    root = Path(root)
    entries = manifest_entries(list(only) if only else None)
    files: list[FileStatus] = []
    for entry in entries:
        path = root / entry.path
        if not path.is_file():
            files.append(FileStatus(entry, "missing"))
            continue
        bad = _verify(path, entry)
        size = path.stat().st_size
        if bad is None:
            files.append(FileStatus(entry, "present", size=size, detail=_present_detail(entry)))
        else:
            files.append(FileStatus(entry, "corrupt", size=size, detail=f"expected sha256 {entry.sha256}, got {bad}"))
    datasets = []
    for name in ALL_DATASETS:
        mine = [f for f in files if f.entry.dataset == name]
        if not mine:
            continue
        states = {f.state for f in mine}
        state = "corrupt" if "corrupt" in states else "missing" if "missing" in states else "present"
        datasets.append(
            DatasetStatus(
                dataset=name,
                state=state,
                files_ok=sum(f.state == "present" for f in mine),
                files_total=len(mine),
                size=sum(f.size for f in mine),
            )
        )
    return datasets, files
