"""Two gloo processes on halves of a batch give the same means and NC3 value as one process on all of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ncsearch.collapse import NC3Regularizer, select_pairs
from conftest_search import free_port
from gloo_group import gloo_group

V = [3, 7, 11, 20, 33]
VOCAB, D, B, T = 40, 5, 6, 9
MODES = ("cumulative", "ema", "batch")


def _data(steps: int = 3):
    g = torch.Generator().manual_seed(11)
    pool = torch.tensor([3, 7, 11, 20, 1, 2, 5, 7])
    out = []
    for step in range(steps):
        original = pool[torch.randint(0, len(pool), (B, T), generator=g)]
        if step == 1:
            original[:B // 2][original[:B // 2] == 20] = 1  # rank 0 sees no class 20 in step 1
        mask = torch.ones(B, T, dtype=torch.long)
        mask[2, 5:] = 0
        chosen = (torch.rand(B, T, generator=g) < 0.4) & mask.bool()
        labels = torch.where(chosen, original, torch.full_like(original, -100))
        input_ids = torch.where(chosen, torch.zeros_like(original), original)
        out.append((torch.randn(B, T, D, generator=g, dtype=torch.float64), input_ids, labels, mask))
    return out


def _weight():
    return torch.randn(VOCAB, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))


def _run(rows: slice, means: str):
    reg = NC3Regularizer(V, kind="both", means=means)
    for hidden, input_ids, labels, mask in _data():
        reg.update(*select_pairs(hidden[rows], input_ids=input_ids[rows], labels=labels[rows],
                                 attention_mask=mask[rows], positions="all", label_shift=1))
    weight = _weight().requires_grad_(True)
    value, info = reg.loss(weight)
    value.backward()
    mu, observed = reg.means()
    return {"value": float(value.detach()), "mu": mu, "observed": observed, "grad": weight.grad, **info}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    with gloo_group(rank, world, f"tcp://127.0.0.1:{port}"):
        half = B // world
        for means in MODES:  # one spawn for every mode: process start-up dominates the test's time
            torch.save(_run(slice(rank * half, (rank + 1) * half), means), Path(out_dir) / f"{means}{rank}.pt")


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("means", MODES)
def test_two_processes_on_halves_equal_one_process_on_the_batch(ddp_results, means):
    whole = _run(slice(0, B), means)
    assert whole["classes"] == 4  # class 33 never occurs
    for rank in range(2):
        part = torch.load(ddp_results / f"{means}{rank}.pt")
        assert part["value"] == pytest.approx(whole["value"], abs=1e-6)
        assert part["unc3"] == pytest.approx(whole["unc3"], abs=1e-6)
        assert torch.equal(part["observed"], whole["observed"])
        torch.testing.assert_close(part["mu"], whole["mu"], atol=1e-6, rtol=0)
        torch.testing.assert_close(part["grad"], whole["grad"], atol=1e-6, rtol=0)
    # the halves alone differ from the whole: the all-reduce is what makes them agree
    alone = _run(slice(0, B // 2), means)
    assert abs(alone["value"] - whole["value"]) > 1e-3
