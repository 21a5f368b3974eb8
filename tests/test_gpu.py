"""GPU plumbing checked without a GPU: fractional GPU shares reach Ray Train's ScalingConfig, and
bench/gpu_check.py refuses in one line where there is no CUDA GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("gpus", "use_gpu", "per_worker"), [
    (0.25, True, {"CPU": 1.0, "GPU": 0.25}),
    (1, True, {"CPU": 1.0, "GPU": 1.0}),
    (0, False, {"CPU": 1.0}),
])
def test_gpus_per_worker_reaches_the_scaling_config(tmp_path, gpus, use_gpu, per_worker):
    """A quarter GPU per worker: Ray packs four such trials on one GPU. Built, not run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import make_spec

    from ncsearch.training._trial import build_trainer

    spec = make_spec(**{"resources.gpus_per_worker": gpus})
    trainer = build_trainer(spec, data_root=tmp_path, storage_path=tmp_path, name="quarter", model_path="unused")
    scaling = trainer.scaling_config
    assert scaling.use_gpu is use_gpu
    assert scaling.num_workers == 1
    assert scaling.resources_per_worker == per_worker


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: gpu_check would measure")
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_2():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--skip-search"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == ["bench/gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False); nothing to measure"]
