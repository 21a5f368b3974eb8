"""Storage faults and damaged files met by `ncsearch run` (issue 16, drills 3 and 5), for real.

- A read-only run folder (or a read-only folder to create it in): one line, exit 2, before Ray starts.
  As root, write bits mean nothing, so the folder is made read-only by a read-only bind mount.
- A disk that fills mid-search: the search's `trials/` folder is a small tmpfs. Once the trial's
  step-2 checkpoint is saved, the file system is shrunk to what it holds plus 1 MiB, so the final
  checkpoint cannot be written: the trial fails with "No space left on device", recorded as failed.
  Space comes back (the tmpfs is grown again) and `--resume` completes the trial from step 2.
- Between the two, each file `--resume` continues from is damaged in turn (cut in half: optuna.db,
  mlflow.db, the latest checkpoint's state.pt and model.safetensors): one line naming the file, exit 2,
  nothing in the run directory changed; the file is put back before the next one.

Mounting needs root with CAP_SYS_ADMIN. Without it the read-only and disk-full tests are skipped,
saying so, and the search is interrupted instead by SIGKILLing its driver after the step-2
checkpoint, so the damaged-file tests and the resume still run. About 3 minutes in all: one trial,
trained twice in part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest_search import REPO, SMOKE, env, kill_group, ncsearch, run

ENOSPC = "No space left on device"
# One configuration, one seed, no control: one trial, with a checkpoint at step 2 and at step 4 (the
# final one, after its evaluation, kept small here).
ARGS = ["--set", "search.replicates=1", "--set", "search.control=false", "--set", "nc3.alpha={grid: [1.0]}",
        "--set", "search.max_failures=0", "--set", "train.checkpoint_every=2",
        "--set", "eval.limits={stereoset: 16, perplexity: 8, collapse: 40}"]


def _mount(*args: str) -> str | None:
    """Run `mount ARGS`; None when it worked, else why not."""
    if not shutil.which("mount"):
        return "no mount command"
    if os.geteuid() != 0:
        return "not root"
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` read-only for this process and its children: write bits off for a normal user, a
    read-only bind mount for root (who ignores write bits); skips when neither works."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    why = _mount("--bind", str(folder), str(folder))
    if why:
        pytest.skip(f"cannot make a read-only folder as root without a read-only bind mount: {why}")
    try:
        why = _mount("-o", "remount,bind,ro", str(folder))
        if why:
            pytest.skip(f"cannot remount a bind mount read-only: {why}")
        yield
    finally:
        _umount(folder)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "data:" not in proc.stdout and "tracking:" not in proc.stdout  # stopped before the data, the model, Ray
    return lines[0]


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


# ----- read-only ----------------------------------------------------------------------------------


def test_a_read_only_run_folder_stops_in_one_line_before_ray(tmp_path):
    run_dir = tmp_path / "runs" / "smoke"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("left by an earlier search\n")
    before = _listing(run_dir)
    with read_only(run_dir):
        proc = run("run", str(SMOKE), "--storage", str(tmp_path / "runs"), "--resume", timeout=300)
    line = _one_error_line(proc)
    assert line.startswith(f"ncsearch run: error: {run_dir}: the run directory is not writable"), line
    assert "Read-only file system" in line or "Permission denied" in line, line
    assert _listing(run_dir) == before


def test_a_read_only_storage_folder_stops_in_one_line_and_creates_nothing(tmp_path):
    storage = tmp_path / "runs"
    storage.mkdir()
    with read_only(storage):
        proc = run("run", str(SMOKE), "--storage", str(storage), timeout=300)
    line = _one_error_line(proc)
    assert line.startswith(f"ncsearch run: error: {storage}: the folder that would hold the run directory "
                           f"{storage / 'smoke'} is not writable"), line
    assert list(storage.iterdir()) == []


# ----- a disk that fills, damaged files, and the resume --------------------------------------------


def _wait_for_checkpoint(train_dirs: Path, name: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until Ray Train's checkpoint list of the (only) trial names checkpoint `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for snapshot in train_dirs.glob("*/train/checkpoint_manager_snapshot.json"):
            if name in snapshot.read_text():
                return
        assert proc.poll() is None, "the search ended before its first checkpoint"
        time.sleep(0.5)
    raise AssertionError(f"no {name} in the trial's checkpoint list after {timeout}s")


def _interrupted_search(storage: Path, *, fill: bool) -> tuple[int | None, str]:
    """Run the one-trial search; after its step-2 checkpoint either fill `trials/` (shrink the tmpfs)
    and let it run to its end, or SIGKILL the driver. Returns (exit code or None if killed, output)."""
    trials = storage / "smoke" / "trials"
    proc = subprocess.Popen(ncsearch("run", str(SMOKE), "--storage", str(storage), *ARGS), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if "step 2/4" in line:
                break
        _wait_for_checkpoint(trials, "checkpoint_000002", proc)
        if not fill:
            os.kill(proc.pid, signal.SIGKILL)  # the driver only, as if its machine session died
            proc.wait(timeout=60)
            return None, "".join(output)
        stats = os.statvfs(trials)
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        why = _mount("-o", f"remount,size={used // 1024 + 1024}k", str(trials))
        assert why is None, why
        output.append(f"(test: {trials} is full: {used // 1024 + 1024} KiB)\n")
        output.extend(proc.stdout)
        proc.wait(timeout=600)
        return proc.returncode, "".join(output)
    finally:
        kill_group(proc)  # and the local Ray cluster it started


#: file (relative to the run directory; {ckpt} is the trial's step-2 checkpoint) -> what the error calls it
DAMAGED = {
    "optuna.db": "(the Optuna study) is damaged",
    "mlflow.db": "(the MLflow store) is damaged",
    "{ckpt}/state.pt": "(the latest checkpoint of trial",
    "{ckpt}/model/model.safetensors": "(the latest checkpoint of trial",
}


def _files(run_dir: Path) -> dict[str, int]:
    """Every file of the run directory and its size, the lock file aside (each run rewrites it)."""
    return {k: v for k, v in _listing(run_dir).items() if k != "ncsearch.lock"}


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fingerprint(run_dir: Path) -> dict:
    """What a refused resume must leave alone: the files, the Optuna studies and trials, the MLflow runs."""
    files = _files(run_dir)
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    return {"files": files, "optuna": [(t.number, t.state.name) for t in study.trials],
            "studies": len(optuna.get_all_study_summaries(f"sqlite:///{run_dir / 'optuna.db'}")),
            "mlflow": sorted((r.info.run_id, r.info.status) for r in runs)}


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    """The one-trial search, interrupted after its step-2 checkpoint (by a full disk where a tmpfs can
    be mounted, else by SIGKILL), then every damaged-file resume, then the real resume."""
    storage = tmp_path_factory.mktemp("storage-faults")
    trials = storage / "smoke" / "trials"
    trials.mkdir(parents=True)
    why_not = _mount("-t", "tmpfs", "-o", "size=2g", "ncsearch-test-trials", str(trials))
    out: dict = {"run_dir": storage / "smoke", "no_tmpfs": why_not}
    try:
        start = time.monotonic()
        out["first_rc"], out["first"] = _interrupted_search(storage, fill=why_not is None)
        out["first_s"] = time.monotonic() - start
        if why_not is None:
            assert _mount("-o", "remount,size=2g", str(trials)) is None  # space is back
        run_dir = out["run_dir"]
        client, seed = _seed_run(run_dir)
        out["first_seed"] = (seed.info.status, dict(seed.data.tags), [a.path for a in client.list_artifacts(seed.info.run_id)])
        study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
        out["first_optuna"] = [t.state.name for t in study.trials]
        (trial_id,) = [p.name for p in trials.iterdir()]
        out["trial_id"] = trial_id
        ckpt = f"trials/{trial_id}/train/checkpoint_000002"
        backup = tmp_path_factory.mktemp("backup")
        out["damaged"] = {}
        out["untouched"] = _fingerprint(run_dir)
        for pattern in DAMAGED:
            path = run_dir / pattern.format(ckpt=ckpt)
            shutil.copy2(path, backup / "file")
            os.truncate(path, path.stat().st_size // 2)
            before = (_files(run_dir), _sha256(path))
            start = time.monotonic()
            proc = run("run", str(SMOKE), "--storage", str(storage), *ARGS, "--resume", timeout=300)
            seconds = time.monotonic() - start
            after = (_files(run_dir), _sha256(path))
            shutil.copy2(backup / "file", path)
            out["damaged"][pattern] = (path, proc, before, after, _fingerprint(run_dir), seconds)
        start = time.monotonic()
        out["resumed"] = run("run", str(SMOKE), "--storage", str(storage), *ARGS, "--resume", timeout=900)
        out["resumed_s"] = time.monotonic() - start
        print(f"\nfirst run {out['first_s']:.0f}s (rc {out['first_rc']}), resume {out['resumed_s']:.0f}s; damaged-file "
              "resumes " + ", ".join(f"{k.split('/')[-1]} {v[5]:.0f}s" for k, v in out["damaged"].items()))
        yield out
    finally:
        if why_not is None:
            _umount(trials)


def _seed_run(run_dir: Path):
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    (seed,) = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'seed'")
    return client, seed


def test_a_full_disk_fails_the_trial_with_its_reason(faulted):
    if faulted["no_tmpfs"]:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({faulted['no_tmpfs']}); the search was interrupted "
                    "by SIGKILL instead")
    out = faulted["first"]
    assert faulted["first_rc"] == 1, out[-4000:]  # no run finished: exit 1
    assert "0 runs finished, 1 failed" in out, out[-4000:]
    failed = [line for line in out.splitlines() if "FAILED (1/1 runs)" in line]
    assert len(failed) == 1 and ENOSPC in failed[0], out[-4000:]
    status, tags, artifacts = faulted["first_seed"]
    assert status == "FAILED" and ENOSPC in tags["ncsearch.failure_reason"], tags
    assert "error.txt" in artifacts
    assert faulted["first_optuna"] == ["FAIL"]
    _, seed = _seed_run(faulted["run_dir"])  # finished on --resume: the first failure is kept
    assert ENOSPC in seed.data.tags["ncsearch.previous_failure"], seed.data.tags


@pytest.mark.parametrize("pattern", list(DAMAGED))
def test_a_damaged_file_on_resume_is_named_and_nothing_changes(faulted, pattern):
    path, proc, before, after, restored, _ = faulted["damaged"][pattern]
    line = _one_error_line(proc)
    assert line.startswith(f"ncsearch run: error: cannot resume: {path} {DAMAGED[pattern]}"), line
    if path.suffix == ".db":
        assert "SQLite" in line or "no table" in line, line
    else:
        assert "cut short" in line and faulted["trial_id"] in line, line
    assert after == before  # no file created, grown or shrunk, and the damaged one not written to
    assert restored == faulted["untouched"]  # the file put back: the same studies, trials, runs and files as before


def test_resume_completes_the_trial_from_its_checkpoint(faulted):
    resumed = faulted["resumed"]
    out = resumed.stdout
    assert resumed.returncode == 0, out[-4000:] + resumed.stderr[-3000:]
    assert "resuming the search" in out and "1 runs finished, 0 failed (1 configurations)" in out, out[-3000:]
    client, seed = _seed_run(faulted["run_dir"])
    assert seed.info.status == "FINISHED" and seed.data.tags["ncsearch.attempts"] == "2"
    assert "ncsearch.failure_reason" not in seed.data.tags
    assert seed.data.metrics["train/resumed_from"] == 2  # from its step-2 checkpoint, not from step 0
    assert [m.step for m in client.get_metric_history(seed.info.run_id, "train/loss")] == [2, 4]
    parent = client.search_runs([seed.info.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{faulted['run_dir'] / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    # after a full disk, Optuna heard that the configuration failed, then hears it again, complete
    assert states == (["COMPLETE"] if faulted["no_tmpfs"] else ["FAIL", "COMPLETE"]), states
