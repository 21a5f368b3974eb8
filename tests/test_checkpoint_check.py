"""`checkpoint_problem`: a damaged training checkpoint is named, file and fault, without loading a tensor;
and a training worker told to resume from one fails naming the file instead of training from step 0.
(`ncsearch run --resume` asks the same function before Ray starts: tests/test_search_storage_faults.py.)"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace

import pytest
import torch

from ncsearch.errors import TrialError
from ncsearch.training._checkpoint import TrainState, checkpoint_problem, write_checkpoint


@pytest.fixture()
def checkpoint(tmp_path, tiny_mlm):
    model, tokenizer = tiny_mlm
    state = TrainState(step=2, optimizer={"state": {0: {"exp_avg": torch.ones(5000)}}}, scheduler={}, nc3={},
                       meta={"steps": 4})
    write_checkpoint(tmp_path / "checkpoint_000002", model=model, tokenizer=tokenizer, state=state)
    return tmp_path / "checkpoint_000002"


def _cut(path):
    os.truncate(path, path.stat().st_size // 2)


def _garble(path):
    path.write_text('{"model_type": ')


@pytest.mark.parametrize(("name", "damage", "said"), [
    ("state.pt", _cut, "not a whole torch archive"),
    ("model/model.safetensors", _cut, "cut short"),
    ("model/model.safetensors", lambda p: os.truncate(p, 3), "no header"),
    ("meta.json", os.remove, "missing"),
    ("model/config.json", _garble, "not valid JSON"),
])
def test_a_damaged_checkpoint_file_is_named(checkpoint, name, damage, said):
    assert checkpoint_problem(checkpoint) is None
    damage(checkpoint / name)
    path, problem = checkpoint_problem(checkpoint)
    assert path == checkpoint / name and said in problem, (path, problem)


def test_a_worker_resuming_from_a_damaged_checkpoint_fails_naming_the_file(checkpoint):
    from ncsearch.training._recipe import TrainingRecipe

    _cut(checkpoint / "model" / "model.safetensors")
    runtime = SimpleNamespace(restored_checkpoint=lambda: contextlib.nullcontext(checkpoint))
    recipe = SimpleNamespace(runtime=runtime, spec=SimpleNamespace(trust_remote_code=False))
    with pytest.raises(TrialError) as info:
        TrainingRecipe._restore(recipe, load_model=True)
    assert f"{checkpoint / 'model' / 'model.safetensors'} is damaged (cut short" in str(info.value)
