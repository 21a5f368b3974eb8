"""The manifest, `pull` (mirror copy and real HTTP download on 127.0.0.1) and `check`, API and CLI."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from ncsearch import cli
from ncsearch.data import (
    DATASETS,
    MANIFEST,
    EntailmentPair,
    ManifestEntry,
    _manifest,
    check,
    file_sha256,
    load_entailment_pairs,
    manifest_entries,
    pull,
)
from ncsearch.data._entailment import NLI_FILES
from ncsearch.data._fetch import UNVERIFIED, VIA_ARCHIVE, _stage
from ncsearch.data._manifest import OPT_IN_DATASETS
from ncsearch.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _serve(directory: Path):
    """A real HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def http_mirror(tmp_path, data_root):
    """A real HTTP server on 127.0.0.1 serving a copy of the mirror; yields (base_url, served_dir)."""
    served = tmp_path / "served"
    shutil.copytree(data_root, served)
    with _serve(served) as base_url:
        yield base_url, served


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".zip"))]


# ---------------------------------------------------------------- manifest
def test_manifest_matches_mirror_and_readme(data_root):
    readme = (data_root / "README.md").read_text()
    table = {
        m.group(1): (m.group(2), int(m.group(3)))
        for m in re.finditer(r"^\| `([^`]+)` \| ([0-9a-f]{64}) \| (\d+) \|$", readme, re.M)
    }
    on_disk = sorted(str(p.relative_to(data_root)) for p in data_root.rglob("*") if p.is_file() and p.name != "README.md")
    mirrored = manifest_entries()  # the default datasets: everything but the opt-in nli
    assert len(mirrored) == 87 == len(table) == len(on_disk) == len(MANIFEST) - 2
    assert sorted(e.path for e in mirrored) == on_disk
    for entry in mirrored:
        assert (entry.sha256, entry.size) == table[entry.path]
        assert file_sha256(data_root / entry.path) == entry.sha256
    for entry in MANIFEST:
        assert entry.path.split("/")[0] == entry.dataset and entry.licence
        assert entry.url is None or entry.url.startswith("https://")
    assert {e.dataset for e in MANIFEST} == set(DATASETS) | set(OPT_IN_DATASETS)
    assert [e.path for e in MANIFEST if e.url is None] == ["glue/MRPC/dev.tsv", "glue/MRPC/train.tsv"]
    rte = next(e for e in MANIFEST if e.path == "glue/RTE/dev.tsv")
    assert rte.url.endswith("/RTE.zip") and rte.archive_member == "RTE/dev.tsv"


def test_manifest_unknown_dataset():
    assert {e.dataset for e in manifest_entries(["seat", "words"])} == {"seat", "words"}
    with pytest.raises(DataError, match="'sst2'.*words, nli"):
        manifest_entries(["sst2"])


def test_manifest_pins_nli_archives_with_tfds_checksums():
    # TFDS tensorflow_datasets/url_checksums/snli.txt and multi_nli.txt
    nli = {e.path: e for e in MANIFEST if e.dataset == "nli"}
    assert sorted(nli) == sorted(relative for _, relative in NLI_FILES)  # what load_entailment_pairs reads
    snli, mnli = nli["nli/snli_1.0_train.jsonl"], nli["nli/multinli_1.0_train.jsonl"]
    assert (snli.url, snli.archive_size, snli.archive_sha256, snli.archive_member) == (
        "https://nlp.stanford.edu/projects/snli/snli_1.0.zip", 94550081,
        "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e", "snli_1.0/snli_1.0_train.jsonl")
    assert (mnli.url, mnli.archive_size, mnli.archive_sha256, mnli.archive_member) == (
        "https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip", 226850426,
        "049f507b9e36b1fcb756cfd5aeb3b7a0cfcb84bf023793652987f7e7e0957822", "multinli_1.0/multinli_1.0_train.jsonl")
    assert snli.licence == "CC BY-SA 4.0" and "MultiNLI paper" in mnli.licence
    assert all(e.pinned_by_archive and e.sha256 is None and e.size is None for e in nli.values())
    # Opt-in: neither a plain pull nor a plain check touches it.
    assert OPT_IN_DATASETS == ("nli",) and "nli" not in DATASETS
    assert not [e for e in manifest_entries() if e.dataset == "nli"]
    assert manifest_entries(["nli"]) == [snli, mnli]
    with pytest.raises(ValueError, match="archive_sha256"):
        ManifestEntry("nli", "nli/x.jsonl", None, None, snli.url, "x", archive_member="x.jsonl")


# ---------------------------------------------------------------- pull from a mirror folder
def test_pull_from_mirror_then_check(tmp_path, data_root):
    dest = tmp_path / "data"
    results = pull(dest, mirror=data_root)
    assert [r.state for r in results] == ["copied"] * 87
    datasets, files = check(dest)
    assert [d.dataset for d in datasets] == list(DATASETS)
    assert all(d.state == "present" and d.files_ok == d.files_total for d in datasets)
    assert sum(d.size for d in datasets) == sum(e.size for e in manifest_entries())
    assert not _leftovers(dest)
    # A second pull keeps valid files untouched.
    stamp = (dest / "words/male.txt").stat().st_mtime_ns
    assert {r.state for r in pull(dest, mirror=data_root, only=["words"])} == {"present"}
    assert (dest / "words/male.txt").stat().st_mtime_ns == stamp


def test_pull_from_mirror_with_corrupt_file(tmp_path, data_root):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "words", mirror / "words")
    bad = b"not the ADEPT list\n"
    (mirror / "words/female.txt").write_bytes(bad)
    dest = tmp_path / "data"
    with pytest.raises(DataError) as info:
        pull(dest, mirror=mirror, only=["words"])
    message = str(info.value)
    entry = next(e for e in MANIFEST if e.path == "words/female.txt")
    assert "words/female.txt" in message and entry.sha256 in message and _sha(bad) in message
    assert not (dest / "words/female.txt").exists()
    for name in ("male.txt", "neutral.txt", "bias_attribute_words.json"):
        assert (dest / "words" / name).read_bytes() == (data_root / "words" / name).read_bytes()
    assert not _leftovers(dest)
    # check() calls a file with the right name but wrong bytes corrupt.
    (dest / "words/female.txt").write_bytes(bad)
    datasets, files = check(dest, only=["words"])
    assert datasets[0].state == "corrupt" and datasets[0].files_ok == 3
    assert [f.entry.path for f in files if f.state == "corrupt"] == ["words/female.txt"]


def test_pull_missing_mirror(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        pull(tmp_path / "d", mirror=tmp_path / "nowhere")


# ---------------------------------------------------------------- real HTTP download on loopback
def test_pull_over_http_rejects_corrupt_file(tmp_path, http_mirror, data_root):
    base_url, served = http_mirror
    corrupt = served / "seat/weat6.jsonl"
    corrupt.write_bytes(corrupt.read_bytes().replace(b"John", b"Jack"))
    dest = tmp_path / "data"
    with pytest.raises(DataError) as info:
        pull(dest, base_url=base_url)
    message = str(info.value)
    entry = next(e for e in MANIFEST if e.path == "seat/weat6.jsonl")
    assert "1 of 87 file(s)" in message
    assert "seat/weat6.jsonl" in message and entry.sha256 in message and file_sha256(corrupt) in message
    assert not (dest / "seat/weat6.jsonl").exists()
    for other in manifest_entries():
        if other.path != entry.path:
            assert file_sha256(dest / other.path) == other.sha256, other.path
    assert not _leftovers(dest)


def test_pull_over_http_broken_download(tmp_path, http_mirror):
    base_url, served = http_mirror
    (served / "words/neutral.txt").unlink()  # the server answers 404
    dest = tmp_path / "data"
    with pytest.raises(DataError, match=r"words/neutral\.txt: download failed: HTTP Error 404"):
        pull(dest, base_url=base_url, only=["words"])
    assert not (dest / "words/neutral.txt").exists()
    assert (dest / "words/male.txt").is_file() and not _leftovers(dest)


def test_stage_extracts_zip_member_over_http(tmp_path, http_mirror, data_root):
    # The canonical GLUE sources are zips: download the archive, extract the member, verify.
    base_url, served = http_mirror
    with zipfile.ZipFile(served / "RTE.zip", "w") as zf:
        zf.write(data_root / "glue/RTE/dev.tsv", "RTE/dev.tsv")
    real = next(e for e in MANIFEST if e.path == "glue/RTE/dev.tsv")
    entry = ManifestEntry(real.dataset, real.path, real.sha256, real.size, f"{base_url}/RTE.zip", real.licence,
                          archive_member="RTE/dev.tsv")
    status = _stage(entry, tmp_path / "data", mirror=None, base_url=None)
    assert status.state == "downloaded"
    assert file_sha256(tmp_path / "data/glue/RTE/dev.tsv") == real.sha256
    missing = ManifestEntry(real.dataset, real.path, real.sha256, real.size, f"{base_url}/RTE.zip", real.licence,
                            archive_member="RTE/test.tsv")
    status = _stage(missing, tmp_path / "other", mirror=None, base_url=None)
    assert status.state == "failed" and "RTE/test.tsv" in status.detail
    assert not (tmp_path / "other/glue/RTE/dev.tsv").exists()
    assert not _leftovers(tmp_path / "other") and not _leftovers(tmp_path / "data")


# ---------------------------------------------------------------- nli: pinned through the archive
SNLI_ROWS = [
    {"gold_label": "entailment", "sentence1": "A man sleeps.", "sentence2": "A person sleeps."},
    {"gold_label": "contradiction", "sentence1": "A man sleeps.", "sentence2": "A man runs."},
]
MNLI_ROWS = [{"gold_label": "entailment", "sentence1": "She reads.", "sentence2": "Someone reads."}]


def _jsonl(rows) -> bytes:
    import json

    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture()
def nli_server(tmp_path, monkeypatch):
    """Small SNLI/MultiNLI zips laid out like the real ones, served on 127.0.0.1; the manifest's nli
    entries point at them with the zips' own checksums. Yields {path: entry}."""
    www = tmp_path / "www"
    www.mkdir()
    members = {"nli/snli_1.0_train.jsonl": _jsonl(SNLI_ROWS), "nli/multinli_1.0_train.jsonl": _jsonl(MNLI_ROWS)}
    with _serve(www) as base_url:
        patched = []
        for entry in MANIFEST:
            if entry.dataset == "nli":
                name = entry.url.rsplit("/", 1)[1]
                with zipfile.ZipFile(www / name, "w") as zf:
                    zf.writestr(f"{entry.archive_member.split('/')[0]}/README.txt", "other members are ignored")
                    zf.writestr(entry.archive_member, members[entry.path])
                entry = replace(entry, url=f"{base_url}/{name}", archive_sha256=file_sha256(www / name),
                                archive_size=(www / name).stat().st_size)
            patched.append(entry)
        monkeypatch.setattr(_manifest, "MANIFEST", tuple(patched))
        yield {e.path: e for e in patched if e.dataset == "nli"}


def test_pull_nli_verifies_archive_and_extracts_member(tmp_path, nli_server, capsys):
    dest = tmp_path / "data"
    results = pull(dest, only=["nli"])
    assert [(r.entry.path, r.state, r.detail) for r in results] == [
        ("nli/snli_1.0_train.jsonl", "downloaded", VIA_ARCHIVE),
        ("nli/multinli_1.0_train.jsonl", "downloaded", VIA_ARCHIVE),
    ]
    assert (dest / "nli/snli_1.0_train.jsonl").read_bytes() == _jsonl(SNLI_ROWS)
    assert sorted(p.name for p in (dest / "nli").iterdir()) == ["multinli_1.0_train.jsonl", "snli_1.0_train.jsonl"]
    assert load_entailment_pairs(dest, "snli_mnli") == [
        EntailmentPair("A man sleeps.", "A person sleeps.", "SNLI"),
        EntailmentPair("She reads.", "Someone reads.", "MNLI"),
    ]
    # Present files are kept (no member checksum to compare: presence is what check can see).
    assert [r.state for r in pull(dest, only=["nli"])] == ["present", "present"]
    datasets = check(dest, only=["nli"])[0]
    assert (datasets[0].dataset, datasets[0].state, datasets[0].files_ok) == ("nli", "present", 2)
    assert datasets[0].size == len(_jsonl(SNLI_ROWS)) + len(_jsonl(MNLI_ROWS))
    assert cli.main(["data", "check", "--data-dir", str(dest), "--only", "nli"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"nli\s*│\s*present\s*│\s*2/2", out)
    assert f"note     nli/snli_1.0_train.jsonl: {VIA_ARCHIVE}" in out
    # A plain pull or check never reaches for nli.
    assert all(f.entry.dataset != "nli" for f in check(dest)[1])


def test_cli_pull_nli_wrong_archive_checksum_exits_2_and_writes_nothing(tmp_path, nli_server, monkeypatch, capsys):
    snli = nli_server["nli/snli_1.0_train.jsonl"]
    wrong = replace(snli, archive_sha256="0" * 64)
    monkeypatch.setattr(_manifest, "MANIFEST", (wrong,))
    dest = tmp_path / "data"
    dest.mkdir()
    code = cli.main(["data", "pull", "--only", "nli", "--data-dir", str(dest)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0] == f"ncsearch data: error: 1 of 1 file(s) not staged in {str(dest)!r}:"
    assert err[1:] == [
        (f"ncsearch data: error: nli/snli_1.0_train.jsonl: archive checksum mismatch for {snli.url}: "
         f"expected sha256 {'0' * 64} ({snli.archive_size} bytes), got {snli.archive_sha256} ({snli.archive_size} bytes)")
    ]
    assert list(dest.iterdir()) == []  # no nli/ folder, no .part or .zip left
    # A wrong size is refused the same way (before the member is extracted).
    monkeypatch.setattr(_manifest, "MANIFEST", (replace(snli, archive_size=94550081),))
    with pytest.raises(DataError, match=r"expected sha256 \w+ \(94550081 bytes\), got \w+ \(\d+ bytes\)"):
        pull(dest, only=["nli"])
    assert list(dest.iterdir()) == []


def test_pull_nli_from_a_mirror_accepts_the_extracted_files(tmp_path, data_root):
    # A mirror holds the extracted files, which have no checksum of their own: copied, and said so.
    mirror = tmp_path / "mirror"
    (mirror / "nli").mkdir(parents=True)
    (mirror / "nli/snli_1.0_train.jsonl").write_bytes(_jsonl(SNLI_ROWS))
    (mirror / "nli/multinli_1.0_train.jsonl").write_bytes(_jsonl(MNLI_ROWS))
    dest = tmp_path / "data"
    results = pull(dest, mirror=mirror, only=["nli"])
    assert [(r.state, r.detail) for r in results] == [("copied", UNVERIFIED)] * 2
    assert len(load_entailment_pairs(dest, "snli_mnli")) == 2
    # The offline mirror has no nli/: named explicitly, that is an error; by default nli is not pulled.
    with pytest.raises(DataError, match=r"2 of 2 file\(s\).*\nnli/snli_1\.0_train\.jsonl: not in mirror"):
        pull(tmp_path / "other", mirror=data_root, only=["nli"])
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------- CLI
def test_cli_check_mirror_all_present(data_root, capsys):
    assert cli.main(["data", "check", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert re.search(rf"{name}\s*│\s*present", out), name
    assert "missing" not in out and "corrupt" not in out


def test_cli_pull_http_corrupt_exits_2(tmp_path, http_mirror, capsys):
    base_url, served = http_mirror
    (served / "words/male.txt").write_text("oops\n")
    dest = tmp_path / "data"
    code = cli.main(["data", "pull", "--base-url", base_url, "--only", "words", "--data-dir", str(dest)])
    err = capsys.readouterr().err
    assert code == 2
    assert "words/male.txt: checksum mismatch" in err and _sha(b"oops\n") in err
    assert not (dest / "words/male.txt").exists() and (dest / "words/female.txt").is_file()
    assert cli.main(["data", "check", "--data-dir", str(dest), "--only", "words"]) == 1
    assert "missing  words/male.txt" in capsys.readouterr().out


def test_cli_pull_mirror_then_check_default_root(tmp_path, data_root):
    # The documented fresh-machine flow, as subprocesses: pull into the cache, then check finds it.
    env = {k: v for k, v in os.environ.items() if k != "NCSEARCH_DATA_DIR"}
    env["NCSEARCH_CACHE_DIR"] = str(tmp_path / "cache")
    run = partial(subprocess.run, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    pulled = run([sys.executable, "-m", "ncsearch.cli", "data", "pull", "--mirror", str(data_root), "--only", "seat", "gap"])
    assert pulled.returncode == 0, pulled.stderr
    assert "55 copied" in pulled.stdout
    checked = run([sys.executable, "-m", "ncsearch.cli", "data", "check", "--only", "seat", "gap"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"data root: {tmp_path / 'cache' / 'data'}" in checked.stdout
    assert re.search(r"seat\s*│\s*present\s*│\s*50/50", checked.stdout)


def test_cli_check_without_anything_finds_mirror(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NCSEARCH_DATA_DIR"}
    env["NCSEARCH_CACHE_DIR"] = str(tmp_path / "empty-cache")
    done = subprocess.run([sys.executable, "-m", "ncsearch.cli", "data", "check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shared/data" in done.stdout
    assert done.stdout.count("present") == len(DATASETS)
