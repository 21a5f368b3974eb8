"""The training loop's pure parts: chunking, deterministic sharded MLM batches, seeds, schedule."""

from __future__ import annotations

import pytest
import torch

from ncsearch.training import MLMBatches, chunk_corpus, derive_seed
from ncsearch.training._data import special_affixes

TEXTS = [
    "The nurse said that she would come back tomorrow morning to check on the patient again.",
    "He is an actor.",
    "A short one.",
    "Counterfactual augmentation swaps gendered words such as he and she, actor and actress, king and queen.",
]


def test_special_affixes_read_the_tokenizer_template(minilm_tokenizer):
    tok = minilm_tokenizer
    assert special_affixes(tok) == ([tok.cls_token_id], [tok.sep_token_id])


def test_chunks_cover_each_text_within_max_length(minilm_tokenizer):
    tok = minilm_tokenizer
    chunks = chunk_corpus(TEXTS, tok, max_length=10)
    assert all(len(c) <= 10 and c[0] == tok.cls_token_id and c[-1] == tok.sep_token_id for c in chunks)
    bodies = [c[1:-1] for c in chunks]
    joined = [i for b in bodies for i in b]
    expected = [i for t in TEXTS for i in tok(t, add_special_tokens=False)["input_ids"]]
    # nothing is lost except trailing pieces shorter than 2 tokens
    first = tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert bodies[0] == first[:8] and bodies[1] == first[8:16]
    assert len(expected) - len(joined) <= len(TEXTS)
    assert chunk_corpus(["He is an actor."], tok, max_length=64) == [tok("He is an actor.")["input_ids"]]


def test_max_length_must_leave_room_for_text(minilm_tokenizer):
    from ncsearch.errors import DataError

    with pytest.raises(DataError, match="train.max_length 2 leaves no room"):
        chunk_corpus(TEXTS, minilm_tokenizer, max_length=2)


def _batches(tok, **kw):
    examples = chunk_corpus(TEXTS * 5, tok, max_length=16)
    args = dict(batch_size=6, mlm_probability=0.15, seed=7) | kw
    return MLMBatches(examples, tok, **args)


def test_worker_shards_reassemble_the_global_batch(minilm_tokenizer):
    tok = minilm_tokenizer
    one = _batches(tok).batch(3)
    shards = [_batches(tok, rank=r, world_size=3).batch(3) for r in range(3)]
    width = one["input_ids"].shape[1]
    for key, pad in (("input_ids", tok.pad_token_id), ("attention_mask", 0), ("labels", -100)):
        padded = [torch.nn.functional.pad(s[key], (0, width - s[key].shape[1]), value=pad) for s in shards]
        assert torch.equal(torch.cat(padded), one[key]), key


def test_masking_is_bert_style_and_a_function_of_the_step(minilm_tokenizer):
    tok = minilm_tokenizer
    batches = _batches(tok, batch_size=64, mlm_probability=0.3)
    b = batches.batch(0)
    assert torch.equal(b["input_ids"], batches.batch(0)["input_ids"])  # same step, same draw
    assert not torch.equal(b["labels"], batches.batch(1)["labels"])
    chosen = b["labels"] != -100
    special = torch.isin(b["labels"], torch.tensor(tok.all_special_ids))
    assert not special.any() and not (chosen & (b["attention_mask"] == 0)).any()
    real = (b["attention_mask"] == 1) & ~torch.isin(b["input_ids"], torch.tensor([tok.cls_token_id, tok.sep_token_id]))
    rate = chosen.sum() / real.sum()
    assert 0.2 < float(rate) < 0.4
    as_mask = (b["input_ids"] == tok.mask_token_id) & chosen
    assert 0.7 < float(as_mask.sum() / chosen.sum()) < 0.9  # 80% [MASK]
    # unchosen positions keep their token
    original = batches.global_batch(0)
    assert torch.equal(torch.where(chosen, b["labels"], b["input_ids"])[~chosen], b["input_ids"][~chosen])
    assert original["input_ids"].shape[0] == 64


def test_each_epoch_is_a_permutation_and_epochs_differ(minilm_tokenizer):
    tok = minilm_tokenizer
    batches = _batches(tok, batch_size=5)
    n = len(batches)
    seen = [i for step in range(n) for i in batches.global_indices(step)]  # 5 epochs in order
    epochs = [seen[e * n:(e + 1) * n] for e in range(5)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1]


def test_batch_smaller_than_world_is_refused(minilm_tokenizer):
    from ncsearch.errors import DataError

    with pytest.raises(DataError, match="batch_size 2 is smaller than the 3 workers"):
        _batches(minilm_tokenizer, batch_size=2, world_size=3)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    values = {derive_seed(s, k, r) for s in range(3) for k in range(3) for r in range(3)}
    assert len(values) == 27 and all(0 <= v < 2**63 for v in values)


def test_schedule_warms_up_then_decays_to_zero():
    from types import SimpleNamespace

    from ncsearch.training._recipe import _build_optimizer, _build_scheduler

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    train = SimpleNamespace(lr=1.0, weight_decay=0.1, steps=10, warmup_ratio=0.2)
    opt = _build_optimizer(model, train)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]  # only the Linear weight decays
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    sched = _build_scheduler(opt, train)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert opt.param_groups[0]["lr"] == 0.0


def test_failure_reason_finds_the_workers_trial_error():
    from ray.train.v2.api.exceptions import WorkerGroupError

    from ncsearch.errors import TrialError
    from ncsearch.training import failure_reason

    err = WorkerGroupError("boom", {1: RuntimeError("other"), 0: TrialError("non-finite loss at step 3: loss=nan")})
    assert failure_reason(err) == "non-finite loss at step 3: loss=nan"
    plain = WorkerGroupError("boom", {0: ValueError("bad value\nmore")})
    assert failure_reason(plain) == "worker 0 failed: ValueError: bad value"
