"""NC3 statistics and regularizer vs a plain dense computation; gradients; analysis metrics.

The reference below is written the slow, obvious way (python loops to pick pairs, a one-hot over the
whole toy vocabulary for the class sums, explicit formulas for cos and the sample std) so that it
shares no code with ncsearch.collapse.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ncsearch.collapse import (
    ClassStatistics,
    NC3Regularizer,
    bootstrap_intervals,
    collapse_metrics,
    collapse_study,
    select_pairs,
)
from ncsearch.errors import ConfigError

VOCAB = 40
D = 5
V = [3, 7, 11, 20, 33]  # 33 never occurs: an empty class throughout
COMBOS = list(itertools.product(("unc3", "nc3", "both"), ("cumulative", "ema", "batch"), ("encoder", "head"),
                                ("masked", "all"), (0, 1)))


def _transform(h: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    return torch.tanh(h @ a) + 0.5


def _batches(steps: int = 4, b: int = 4, t: int = 9, seed: int = 0):
    """Synthetic MLM batches: tokens mostly from V (so classes fill unevenly), padding, masks."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor([3, 7, 11, 20, 1, 2, 5, 3, 7, 9])
    out = []
    for step in range(steps):
        original = pool[torch.randint(0, len(pool), (b, t), generator=g)]
        if step == 1:  # class 11 absent in step 1 (ema/batch: a class that disappears and comes back)
            original[original == 11] = 5
        if step == 0:  # class 20 first appears later
            original[original == 20] = 1
        mask = torch.ones(b, t, dtype=torch.long)
        mask[1, 6:] = 0
        mask[3, 4:] = 0
        chosen = (torch.rand(b, t, generator=g) < 0.4) & mask.bool()
        labels = torch.where(chosen, original, torch.full_like(original, -100))
        input_ids = torch.where(chosen, torch.full_like(original, 0), original)  # 0 = [MASK]
        input_ids = torch.where(mask.bool(), input_ids, torch.full_like(original, 39))  # 39 = pad
        hidden = torch.randn(b, t, D, generator=g, dtype=torch.float64)
        out.append((hidden, input_ids, labels, mask))
    return out


def _dense_pairs(hidden, input_ids, labels, mask, features, positions, shift):
    xs, ys = [], []
    b, t, _ = hidden.shape
    for i in range(b):
        for j in range(t - shift):
            target = j + shift
            if not (mask[i, j] and mask[i, target]):
                continue
            masked = labels[i, target] != -100
            if positions == "masked" and not masked:
                continue
            xs.append(hidden[i, j])
            ys.append(int(labels[i, target]) if masked else int(input_ids[i, target]))
    x = torch.stack(xs) if xs else torch.zeros(0, D, dtype=torch.float64)
    if features == "head":
        x = _transform(x)
    return x, ys


def _dense_class_stats(x, ys):
    onehot = torch.zeros(len(ys), VOCAB, dtype=torch.float64)
    for row, y in enumerate(ys):
        onehot[row, y] = 1.0
    sums = onehot.T @ x  # (VOCAB, D)
    counts = onehot.sum(0)
    return sums[V], counts[V]


def _dense_reference(batches, kind, means, features, positions, shift, weight, momentum=0.9):
    cum_s = torch.zeros(len(V), D, dtype=torch.float64)
    cum_n = torch.zeros(len(V), dtype=torch.float64)
    ema = [None] * len(V)
    for hidden, input_ids, labels, mask in batches:
        x, ys = _dense_pairs(hidden, input_ids, labels, mask, features, positions, shift)
        s, n = _dense_class_stats(x, ys)
        cum_s, cum_n = cum_s + s, cum_n + n
        for c in range(len(V)):
            if n[c] > 0:
                bm = s[c] / n[c]
                ema[c] = bm if ema[c] is None else momentum * ema[c] + (1 - momentum) * bm
        last_s, last_n = s, n
    if means == "cumulative":
        mus = {c: cum_s[c] / cum_n[c] for c in range(len(V)) if cum_n[c] > 0}
    elif means == "batch":
        mus = {c: last_s[c] / last_n[c] for c in range(len(V)) if last_n[c] > 0}
    else:
        mus = {c: ema[c] for c in range(len(V)) if ema[c] is not None}
    mu_g = sum(mus.values()) / len(mus)
    cos = []
    for c, mu in mus.items():
        w, m = weight[V[c]], mu - mu_g
        cos.append(float(w @ m) / (math.sqrt(float(w @ w)) * math.sqrt(float(m @ m))))
    mean = sum(cos) / len(cos)
    std = math.sqrt(sum((v - mean) ** 2 for v in cos) / (len(cos) - 1))
    value = {"unc3": std, "nc3": 1 - mean, "both": std + 1 - mean}[kind]
    return value, std, 1 - mean, len(cos), mus


@pytest.mark.parametrize(("kind", "means", "features", "positions", "shift"), COMBOS)
def test_regularizer_equals_dense_reference(kind, means, features, positions, shift):
    weight = torch.randn(VOCAB, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    batches = _batches()
    reg = NC3Regularizer(V, kind=kind, means=means, ema_momentum=0.9)
    for hidden, input_ids, labels, mask in batches:
        x, y = select_pairs(hidden, input_ids=input_ids, labels=labels, attention_mask=mask, features=features,
                            positions=positions, label_shift=shift, head_transform=_transform)
        reg.update(x, y)
    value, info = reg.loss(weight)
    ref, ref_unc3, ref_nc3, k, mus = _dense_reference(batches, kind, means, features, positions, shift, weight)
    assert 33 not in [V[c] for c in mus]  # the empty class really is empty
    assert info["classes"] == k
    assert float(value) == pytest.approx(ref, abs=1e-6)
    assert info["unc3"] == pytest.approx(ref_unc3, abs=1e-6)
    assert info["nc3"] == pytest.approx(ref_nc3, abs=1e-6)
    mu, observed = reg.means()
    assert observed.tolist() == [c in mus for c in range(len(V))]
    for c, ref_mu in mus.items():
        torch.testing.assert_close(mu[c], ref_mu, atol=1e-6, rtol=0)


def test_select_pairs_matches_dense_loops():
    hidden, input_ids, labels, mask = _batches(steps=1)[0]
    for features, positions, shift in itertools.product(("encoder", "head"), ("masked", "all"), (0, 1)):
        x, y = select_pairs(hidden, input_ids=input_ids, labels=labels, attention_mask=mask, features=features,
                            positions=positions, label_shift=shift, head_transform=_transform)
        rx, ry = _dense_pairs(hidden, input_ids, labels, mask, features, positions, shift)
        assert y.tolist() == ry
        torch.testing.assert_close(x, rx, atol=1e-12, rtol=0)
    # masked positions carry the original token, never the [MASK] id 0; pads never appear
    _, y_all = select_pairs(hidden, input_ids=input_ids, labels=labels, attention_mask=mask, positions="all")
    assert 0 not in y_all.tolist() and 39 not in y_all.tolist()


def test_empty_and_single_class_edge_cases():
    weight = torch.randn(VOCAB, D, dtype=torch.float64, requires_grad=True)
    reg = NC3Regularizer(V)
    value, info = reg.loss(weight)  # before any update
    assert info["classes"] == 0 and math.isnan(info["unc3"]) and float(value.detach()) == 0.0
    reg.update(torch.randn(3, D, dtype=torch.float64), torch.tensor([1, 2, -100]))  # nothing in V
    assert reg.loss(weight)[1]["classes"] == 0
    reg.update(torch.randn(2, D, dtype=torch.float64), torch.tensor([7, 7]))  # one class: std undefined -> 0
    value, info = reg.loss(weight)
    assert info == {"unc3": 0.0, "nc3": 1.0, "classes": 1}
    value.backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) == 0.0


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="'std'"):
        NC3Regularizer(V, kind="std")
    with pytest.raises(ConfigError, match="'running'"):
        NC3Regularizer(V, means="running")
    with pytest.raises(ConfigError, match="empty"):
        NC3Regularizer([])
    h, ids, labels, mask = _batches(steps=1)[0]
    with pytest.raises(ConfigError, match="head_transform"):
        select_pairs(h, input_ids=ids, labels=labels, attention_mask=mask, features="head")
    with pytest.raises(ConfigError, match="2"):
        select_pairs(h, input_ids=ids, labels=labels, attention_mask=mask, label_shift=2)


def test_state_dict_round_trip_continues_identically():
    weight = torch.randn(VOCAB, D, dtype=torch.float64)
    batches = _batches()
    a = NC3Regularizer(V, means="ema")
    for h, ids, labels, mask in batches[:2]:
        a.update(*select_pairs(h, input_ids=ids, labels=labels, attention_mask=mask))
    b = NC3Regularizer(V, means="ema")
    b.load_state_dict(a.state_dict())
    for h, ids, labels, mask in batches[2:]:
        pair = select_pairs(h, input_ids=ids, labels=labels, attention_mask=mask)
        a.update(*pair)
        b.update(*pair)
    assert float(a.loss(weight)[0]) == float(b.loss(weight)[0])
    with pytest.raises(ConfigError, match="different vocabulary"):
        NC3Regularizer([1, 2]).load_state_dict(a.state_dict())


def test_gradient_reaches_decoder_weight_only(tiny_mlm):
    from ncsearch.heads import encode, mlm_head

    model, tok = tiny_mlm
    model.train()
    enc = tok(["he said she would come", "her brother met his sister there"], padding=True, return_tensors="pt")
    vocab = tok.convert_tokens_to_ids(["he", "she", "her", "his", "brother", "sister", "there"])
    hidden = encode(model, enc["input_ids"], enc["attention_mask"])
    head = mlm_head(model)
    reg = NC3Regularizer(vocab, kind="both")
    for features in ("encoder", "head"):
        reg.update(*select_pairs(hidden, input_ids=enc["input_ids"], labels=None,
                                 attention_mask=enc["attention_mask"], features=features, positions="all",
                                 head_transform=head.transform))
    value, info = reg.loss(head.weight)
    assert info["classes"] == 7
    value.backward()
    grad = head.weight.grad
    assert grad is not None
    rows_with_grad = set(grad.abs().sum(1).nonzero().flatten().tolist())
    assert rows_with_grad == set(vocab)  # only the rows W_c of classes in V
    for name, p in model.named_parameters():
        if p is head.weight:
            continue
        assert p.grad is None, f"{name} received gradient from the NC3 term"


# -- analysis metrics -----------------------------------------------------------------------------------
def _etf(k: int, d: int, seed: int = 0) -> torch.Tensor:
    """k simplex-ETF vertices in R^d (k <= d), randomly rotated, unit norm."""
    g = torch.Generator().manual_seed(seed)
    m = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return m @ q.T  # (k, d)


def _run_stats(vocab, x, y, weight, bias=None, min_count=2):
    stats = ClassStatistics(vocab, min_count=min_count)
    stats.update(x, y)
    stats.update_agreement(x, y, weight, bias)
    return stats.summary(weight)


def test_metrics_on_a_collapsed_simplex_etf_configuration():
    k, d = 5, 8
    etf = _etf(k, d)
    offset = torch.full((d,), 0.7, dtype=torch.float64)
    vocab = [4, 9, 12, 15, 30]
    weight = torch.randn(VOCAB, d, dtype=torch.float64)
    weight[vocab] = 3.0 * etf  # self-dual classifier: W_c proportional to mu_c − mu_G
    x = (etf + offset).repeat(4, 1)  # every feature exactly its class mean
    y = torch.tensor(vocab).repeat(4)
    bias = torch.zeros(VOCAB, dtype=torch.float64)
    bias[vocab] = -weight[vocab] @ offset  # the bias absorbs the global mean, as in a collapsed classifier
    summary = _run_stats(vocab + [2], x, y, weight, bias)  # token 2 in V never occurs: left out
    m = collapse_metrics(summary)
    assert summary.classes == k and m["tokens"] == 4 * k
    assert m["nc1"] == pytest.approx(0.0, abs=1e-9)
    assert m["nc2_equinorm"] == pytest.approx(0.0, abs=1e-9)
    assert m["nc2_equiangular"] == pytest.approx(0.0, abs=1e-9)
    assert m["nc2_cos_mean"] == pytest.approx(-1.0 / (k - 1), abs=1e-9)
    assert m["nc3"] == pytest.approx(0.0, abs=1e-9)
    assert m["unc3"] == pytest.approx(0.0, abs=1e-9)
    assert m["nc4"] == 1.0
    intervals = bootstrap_intervals(summary, n_boot=50, seed=1)
    assert intervals["nc1"][1] == pytest.approx(0.0, abs=1e-9)
    assert intervals["nc4"] == (1.0, 1.0)


def test_metrics_equal_dense_two_pass_formulas():
    g = torch.Generator().manual_seed(5)
    vocab = [1, 4, 6, 9]
    n_per = [6, 3, 1, 8]  # class 6 has one token: below min_count=2, left out
    d = 4
    centres = torch.randn(len(vocab), d, generator=g, dtype=torch.float64) * 3
    xs, ys = [], []
    for c, n in enumerate(n_per):
        xs.append(centres[c] + torch.randn(n, d, generator=g, dtype=torch.float64))
        ys += [vocab[c]] * n
    x, y = torch.cat(xs), torch.tensor(ys)
    weight = torch.randn(VOCAB, d, generator=g, dtype=torch.float64)
    bias = torch.randn(VOCAB, generator=g, dtype=torch.float64)
    m = collapse_metrics(_run_stats(vocab, x, y, weight, bias))

    keep = [0, 1, 3]
    groups = [xs[c] for c in keep]
    mus = [grp.mean(0) for grp in groups]
    var = [float(((grp - mu) ** 2).sum(1).mean()) for grp, mu in zip(groups, mus)]
    cdnv = [(var[i] + var[j]) / (2 * float(((mus[i] - mus[j]) ** 2).sum())) for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert m["nc1"] == pytest.approx(sum(cdnv) / 3, rel=1e-9)
    mu_g = sum(mus) / 3
    cen = [mu - mu_g for mu in mus]
    norms = torch.tensor([float(c.norm()) for c in cen], dtype=torch.float64)
    assert m["nc2_equinorm"] == pytest.approx(float(norms.std() / norms.mean()), rel=1e-9)
    pair_cos = torch.tensor([float(cen[i] @ cen[j] / (cen[i].norm() * cen[j].norm())) for i, j in [(0, 1), (0, 2), (1, 2)]], dtype=torch.float64)
    assert m["nc2_equiangular"] == pytest.approx(float(pair_cos.std()), rel=1e-9)
    s = torch.tensor([float(weight[vocab[c]] @ cen[i] / (weight[vocab[c]].norm() * cen[i].norm()))
                      for i, c in enumerate(keep)], dtype=torch.float64)
    assert m["nc3"] == pytest.approx(1 - float(s.mean()), rel=1e-9)
    assert m["unc3"] == pytest.approx(float(s.std()), rel=1e-9)
    agree = total = 0
    ids = [vocab[c] for c in keep]
    for row, label in zip(x, ys):
        if label not in ids:
            continue
        lin = max(range(3), key=lambda i: float(weight[ids[i]] @ row + bias[ids[i]]))
        ncc = min(range(3), key=lambda i: float(((row - mus[i]) ** 2).sum()))
        agree += lin == ncc
        total += 1
    assert m["nc4"] == pytest.approx(agree / total)
    assert 0 < agree < total  # the check is not vacuous


def test_bootstrap_interval_brackets_point_estimate():
    g = torch.Generator().manual_seed(2)
    vocab = list(range(1, 13))
    x = torch.randn(240, 6, generator=g, dtype=torch.float64) + torch.randn(12, 6, generator=g, dtype=torch.float64).repeat(20, 1)
    y = torch.tensor(vocab).repeat(20)
    weight = torch.randn(VOCAB, 6, generator=g, dtype=torch.float64)
    summary = _run_stats(vocab, x, y, weight)
    point = collapse_metrics(summary)
    intervals = bootstrap_intervals(summary, n_boot=200, seed=0)
    for name in ("nc1", "nc2_equinorm", "unc3", "nc4"):
        lo, hi = intervals[name]
        assert lo < hi, name
        assert lo <= point[name] <= hi, (name, lo, point[name], hi)


def test_collapse_study_on_tiny_model_matches_direct_pass(tiny_mlm):
    from ncsearch.heads import encode

    model, tok = tiny_mlm
    texts = ["he said that she would come home.", "his sister and her brother met there.",
             "the doctor said he was tired.", "she told him about her day."] * 3
    words = ["he", "she", "his", "her", "him", "said"]
    vocab = tok.convert_tokens_to_ids(words)
    result = collapse_study(model, tok, texts, {"gender": vocab}, n_boot=20, batch_size=5)
    summary = result.summaries["gender"]
    assert summary.classes == 6
    # direct: all tokens of the texts through the encoder, class means of the V tokens
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = encode(model, enc["input_ids"], enc["attention_mask"])
    for i, token in enumerate(summary.token_ids.tolist()):
        sel = (enc["input_ids"] == token) & enc["attention_mask"].bool()
        torch.testing.assert_close(summary.means[i], h[sel].double().mean(0), atol=1e-5, rtol=0)
        assert summary.counts[i] == int(sel.sum())
    assert 0.0 <= result.metrics["gender"]["nc4"] <= 1.0
    assert result.metrics["gender"]["nc1"] > 0


@pytest.mark.parametrize(("features", "label_shift"), [("encoder", 0), ("head", 1)])
def test_heldout_collapse_computes_the_last_layer_at_v_positions_only(features, label_shift, tiny_mlm, data_root, monkeypatch):
    """The `collapse` benchmark's fast path asks the row encoder for exactly the positions whose label
    is in V, and gives the metrics of the full forward followed by `select_pairs`."""
    from collections import Counter

    from ncsearch._batching import pad_batch
    from ncsearch.data import load_gap_corpus
    from ncsearch.evaluate import get_benchmark
    from ncsearch.evaluate._row_encoder import RowEncoder
    from ncsearch.heads import encode, mlm_head

    model, tokenizer = tiny_mlm
    model.eval()
    texts = load_gap_corpus(data_root, splits=("validation",))[:12]
    ids = tokenizer(list(texts), truncation=True, max_length=64)["input_ids"]
    common = [token for token, _ in Counter(t for seq in ids for t in seq[1:-1]).most_common(8)]
    options = {"vocab_ids": common, "features": features, "label_shift": label_shift}
    requested: list[int] = []
    real_call = RowEncoder.__call__

    def recording_call(self, input_ids, attention_mask, where):
        labels = input_ids[where[:, 0], where[:, 1] + label_shift]
        assert bool(torch.isin(labels, torch.tensor(common)).all())
        requested.append(len(where))
        return real_call(self, input_ids, attention_mask, where)

    monkeypatch.setattr(RowEncoder, "__call__", recording_call)
    result = get_benchmark("collapse")(data_root, limit=12, batch_size=4, seed=0, fast_path=True, **options).score(model, tokenizer)

    stats = ClassStatistics(common, min_count=2)
    head = mlm_head(model)
    pairs = 0
    with torch.inference_mode():
        for start in range(0, len(ids), 4):
            input_ids, mask = pad_batch(ids[start : start + 4], tokenizer.pad_token_id)
            feats, labels = select_pairs(encode(model, input_ids, mask), input_ids=input_ids, labels=None,
                                         attention_mask=mask, features=features, positions="all",
                                         label_shift=label_shift, head_transform=head.transform)
            kept = torch.isin(labels, torch.tensor(common))
            pairs += int(kept.sum())
            stats.update(feats[kept], labels[kept])
        dense = collapse_metrics(stats.summary(head.weight))
    assert pairs > 0 and sum(requested) == pairs  # every V pair, nothing else
    assert result.metrics["collapse/unc3"] == pytest.approx(float(dense["unc3"]), rel=1e-4)
    assert result.metrics["collapse/nc3"] == pytest.approx(float(dense["nc3"]), rel=1e-4)
