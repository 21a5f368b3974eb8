"""One masked-LM toolkit (ncsearch.training: mlm_mask, adamw, linear_warmup_decay) with each caller's
arithmetic unchanged.

Masking, the optimizer and the schedule were once written separately in training, MLM adaptation
(whose adapted model is cached under a key that holds no code), GLUE and the collapse study. These
tests pin what each caller computed before they were merged:

- masking: SHA-256 digests of the masked batches, recorded with the separate implementations of
  commit b46a3cb (CPU torch generators and the pinned MiniLM tokenizer make them machine-independent;
  should a torch upgrade change its CPU random streams, re-record them from that commit's code);
- optimizer and schedule: each caller's previous construction, reproduced verbatim below, stepped
  side by side with the shared one on the same machine, must give bitwise-equal weights.
"""

from __future__ import annotations

import copy
import hashlib
import math

import pytest
import torch

from ncsearch.training import IGNORE_INDEX, MLMBatches, chunk_corpus, linear_warmup_decay, mlm_mask

TEXTS = [
    "The nurse said that she would come back tomorrow morning to check on the patient again.",
    "He is an actor.",
    "A short one.",
    "Counterfactual augmentation swaps gendered words such as he and she, actor and actress, king and queen.",
]


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        assert t.dtype == torch.long
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ----- masking: pinned to the outputs of the three former implementations ---------------------------


@pytest.mark.parametrize(
    ("batch_size", "probability", "expected"), [(6, 0.15, "2a6ea7276792f7e5"), (64, 0.3, "62a54145b51846e9")]
)
def test_training_batches_are_masked_as_before(minilm_tokenizer, batch_size, probability, expected):
    examples = chunk_corpus(TEXTS * 5, minilm_tokenizer, max_length=16)
    batches = MLMBatches(examples, minilm_tokenizer, batch_size=batch_size, mlm_probability=probability, seed=7)
    assert _digest([v for step in range(4) for v in batches.global_batch(step).values()]) == expected


def test_adaptation_masks_as_before(minilm_tokenizer):
    from ncsearch._adapt import mask_tokens, pack_blocks

    tok = minilm_tokenizer
    blocks = pack_blocks(tok, TEXTS * 10, 16)
    gen = torch.Generator().manual_seed(0)
    out: list[torch.Tensor] = []
    for replace_all in (False, False, True, False):  # one generator through training and scoring draws
        out += mask_tokens(blocks, tok, 0.15, gen, replace_all=replace_all)
    assert _digest(out) == "7a5570f620049b01"
    # one block at a tiny probability: nothing is drawn, so the fallback picks one position each time
    gen = torch.Generator().manual_seed(5)
    out = []
    for replace_all in (False, True, False, True):
        out += mask_tokens(blocks[:1], tok, 1e-4, gen, replace_all=replace_all)
    assert [int((labels != IGNORE_INDEX).sum()) for labels in out[1::2]] == [1, 1, 1, 1]
    assert _digest(out) == "b56173220c034ffe"


def test_collapse_study_masks_as_before(tiny_mlm, monkeypatch):
    import ncsearch.heads
    from ncsearch.collapse import collapse_study

    model, tok = tiny_mlm
    seen: list[torch.Tensor] = []
    encode = ncsearch.heads.encode

    def recording_encode(m, input_ids, attention_mask=None):
        seen.append(input_ids.clone())  # the masked batch the study reads features from
        return encode(m, input_ids, attention_mask)

    monkeypatch.setattr(ncsearch.heads, "encode", recording_encode)
    texts = ["he said that she would come home.", "his sister and her brother met there.",
             "the doctor said he was tired.", "she told him about her day."] * 3
    vocab = tok.convert_tokens_to_ids(["he", "she", "his", "her", "him", "said"])
    collapse_study(model, tok, texts, {"v": vocab}, n_boot=5, batch_size=5, positions="masked", mlm_probability=0.3)
    assert len(seen) == 3 and sum(int((s == tok.mask_token_id).sum()) for s in seen) == 31
    assert _digest(seen) == "c142e08cefa5951b"


@pytest.mark.parametrize("replace_all", [False, True])
def test_mlm_mask_makes_the_documented_draws(replace_all):
    ids = torch.arange(10, 70).view(4, 15)
    candidates = torch.ones_like(ids, dtype=torch.bool)
    candidates[:, 0] = False
    gen = torch.Generator().manual_seed(3)
    masked, labels = mlm_mask(ids, candidates, gen, probability=0.5, mask_id=1, vocab_size=100, replace_all=replace_all)
    replay = torch.Generator().manual_seed(3)
    chosen = (torch.rand(ids.shape, generator=replay) < 0.5) & candidates
    if not replace_all:
        torch.rand(ids.shape, generator=replay)
        torch.randint(100, ids.shape, generator=replay)
    assert torch.equal(gen.get_state(), replay.get_state())
    assert torch.equal(labels, torch.where(chosen, ids, IGNORE_INDEX))
    assert torch.equal(masked[~chosen], ids[~chosen])
    if replace_all:
        assert (masked[chosen] == 1).all()


def test_mlm_mask_needs_a_vocabulary_for_random_tokens():
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="vocab_size"):
        mlm_mask(ids, ids.bool(), torch.Generator(), probability=0.5, mask_id=0)


# ----- schedules: each caller's factors, exactly ----------------------------------------------------


def _factors(schedule: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list[float]:
    return [schedule.lr_lambdas[0](step) for step in range(steps)]


def test_schedule_formulas_of_each_caller():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # training recipe and GLUE: (s + 1) / (warmup + 1), peak on the first decay step
    assert _factors(linear_warmup_decay(opt, 10, 2), 11) == [
        1 / 3, 2 / 3, 8 / 8, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    # MLM adaptation: (s + 1) / warmup, peak on the last warm-up step
    assert _factors(linear_warmup_decay(opt, 10, 2, peak_at_warmup_end=True), 11) == [
        1 / 2, 2 / 2, 8 / 8, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    # the factor is not saved in the scheduler's state (training checkpoints keep their format)
    assert linear_warmup_decay(opt, 10, 2).state_dict()["lr_lambdas"] == [None]


# ----- optimizers: the shared builder against each caller's former one -------------------------------


def _old_bert_groups(model, weight_decay, *, layer_norm_names):
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        norm = "LayerNorm" in name or (layer_norm_names and "layer_norm" in name)
        (no_decay if param.ndim < 2 or norm else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _old_schedule(optimizer, total, warmup, ramp):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / ramp
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def test_recipe_optimizer_and_schedule_unchanged(tiny_mlm):
    from types import SimpleNamespace

    from ncsearch.heads import sparse_mlm_loss
    from ncsearch.training._recipe import _build_optimizer, _build_scheduler

    model, tok = tiny_mlm
    ours, theirs = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    train = SimpleNamespace(lr=1e-3, weight_decay=0.01, steps=6, warmup_ratio=0.2)
    opt = _build_optimizer(ours, train)
    sched = _build_scheduler(opt, train)
    ref = torch.optim.AdamW(_old_bert_groups(theirs, 0.01, layer_norm_names=True), lr=1e-3, fused=True)
    warmup = math.ceil(0.2 * 6)
    ref_sched = _old_schedule(ref, 6, warmup, warmup + 1)
    batches = MLMBatches(chunk_corpus(TEXTS * 5, tok, max_length=16), tok, batch_size=6, mlm_probability=0.3, seed=1)
    for step in range(6):
        batch = batches.batch(step)
        for m, o, s in ((ours, opt, sched), (theirs, ref, ref_sched)):
            torch.manual_seed(step)
            loss = sparse_mlm_loss(m, batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            s.step()
    assert opt.defaults["fused"] is True
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_adaptation_optimizer_and_schedule_unchanged(tiny_mlm, monkeypatch):
    import ncsearch.training
    from ncsearch._adapt import AdaptSettings, adapt_mlm, pack_blocks

    model, tok = tiny_mlm
    blocks = pack_blocks(tok, TEXTS * 10, 16)
    settings = AdaptSettings(steps=8, batch_size=4, max_length=16, lr=5e-3, warmup_ratio=0.25, eval_blocks=4)

    def adapt(m):
        adapt_mlm(m, tok, blocks, blocks[:4], settings, threads=1, report=lambda _: None)
        return m.state_dict()

    ours = adapt(copy.deepcopy(model))

    def old_optimizer(m, *, lr, weight_decay, fused=False, extra_groups=()):
        assert not fused and not extra_groups
        return torch.optim.AdamW(_old_bert_groups(m, weight_decay, layer_norm_names=False), lr=lr)

    def old_schedule(optimizer, total, warmup, *, peak_at_warmup_end=False):
        assert peak_at_warmup_end and warmup == max(1, round(settings.warmup_ratio * settings.steps))
        return _old_schedule(optimizer, total, warmup, warmup)

    monkeypatch.setattr(ncsearch.training, "adamw", old_optimizer)
    monkeypatch.setattr(ncsearch.training, "linear_warmup_decay", old_schedule)
    theirs = adapt(copy.deepcopy(model))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not torch.equal(ours["cls.predictions.transform.dense.weight"],
                           model.state_dict()["cls.predictions.transform.dense.weight"])  # it did train


def test_glue_optimizer_and_schedule_unchanged(tiny_mlm, data_root, monkeypatch):
    import ncsearch.training
    from ncsearch.evaluate.glue import GlueBenchmark

    model, tok = tiny_mlm

    def score():
        bench = GlueBenchmark(data_root, limit=24, seed=3, train_batch_size=8, warmup_ratio=0.3, tasks=("stsb", "rte"))
        result = bench.score(model, tok)
        return result.details["tasks"][["first_loss", "last_loss"]].to_numpy(), result.details["examples"]["prediction"]

    ours = score()

    def old_optimizer(encoder, *, lr, weight_decay, fused=False, extra_groups=()):
        assert not fused
        (head,) = extra_groups
        return torch.optim.AdamW([
            {"params": [p for p in encoder.parameters() if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
            {"params": [p for p in encoder.parameters() if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
            {"params": head["params"], "lr": head["lr"], "weight_decay": 0.0},
        ])

    def old_schedule(optimizer, total, warmup, *, peak_at_warmup_end=False):
        assert not peak_at_warmup_end and (total, warmup) == (9, 2)  # 3 epochs of 3 batches; int(0.3 * 9)
        return _old_schedule(optimizer, total, warmup, warmup + 1)

    monkeypatch.setattr(ncsearch.training, "adamw", old_optimizer)
    monkeypatch.setattr(ncsearch.training, "linear_warmup_decay", old_schedule)
    theirs = score()
    assert (ours[0] == theirs[0]).all() and (ours[1].to_numpy() == theirs[1].to_numpy()).all()
