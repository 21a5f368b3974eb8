"""Evaluation split over a trial's workers equals single-process evaluation (`ncsearch.evaluate._shard`).

Two gloo workers each score their share of every benchmark's batches under `shard_scoring` and
exchange the results; every metric must equal the single-process run's up to float rounding, and each
worker must have run the encoder on only part of the batches.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from gloo_group import gloo_group
from test_baseline_contract import tiny_model_dir  # noqa: F401  (a saved tiny BERT, a fixture)

from ncsearch.evaluate import run_suite
from ncsearch.evaluate._shard import ShardGroup, map_shards, shard_scoring

# Every benchmark family that goes through map_shards: score_masked (stereoset, crows_pairs,
# perplexity, bec_pro, winobias), SEAT's sentence embeddings, held-out collapse, GLUE's tasks.
SUITE = ["stereoset", "crows_pairs", "perplexity", "bec_pro", "winobias", "seat", "collapse", "glue"]
LIMITS = {"stereoset": 24, "crows_pairs": 12, "perplexity": 3, "bec_pro": 12, "winobias": 12, "seat": 6,
          "collapse": 12}
OPTIONS = {"seat": {"tests": ["sent-weat6"], "n_samples": 200},
           "glue": {"tasks": ["rte", "mrpc"], "max_train": 16, "max_dev": 16, "epochs": 1}}
SETTINGS = {"limits": LIMITS, "options": OPTIONS, "batch_size": 4, "domains": ["gender"], "progress": False}


class _CountForwards:
    """Counts the encoder's forward calls (whatever the benchmark does with the model)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        model.base_model.embeddings.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def _sharded_worker(rank: int, model_dir: str, data_root: str, out_dir: str, init_file: str) -> None:
    from ncsearch.models import load_mlm

    torch.set_num_threads(1)
    with gloo_group(rank, 2, f"file://{init_file}"):
        model, tokenizer = load_mlm(model_dir)
        counter = _CountForwards(model)
        with shard_scoring(ShardGroup.from_torch()):
            result = run_suite(model, tokenizer, SUITE, data_root=data_root, resamples=0, **SETTINGS)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": result.metrics, "calls": counter.calls}))


def test_two_workers_score_what_one_scores(tiny_model_dir, data_root, tmp_path):
    import torch.multiprocessing as mp

    from ncsearch.models import load_mlm

    model, tokenizer = load_mlm(str(tiny_model_dir))
    counter = _CountForwards(model)
    torch.set_num_threads(1)
    alone = run_suite(model, tokenizer, SUITE, data_root=data_root, resamples=0, **SETTINGS).metrics

    mp.spawn(_sharded_worker, args=(str(tiny_model_dir), str(data_root), str(tmp_path), str(tmp_path / "init")),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for shared in ranks:
        assert set(shared["metrics"]) == set(alone)
        for key, value in alone.items():
            got = shared["metrics"][key]
            assert (math.isnan(value) and math.isnan(got)) or got == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # the work was split, not repeated: each worker ran the encoder on part of the batches, all of them together
    calls = [shared["calls"] for shared in ranks]
    assert all(0 < c < counter.calls for c in calls), (calls, counter.calls)
    assert sum(calls) == pytest.approx(counter.calls, abs=4)


def test_map_shards_is_a_plain_loop_outside_a_group():
    assert map_shards([1, 2, 3], lambda x: x * 10) == [10, 20, 30]


def test_map_shards_deals_items_round_robin_and_returns_all_in_order(monkeypatch):
    computed: list[int] = []

    class _Peer(ShardGroup):  # rank 1 of 3; the "other ranks" hand back what they computed
        def all_gather(self, value):
            others = [{i: f"item{i}" for i in range(7) if i % 3 == r} for r in (0, 2)]
            return [others[0], value, others[1]]

    def compute(i: int) -> str:
        computed.append(i)
        return f"item{i}"

    with shard_scoring(_Peer(1, 3)):
        assert map_shards(list(range(7)), compute) == [f"item{i}" for i in range(7)]
    assert computed == [1, 4]


def _reference_worker(rank: int, model_dir: str, data_root: str, out_dir: str, init_file: str) -> None:
    import os

    import numpy as np

    from ncsearch.evaluate._reference import reference_table
    from ncsearch.evaluate.perplexity import held_out_passages
    from ncsearch.models import load_mlm

    os.environ["NCSEARCH_CACHE_DIR"] = str(Path(out_dir) / "shared-cache")
    torch.set_num_threads(1)
    with gloo_group(rank, 2, f"file://{init_file}"):
        _, tokenizer = load_mlm(model_dir)
        texts = held_out_passages(data_root, 3)
        with shard_scoring(ShardGroup.from_torch()):
            computed = reference_table(model_dir, texts, tokenizer, max_length=24)  # together, rank 0 caches
            cached = reference_table(model_dir, texts, tokenizer, max_length=24)  # rank 0 reads, rank 1 receives
        np.savez(Path(out_dir, f"reference{rank}.npz"), computed=computed.logprobs, cached=cached.logprobs,
                 offsets=computed.offsets)


def test_two_workers_build_the_reference_table_one_builds(tiny_model_dir, data_root, tmp_path, monkeypatch):
    import numpy as np
    import torch.multiprocessing as mp

    from ncsearch.evaluate._reference import reference_table
    from ncsearch.evaluate.perplexity import held_out_passages
    from ncsearch.models import load_mlm

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "alone-cache"))
    _, tokenizer = load_mlm(str(tiny_model_dir))
    torch.set_num_threads(1)
    alone = reference_table(str(tiny_model_dir), held_out_passages(data_root, 3), tokenizer, max_length=24)
    mp.spawn(_reference_worker, args=(str(tiny_model_dir), str(data_root), str(tmp_path), str(tmp_path / "init")),
             nprocs=2, join=True)
    assert len(list((tmp_path / "shared-cache" / "pppl_reference").glob("*.npz"))) == 1  # written once
    for rank in (0, 1):
        with np.load(tmp_path / f"reference{rank}.npz") as got:
            assert (got["offsets"] == alone.offsets).all()
            assert got["computed"] == pytest.approx(alone.logprobs, rel=1e-5, abs=1e-6)
            assert (got["cached"] == got["computed"]).all()
