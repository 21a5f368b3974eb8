"""`ncsearch run` refuses bad input with exit 2 before Ray starts (no run directory is created)."""

from __future__ import annotations

import pytest

from conftest_search import SMOKE, run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "nc3.alpha={loguniform: [0, 1]}"], "loguniform"),
        (["--set", "train.nope=1"], "unknown key"),
        (["--num-samples", "0"], "--num-samples"),
        (["--set", "search.algorithm=grid", "--set", "nc3.alpha={uniform: [0.0, 1.0]}"], "grid"),
        (["--data-dir", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_bad_input_exits_2_before_ray(tmp_path, extra, message):
    proc = run("run", str(SMOKE), "--storage", str(tmp_path), *extra, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "smoke" / "tune").exists()


def test_bad_yaml_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjectives: [\n")
    proc = run("run", str(bad), "--storage", str(tmp_path), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ncsearch run: error: ") and "invalid YAML" in proc.stderr


def test_existing_search_needs_resume_and_resume_needs_a_search(tmp_path):
    proc = run("run", str(SMOKE), "--storage", str(tmp_path), "--resume", timeout=300)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr
    (tmp_path / "smoke" / "tune").mkdir(parents=True)
    proc = run("run", str(SMOKE), "--storage", str(tmp_path), timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr
