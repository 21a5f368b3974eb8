"""NC3 paper-fidelity options: `nc3.labels: masked_input`, `nc3.means: epoch` and `nc3.preset: paper`.

Each option is checked against a transcription, in plain torch and written out here, of the paper's
NC3 code (Xu et al. 2024, github Xujxyang/Fairness-NC-main): `process_batch` (the same function in
`bec/code/main_nc.py`, `ase/finetune_both_nc.py`, `mabel/training/model_nc.py`, `adept/debias.py`),
the `Statistics` class of `ase/lib/collapse.py` (`collect_means`, `compute_means`, `similarity`, with
`normalize` from the linguistic-collapse `lib/utils.py`) and the loss `sims.std()` over the classes of
V seen so far. BEC and ASE hand `process_batch` the masked input ids; ADEPT builds a new `Statistics`
at the top of every epoch. ncsearch's loss (select_pairs + NC3Regularizer, configured from a parsed
spec) must equal the paper's on the same batches within 1e-6.
"""

from __future__ import annotations

import pytest
import torch

from ncsearch.collapse import NC3Regularizer, select_pairs
from ncsearch.config import BASELINES, Distribution, load_spec, parse_spec
from ncsearch.debias import get_baseline
from ncsearch.errors import ConfigError

C = 30  # toy vocabulary
D = 8
PAD, MASK = 0, 1
V = [3, 7, 11, 20, 25]  # the gendered subset; [MASK] and [PAD] are not in it
TOL = 1e-6


# ----- the paper's code, transcribed -------------------------------------------------------------------


def paper_process_batch(embeds: torch.Tensor, batch: torch.Tensor, masks: torch.Tensor):
    """`process_batch`: zero the padded features, pair the feature at t with the id at t + 1, keep the
    pairs whose t + 1 is a real token. `batch` is whatever ids the caller passes (BEC/ASE: masked)."""
    embeds = masks.unsqueeze(-1).to(embeds.dtype) * embeds
    y = batch[:, 1:]
    x = embeds[:, :-1]
    keep = masks[:, 1:].bool()
    return x[keep], y[keep]


def paper_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.linalg.norm(x, dim=-1, keepdim=True) + torch.finfo(x.dtype).eps)


class PaperStatistics:
    """`Statistics` (means pass only) over the full vocabulary, float32 as in the paper."""

    def __init__(self, classes: int, dim: int, dtype: torch.dtype = torch.float32):
        self.classes, self.dtype = classes, dtype
        self.eps = torch.finfo(dtype).eps
        self.counts = torch.zeros(classes, dtype=torch.int32)
        self.totals = torch.zeros(classes, dim, dtype=dtype)

    def collect_means(self, x: torch.Tensor, y: torch.Tensor) -> None:
        onehot = y[:, None] == torch.arange(self.classes)[None, :]  # N x C
        self.counts += onehot.sum(dim=0, dtype=torch.int32)
        self.totals += onehot.T.to(self.dtype) @ x.to(self.dtype)

    def compute_means(self, idxs: list[int]):
        counts = self.counts[idxs].unsqueeze(-1)
        mean = self.totals[idxs] / (counts + self.eps).to(self.dtype)
        return mean, mean.mean(dim=0)

    def similarity(self, weights: torch.Tensor, idxs: list[int]) -> torch.Tensor:
        means, mean_g = self.compute_means(idxs)
        return (paper_normalize(means - mean_g) * paper_normalize(weights[idxs])).sum(dim=1)


def paper_unc3(stats: PaperStatistics, weight: torch.Tensor, indices: list[int]) -> torch.Tensor:
    indices_have = [i for i in indices if stats.counts[i] != 0]
    return stats.similarity(weight, indices_have).std()


# ----- hand-made batches -------------------------------------------------------------------------------


def _weight() -> torch.Tensor:
    return torch.randn(C, D, generator=torch.Generator().manual_seed(11))


def _hidden(b: int, t: int, seed: int) -> torch.Tensor:
    return torch.randn(b, t, D, generator=torch.Generator().manual_seed(seed))


def _bec_batches():
    """MLM batches as BEC's `mask_tokens` leaves them: (hidden, masked input, MLM labels, attention).

    Masked targets: a V token turned [MASK] (under masked_input it leaves V), a non-V token replaced by
    a random V token (under masked_input it counts for that V class) and a V token left unchanged."""
    originals = [
        torch.tensor([[2, 3, 5, 7, 11, 4, 20, PAD], [2, 7, 9, 3, 25, 11, 4, 20], [2, 11, 3, 6, 4, PAD, PAD, PAD]]),
        torch.tensor([[2, 25, 20, 3, 5, 7, 4, PAD], [2, 3, 3, 9, 11, 4, PAD, PAD], [2, 7, 25, 5, 20, 11, 3, 4]]),
        torch.tensor([[2, 20, 7, 8, 3, 4, PAD, PAD], [2, 11, 25, 3, 7, 20, 5, 4], [2, 5, 3, 7, 4, PAD, PAD, PAD]]),
    ]
    # (row, position, input id there): [MASK], a random replacement, or the token itself
    masking = [
        [(0, 1, MASK), (0, 2, 7), (1, 4, MASK), (1, 6, 11), (2, 2, MASK)],
        [(0, 3, MASK), (0, 4, 25), (1, 2, 3), (2, 1, MASK), (2, 5, MASK)],
        [(0, 2, MASK), (1, 5, MASK), (1, 6, 20), (2, 2, MASK)],
    ]
    return [_masked_batch(original, masked, seed=100 + step) for step, (original, masked) in enumerate(zip(originals, masking))]


def _masked_batch(original: torch.Tensor, replaced: list[tuple[int, int, int]], *, seed: int):
    """(hidden, input ids, MLM labels, attention) of a batch whose (row, position) get `token` in the
    input and their original token as the label."""
    inputs = original.clone()
    labels = torch.full_like(original, -100)
    for row, pos, token in replaced:
        labels[row, pos] = original[row, pos]
        inputs[row, pos] = token
    return _hidden(*original.shape, seed=seed), inputs, labels, (original != PAD).long()


def _ase_batches():
    """ASE's data: the pronoun of each sentence is [MASK] in the input and the MLM label there."""
    originals = [
        torch.tensor([[2, 5, 3, 9, 11, 4, PAD], [2, 7, 6, 20, 8, 25, 4], [2, 9, 25, 3, 4, PAD, PAD]]),
        torch.tensor([[2, 11, 7, 9, 4, PAD, PAD], [2, 3, 8, 20, 7, 25, 4], [2, 20, 5, 11, 3, 4, PAD]]),
    ]
    pronouns = [[(0, 2), (1, 1), (2, 3)], [(0, 2), (1, 1), (2, 4)]]
    return [_masked_batch(original, [(row, pos, MASK) for row, pos in where], seed=200 + step)
            for step, (original, where) in enumerate(zip(originals, pronouns))]


def _adept_batches():
    """Unmasked passes (ADEPT's prompts), two epochs of three steps each."""
    g = torch.Generator().manual_seed(5)
    pool = torch.tensor([3, 7, 11, 20, 25, 5, 6, 9])
    out = []
    for step in range(6):
        ids = pool[torch.randint(0, len(pool), (3, 7), generator=g)]
        ids[:, 0] = 2
        if step % 3 == 0:  # the first step of each epoch lacks class 25 (a reset must forget it)
            ids[ids == 25] = 5
        attention = torch.ones_like(ids)
        attention[1, 5:] = 0
        ids = torch.where(attention.bool(), ids, torch.full_like(ids, PAD))
        out.append((_hidden(3, 7, seed=300 + step), ids, attention))
    return out


# ----- ncsearch, configured from a parsed spec ----------------------------------------------------------


def _spec(baseline: str = "bec", **nc3):
    return parse_spec({
        "name": "t",
        "baseline": baseline,
        "nc3": nc3,
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
    })


def _regularizer(nc3) -> NC3Regularizer:
    return NC3Regularizer(V, kind=nc3.kind, means=nc3.means, ema_momentum=nc3.ema_momentum)


def _pairs(nc3, hidden, input_ids, labels, attention):
    """The call the training recipe makes, every option taken from the spec."""
    return select_pairs(hidden, input_ids=input_ids, labels=labels, attention_mask=attention,
                        features=nc3.features, positions=nc3.positions, label_shift=nc3.label_shift,
                        label_source=nc3.labels)


def _paper_settings(**extra):
    """NC3Spec fields of preset paper without a baseline-specific table (to vary one option)."""
    base = {"alpha": 1.0, "features": "encoder", "positions": "all", "label_shift": 1, "kind": "unc3"}
    return {**base, **extra}


# ----- labels: masked_input (BEC, ASE) -------------------------------------------------------------------


@pytest.mark.parametrize("method, batches", [("bec", _bec_batches), ("ase", _ase_batches)])
def test_masked_input_labels_equal_the_papers_bec_and_ase_loss(method, batches):
    nc3 = _spec("mlm", **_paper_settings(labels="masked_input")).nc3
    weight = _weight()
    stats = PaperStatistics(C, D)
    reg = _regularizer(nc3)
    for hidden, input_ids, labels, attention in batches():
        x, y = paper_process_batch(hidden, input_ids, attention)
        stats.collect_means(x, y)
        expected = paper_unc3(stats, weight, V)
        reg.update(*_pairs(nc3, hidden, input_ids, labels, attention))
        got, info = reg.loss(weight)
        assert float(got) == pytest.approx(float(expected), abs=TOL)
        assert info["classes"] == sum(int(stats.counts[i] != 0) for i in V)
    # the paper's counts per class of V are the regularizer's
    assert reg.counts.tolist() == [float(stats.counts[i]) for i in V]


def test_masked_input_gradient_on_w_equals_the_papers():
    nc3 = _spec("mlm", **_paper_settings(labels="masked_input")).nc3
    stats = PaperStatistics(C, D)
    reg = _regularizer(nc3)
    for hidden, input_ids, labels, attention in _bec_batches():
        stats.collect_means(*paper_process_batch(hidden, input_ids, attention))
        reg.update(*_pairs(nc3, hidden, input_ids, labels, attention))
    w_paper = _weight().requires_grad_()
    paper_unc3(stats, w_paper, V).backward()
    w_ours = _weight().requires_grad_()
    reg.loss(w_ours)[0].backward()
    torch.testing.assert_close(w_ours.grad, w_paper.grad, atol=TOL, rtol=0)
    assert w_ours.grad[[i for i in range(C) if i not in V]].abs().max() == 0  # only the rows of V move


def test_original_labels_differ_from_the_papers_bec_loss_on_the_same_batch():
    """The batch really tells the two label sources apart (so the test above can fail)."""
    nc3 = _spec("mlm", **_paper_settings(labels="original")).nc3
    weight = _weight()
    stats = PaperStatistics(C, D)
    reg = _regularizer(nc3)
    for hidden, input_ids, labels, attention in _bec_batches():
        stats.collect_means(*paper_process_batch(hidden, input_ids, attention))
        reg.update(*_pairs(nc3, hidden, input_ids, labels, attention))
    assert abs(float(reg.loss(weight)[0]) - float(paper_unc3(stats, weight, V))) > 1e-3
    assert reg.counts.tolist() != [float(stats.counts[i]) for i in V]


def test_masked_input_reads_the_input_ids_at_each_target():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float64).reshape(2, 4, 1)
    original = torch.tensor([[2, 3, 5, 4], [2, 7, 4, PAD]])
    inputs = torch.tensor([[2, MASK, 7, 4], [2, 7, 4, PAD]])
    labels = torch.tensor([[-100, 3, 5, -100], [-100, 7, -100, -100]])
    attention = (original != PAD).long()
    for source, want in (("original", [3, 5, 7]), ("masked_input", [MASK, 7, 7])):
        x, y = select_pairs(hidden, input_ids=inputs, labels=labels, attention_mask=attention, positions="masked",
                            label_source=source)
        assert y.tolist() == want and x.flatten().tolist() == [1.0, 2.0, 5.0]
    # an unmasked pass: both sources are the input ids
    for source in ("original", "masked_input"):
        _, y = select_pairs(hidden, input_ids=original, labels=None, attention_mask=attention, positions="all",
                            label_shift=1, label_source=source)
        assert y.tolist() == [3, 5, 4, 7, 4]
    with pytest.raises(ConfigError, match="nc3 labels"):
        select_pairs(hidden, input_ids=inputs, labels=labels, attention_mask=attention, label_source="masked")


# ----- means: epoch (ADEPT) -------------------------------------------------------------------------------

STEPS_PER_EPOCH = 3


def _paper_adept_losses(batches, weight):
    losses = []
    for epoch in range(len(batches) // STEPS_PER_EPOCH):
        stats = PaperStatistics(C, D)  # `stats = Statistics(C, D, args.device)` inside the epoch loop
        for hidden, ids, attention in batches[epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH]:
            stats.collect_means(*paper_process_batch(hidden, ids, attention))
            losses.append(float(paper_unc3(stats, weight, V)))
    return losses


def _ncsearch_adept_losses(reg, nc3, batches, weight, first_step=0):
    losses = []
    for step, (hidden, ids, attention) in enumerate(batches[first_step:], start=first_step):
        reg.start_epoch(step // STEPS_PER_EPOCH)
        reg.update(*_pairs(nc3, hidden, ids, None, attention))
        losses.append(float(reg.loss(weight)[0]))
    return losses


def test_epoch_means_equal_the_papers_adept_loss():
    nc3 = _spec("mlm", **_paper_settings(means="epoch")).nc3
    weight, batches = _weight(), _adept_batches()
    expected = _paper_adept_losses(batches, weight)
    got = _ncsearch_adept_losses(_regularizer(nc3), nc3, batches, weight)
    assert got == pytest.approx(expected, abs=TOL)
    # cumulative means differ from the second epoch on (so the reset is what makes them equal)
    cumulative = _ncsearch_adept_losses(_regularizer(_spec("mlm", **_paper_settings()).nc3), nc3, batches, weight)
    assert cumulative[:STEPS_PER_EPOCH] == pytest.approx(expected[:STEPS_PER_EPOCH], abs=TOL)
    assert abs(cumulative[STEPS_PER_EPOCH] - expected[STEPS_PER_EPOCH]) > 1e-3


@pytest.mark.parametrize("stop", [2, 3, 4])  # mid-epoch, exactly at the boundary, one step into epoch 1
def test_epoch_means_resume_from_state_dict(stop):
    nc3 = _spec("mlm", **_paper_settings(means="epoch")).nc3
    weight, batches = _weight(), _adept_batches()
    expected = _paper_adept_losses(batches, weight)
    first = _regularizer(nc3)
    head = _ncsearch_adept_losses(first, nc3, batches[:stop], weight)
    state = first.state_dict()
    assert state["epoch"] == (stop - 1) // STEPS_PER_EPOCH
    resumed = _regularizer(nc3)
    resumed.load_state_dict(state)
    tail = _ncsearch_adept_losses(resumed, nc3, batches, weight, first_step=stop)
    assert head + tail == pytest.approx(expected, abs=TOL)


def test_start_epoch_clears_only_epoch_means_and_never_goes_back():
    x = torch.randn(4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 7, 3, 11])
    for means in ("cumulative", "ema", "batch", "epoch"):
        reg = NC3Regularizer(V, means=means)
        assert reg.start_epoch(0) is False
        reg.update(x, y)
        before = reg.counts.clone()
        assert reg.start_epoch(0) is False  # same epoch: nothing happens
        cleared = reg.start_epoch(1)
        assert cleared is (means == "epoch")
        assert reg.counts.tolist() == ([0.0] * len(V) if means == "epoch" else before.tolist())
        assert reg.epoch == 1
        with pytest.raises(ValueError, match="go back"):
            reg.start_epoch(0)
    with pytest.raises(RuntimeError, match="start_epoch"):
        NC3Regularizer(V, means="epoch").update(x, y)


def test_state_without_epoch_loads():
    """Checkpoints written before per-epoch means carry no "epoch" key."""
    reg = NC3Regularizer(V)
    reg.update(torch.randn(2, D, dtype=torch.float64), torch.tensor([3, 7]))
    state = reg.state_dict()
    del state["epoch"]
    again = NC3Regularizer(V)
    again.load_state_dict(state)
    assert again.epoch is None and torch.equal(again.sums, reg.sums)


# ----- preset: paper ----------------------------------------------------------------------------------------

PAPER_ALPHA = {"bec": 100.0, "ase": 100.0, "mabel": 10.0, "adept": 5.0}


def _registered(name: str) -> None:
    if name not in BASELINES:
        pytest.skip(f"baseline {name!r} is not registered in this checkout")


@pytest.mark.parametrize("name", sorted(PAPER_ALPHA))
def test_paper_preset_sets_the_papers_alpha_per_baseline(name):
    _registered(name)
    assert get_baseline(name).paper_alpha == PAPER_ALPHA[name]
    nc3 = _spec(name, preset="paper").nc3
    assert nc3.alpha == PAPER_ALPHA[name]
    assert (nc3.features, nc3.positions, nc3.label_shift, nc3.kind) == ("encoder", "all", 1, "unc3")


@pytest.mark.parametrize("name, labels, means", [
    ("bec", "masked_input", "cumulative"), ("ase", "masked_input", "cumulative"),
    ("mabel", "original", "cumulative"), ("adept", "original", "epoch"),
])
def test_paper_preset_sets_the_papers_code_settings_per_baseline(name, labels, means):
    _registered(name)
    nc3 = _spec(name, preset="paper").nc3
    assert (nc3.labels, nc3.means) == (labels, means)


@pytest.mark.parametrize("name", BASELINES)
def test_paper_preset_alpha_follows_the_registry(name):
    paper_alpha = get_baseline(name).paper_alpha
    if paper_alpha is None:
        with pytest.raises(ConfigError, match=f"did not run baseline '{name}'.*set nc3.alpha"):
            _spec(name, preset="paper")
        assert _spec(name, preset="paper", alpha=2.0).nc3.alpha == 2.0  # an explicit alpha is enough
    else:
        assert _spec(name, preset="paper").nc3.alpha == paper_alpha


def test_paper_preset_bec_reproduces_the_papers_loss_end_to_end():
    """The preset alone (labels from the masked input, shift 1, all positions) gives BEC's loss, alpha 100."""
    nc3 = _spec("bec", preset="paper").nc3
    assert nc3.alpha == 100.0  # `loss = loss + 100 * loss_nc3`
    weight = _weight()
    stats = PaperStatistics(C, D)
    reg = _regularizer(nc3)
    for hidden, input_ids, labels, attention in _bec_batches():
        stats.collect_means(*paper_process_batch(hidden, input_ids, attention))
        reg.update(*_pairs(nc3, hidden, input_ids, labels, attention))
        assert float(reg.loss(weight)[0]) == pytest.approx(float(paper_unc3(stats, weight, V)), abs=TOL)


def test_explicit_alpha_is_kept():
    assert _spec("bec", preset="paper", alpha=3.0).nc3.alpha == 3.0
    assert _spec("bec", preset="paper", alpha=0.0).nc3.alpha == 0.0
    searched = _spec("bec", preset="paper", alpha={"loguniform": [1.0, 100.0]}).nc3.alpha
    assert searched == Distribution("loguniform", (1.0, 100.0))


def test_paper_preset_round_trips_and_its_control_keeps_alpha_zero():
    spec = parse_spec({**_spec("bec", preset="paper").to_dict(), "search": {"control": True}})
    assert spec.nc3.alpha == 100.0  # the control check sees the paper's alpha, not the default 0
    again = parse_spec(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    control = parse_spec(spec.as_control().to_dict())
    assert control.nc3.alpha == 0.0 and control.nc3.labels == "masked_input"


def test_paper_preset_conflicting_baseline_setting_is_an_error():
    with pytest.raises(ConfigError, match="nc3.preset 'paper' fixes nc3.labels='masked_input' for baseline 'bec'"):
        _spec("bec", preset="paper", labels="original")
    with pytest.raises(ConfigError, match="fixes nc3.means='cumulative'"):
        _spec("bec", preset="paper", means="epoch")
    assert _spec("bec", preset="paper", labels="masked_input").nc3.labels == "masked_input"


def test_paper_preset_without_paper_code_keeps_the_label_source_open():
    assert _spec("mlm", preset="paper", alpha=1.0).nc3.labels == "original"
    assert _spec("mlm", preset="paper", alpha=1.0, labels="masked_input").nc3.labels == "masked_input"
    assert _spec("mlm", preset="paper", alpha=1.0).nc3.means == "cumulative"


def test_searched_baseline_with_paper_preset_is_an_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: t\n"
        "baseline: {choice: [bec, mlm]}\n"
        "nc3:\n"
        "  preset: paper\n"
        "objectives:\n"
        "  - {metric: stereoset/gender/icat, mode: max}\n"
        "  - {metric: perplexity/pppl, mode: min}\n"
    )
    with pytest.raises(ConfigError, match=r"nc3\.preset 'paper'.*baseline is searched; run one search per baseline"):
        load_spec(path)
    with pytest.raises(ConfigError, match="baseline is searched"):  # an explicit alpha does not help
        load_spec(path, ["nc3.alpha=5"])


def test_paper_preset_runs_ase_as_the_paper_did_unless_its_options_disagree():
    _registered("ase")
    spec = _spec("ase", preset="paper")
    assert spec.nc3.alpha == 100.0 and spec.nc3.labels == "masked_input"
    assert spec.baseline_options.ase.preset == "paper"
    assert (spec.baseline_options.ase.orthogonal_weight, spec.baseline_options.ase.ewc_weight) == (0.0, 0.0)
    without = _spec("ase", alpha=100.0)
    assert without.baseline_options.ase.ewc_weight > 0  # the method's own defaults without the preset
    with pytest.raises(ConfigError, match=r"ewc_weight"):
        parse_spec({"name": "t", "baseline": "ase", "nc3": {"preset": "paper"},
                    "baseline_options": {"ase": {"ewc_weight": 0.3}},
                    "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"},
                                   {"metric": "perplexity/pppl", "mode": "min"}]})
