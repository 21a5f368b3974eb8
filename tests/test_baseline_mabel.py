"""MABEL: entailment pairs and their counterfactuals, the contrastive and alignment losses on
hand-made embeddings, and one training step on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ncsearch.data import EntailmentPair, load_entailment_pairs, load_gender_words
from ncsearch.debias import MABEL, CounterfactualSwapper, StepContext, get_baseline
from ncsearch.debias._mabel import CounterfactualPair, alignment_loss, counterfactual_pairs, info_nce
from ncsearch.errors import DataError
from gloo_group import gloo_group

# ----- data -----------------------------------------------------------------------------------------


def test_offline_corpus_is_rte_entailment_and_mrpc_paraphrase_pairs(data_root):
    pairs = load_entailment_pairs(data_root)
    rte = [p for p in pairs if p.source == "RTE"]
    mrpc = [p for p in pairs if p.source == "MRPC"]
    assert (len(rte), len(mrpc)) == (1249, 2473)  # of 2490 RTE / 3668 MRPC train rows
    assert len(pairs) == len(rte) + len(mrpc) and pairs[: len(rte)] == rte  # RTE first, file order
    # RTE train row 0 is not_entailment; row 1 is the first entailment pair
    assert rte[0].premise.startswith("A place of sorrow, after Pope John Paul II died")
    assert rte[0].hypothesis == "Pope Benedict XVI is the new leader of the Roman Catholic Church."
    assert mrpc[0].premise.startswith("Amrozi accused his brother")


def test_snli_mnli_without_files_names_the_path_and_the_pull_command(tmp_path):
    with pytest.raises(DataError, match=r"nli/snli_1\.0_train\.jsonl.*'ncsearch data pull --only nli' fetches it"):
        load_entailment_pairs(tmp_path, "snli_mnli")


def test_snli_mnli_reads_entailment_rows_of_both_files(tmp_path):
    (tmp_path / "nli").mkdir()
    rows = [
        {"gold_label": "entailment", "sentence1": "A man sleeps.", "sentence2": "A person sleeps."},
        {"gold_label": "contradiction", "sentence1": "A man sleeps.", "sentence2": "A man runs."},
        {"gold_label": "-", "sentence1": "x", "sentence2": "y"},
    ]
    (tmp_path / "nli" / "snli_1.0_train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "nli" / "multinli_1.0_train.jsonl").write_text(json.dumps(
        {"gold_label": "entailment", "sentence1": "She reads.", "sentence2": "Someone reads."}) + "\n")
    assert load_entailment_pairs(tmp_path, "snli_mnli") == [
        EntailmentPair("A man sleeps.", "A person sleeps.", "SNLI"),
        EntailmentPair("She reads.", "Someone reads.", "MNLI"),
    ]


def test_counterfactual_pairs_swap_both_sentences_and_drop_ungendered_pairs(data_root):
    swap = CounterfactualSwapper(load_gender_words(data_root).pairs)
    pairs = [
        EntailmentPair("A man is talking to his wife on the phone.", "A man is on the phone.", "SNLI"),
        EntailmentPair("Two dogs run in a field.", "Animals are outside.", "SNLI"),
        EntailmentPair("The committee met on Monday.", "She was there.", "SNLI"),
    ]
    assert counterfactual_pairs(pairs, swap) == [
        CounterfactualPair(
            "A man is talking to his wife on the phone.",
            "A man is on the phone.",
            "A woman is talking to her husband on the phone.",
            "A woman is on the phone.",
        ),
        # a gendered word in only one sentence: the other travels unchanged
        CounterfactualPair("The committee met on Monday.", "She was there.", "The committee met on Monday.", "He was there."),
    ]


def test_mabel_trains_on_the_gendered_offline_pairs(data_root):
    baseline = MABEL(data_root=data_root)
    pairs = baseline.pairs()
    assert len(pairs) == 1274  # of 3722 RTE + MRPC pairs, those with a gendered word
    assert all(p.aug_premise != p.premise or p.aug_hypothesis != p.hypothesis for p in pairs)
    corpus = baseline.corpus()
    assert corpus[:2] == [pairs[0].premise, pairs[0].hypothesis]
    assert pairs[0].aug_premise in corpus  # the counterfactuals are part of the (vocabulary) corpus


def test_preflight_checks_the_files_of_the_chosen_corpus(data_root, tmp_path):
    from ncsearch.debias import MABELOptions

    MABEL(data_root=data_root).preflight("unused")  # the mirror holds GLUE and the word lists
    with pytest.raises(DataError, match=r"nli/snli_1\.0_train\.jsonl"):
        MABEL(data_root=data_root, options=MABELOptions(corpus="snli_mnli")).preflight("unused")


# ----- losses on hand-made embeddings ---------------------------------------------------------------


def test_info_nce_on_hand_made_embeddings():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cosines: [[1, 1/sqrt2], [0, 1/sqrt2]]; at tau = 0.5 the logits are [[2, sqrt2], [0, sqrt2]]
    r2 = math.sqrt(2.0)
    expected = ((math.log(math.exp(2) + math.exp(r2)) - 2) + (math.log(1 + math.exp(r2)) - r2)) / 2
    assert float(info_nce(anchors, positives, 0.5)) == pytest.approx(expected, rel=1e-6)
    # cosine similarity: the lengths of the embeddings do not matter
    assert float(info_nce(3 * anchors, 0.25 * positives, 0.5)) == pytest.approx(expected, rel=1e-6)
    # a lower temperature sharpens: the loss of this (correctly ordered) batch falls
    assert float(info_nce(anchors, positives, 0.05)) < expected


def test_alignment_loss_on_hand_made_embeddings():
    eye = torch.eye(2)
    tau = 0.5
    # identical similarity structure: no loss
    assert float(alignment_loss(eye, eye, 2 * eye, eye, tau)) == pytest.approx(0.0, abs=1e-7)
    # S_orig = I; S_aug = cos(p^_i, h^_j) = [[1/sqrt2, 0], [1/sqrt2, 1]] (h^_0 = (1, 1), h^_1 = (0, 1))
    aug_hypotheses = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2.0)
    expected = ((1 - r) ** 2 + r**2) / 2 / tau**2  # row 0: (1 - r)^2 + 0; row 1: r^2 + 0
    assert float(alignment_loss(eye, eye, eye, aug_hypotheses, tau)) == pytest.approx(expected, rel=1e-6)


def _gather_worker(rank: int, init_file: str, out_dir: str) -> None:
    from ncsearch.debias._mabel import _gather_rows

    torch.set_num_threads(1)
    with gloo_group(rank, 2, f"file://{init_file}"):
        rows = _EMBEDDINGS[[0, 1, 2] if rank == 0 else [3, 4]].clone().requires_grad_(True)  # uneven shares
        every = _gather_rows(rows, [3, 2])
        loss = info_nce(every, every.flip(0), 0.5)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": rows.grad}, f"{out_dir}/rank{rank}.pt")


_EMBEDDINGS = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [1.0, 1.0, -1.0], [0.3, -0.2, 1.0], [-1.0, 0.5, 0.5]])


def test_gathered_negatives_give_two_workers_the_loss_and_gradient_of_one(tmp_path):
    import torch.multiprocessing as mp

    whole = _EMBEDDINGS.clone().requires_grad_(True)
    loss = info_nce(whole, whole.flip(0), 0.5)
    loss.backward()
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for part in parts:
        assert float(part["loss"]) == pytest.approx(float(loss.detach()), rel=1e-6)
    # each worker's rows get the gradient of every worker's (identical) loss; DDP then divides by 2
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]) / 2, whole.grad)


# ----- one step on the tiny model --------------------------------------------------------------------


@pytest.fixture()
def mabel_setup(data_root, tiny_mlm):
    model, tokenizer = tiny_mlm
    baseline = get_baseline("mabel")(data_root=data_root)
    baseline.setup(tokenizer, 0, 1, 5, device=torch.device("cpu"), batch_size=4, max_length=32)
    return baseline, baseline.prepare_model(model), tokenizer


def test_batch_holds_the_pairs_unmasked_then_masked(mabel_setup, data_root, minilm_tokenizer):
    baseline, _, tokenizer = mabel_setup
    batch = baseline.batch(3)
    indices = baseline.sampler.global_indices(3)
    pairs = [baseline.pairs()[i] for i in indices]
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape[0] == 8 * 4  # 4 pairs x (p, h, p^, h^) x (unmasked, masked)
    # row 4 + 1 is the second pair's hypothesis, unmasked
    expected = tokenizer(pairs[1].hypothesis, truncation=True, max_length=32)["input_ids"]
    assert ids[5, : len(expected)].tolist() == expected and int(mask[5].sum()) == len(expected)
    assert (labels[:16] == -100).all()
    masked_rows, chosen = ids[16:], labels[16:] != -100
    assert chosen.any() and torch.equal(torch.where(chosen, ids[:16], masked_rows), ids[:16])
    assert torch.equal(labels[16:][chosen], ids[:16][chosen])  # labels hold the original tokens
    assert [baseline.epoch_of(s) for s in (3, 318, 319)] == [0, 0, 1]  # 4 of the 1274 pairs a step
    again = baseline.batch(3)
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # a pure function of the step

    # two workers hold the same global batch and masking, split by pair
    shares = []
    for rank in (0, 1):
        other = MABEL(data_root=data_root)
        other.setup(minilm_tokenizer, rank, 2, 5, batch_size=4, max_length=32)
        shares.append(other.batch(3))
    width = ids.shape[1]
    for part in ("input_ids", "labels"):
        for half in (0, 1):  # unmasked, masked
            for k in range(4):  # p, h, p^, h^
                whole = batch[part][16 * half + 4 * k : 16 * half + 4 * k + 4]
                split = [s[part][8 * half + 2 * k : 8 * half + 2 * k + 2] for s in shares]
                pad = -100 if part == "labels" else tokenizer.pad_token_id
                split = [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=pad) for s in split]
                assert torch.equal(torch.cat(split), whole), (part, half, k)


def test_step_terms_on_the_tiny_model(mabel_setup):
    from ncsearch.heads import SparseMLM, encode

    baseline, model, _ = mabel_setup
    assert baseline.mlm_stream is False and baseline.paper_alpha == 10.0
    ctx = StepContext(0, SparseMLM(model), model, torch.device("cpu"), None, None)
    terms = baseline.step_terms(ctx)
    assert sorted(terms.losses) == ["mabel_alignment", "mabel_contrastive", "mabel_mlm"]
    total = sum(terms.losses.values())
    assert torch.isfinite(total)

    # recompute every term on its own from the same batch (tiny_mlm is in eval mode: no dropout)
    batch = baseline.batch(0)
    with torch.no_grad():
        cls = encode(model, batch["input_ids"][:16], batch["attention_mask"][:16])[:, 0]
        p, h, pa, ha = cls.reshape(4, 4, -1).unbind(0)
        out = SparseMLM(model)(batch["input_ids"][16:], batch["attention_mask"][16:], batch["labels"][16:])
    contrastive = info_nce(torch.cat([p, pa]), torch.cat([h, ha]), 0.05)
    assert float(terms.losses["mabel_contrastive"].detach()) == pytest.approx(float(contrastive), rel=1e-5)
    assert float(terms.losses["mabel_alignment"].detach()) == pytest.approx(0.05 * float(alignment_loss(p, h, pa, ha, 0.05)), rel=1e-5)
    assert float(terms.losses["mabel_mlm"].detach()) == pytest.approx(0.1 * float(out.loss), rel=1e-5)

    # NC3 reads the unmasked rows
    assert terms.nc3 is not None and terms.nc3.labels is None
    assert torch.equal(terms.nc3.input_ids, batch["input_ids"][:16])
    assert terms.nc3.hidden.shape[:2] == batch["input_ids"][:16].shape

    total.backward()
    assert model.get_input_embeddings().weight.grad is not None
    assert model.bert.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0


def test_describe_records_the_substitute_corpus(data_root):
    described = MABEL(data_root=data_root).describe()
    assert described["mabel.corpus"] == "offline: GLUE RTE+MRPC entailment pairs (substitute for SNLI+MNLI)"
    assert (described["mabel.temperature"], described["mabel.alignment_weight"], described["mabel.mlm_weight"]) == (0.05, 0.05, 0.1)
