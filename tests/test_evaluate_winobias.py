"""WinoBias probe: counterpart pronouns, batched scores equal a one-at-a-time computation, aggregation."""

from __future__ import annotations

import collections

import pandas as pd
import pytest
import torch

from ncsearch.data import load_winobias
from ncsearch.data._winobias import parse_winobias_line
from ncsearch.evaluate.winobias import WinoBiasBenchmark, counterpart_pronouns, summarise


def test_counterparts_come_from_twins_and_fallback():
    pro = parse_winobias_line("5 The chief hired [the clerk] and paid [her] well.", stereotype="pro", type=2)
    anti = parse_winobias_line("5 The chief hired [the clerk] and paid [him] well.", stereotype="anti", type=2)
    lone = parse_winobias_line("7 [The nurse] met the chief because [her] shift ended.", stereotype="pro", type=1)
    upper = parse_winobias_line("8 [The nurse] met the chief . [She] left.", stereotype="pro", type=1)
    assert counterpart_pronouns([pro, anti, lone, upper]) == ["him", "her", "his", "He"]


def test_counterparts_on_dev_split(data_root):
    sentences = load_winobias(data_root, "dev")
    pairs = collections.Counter(zip((s.pronoun.lower() for s in sentences), counterpart_pronouns(sentences)))
    assert set(pairs) <= {("he", "she"), ("she", "he"), ("him", "her"), ("her", "him"), ("his", "her"), ("her", "his")}
    assert pairs[("her", "him")] > 300 and pairs[("her", "his")] > 50


def _plain_logprobs(model, tokenizer, text, start, end, words, also_mask=()):
    """Mask the pronoun (and the other marked mentions) in the text, run the full model on this one
    sentence, read log-softmax at the pronoun's mask."""
    spans = sorted([(start, end), *also_mask])
    masked = text
    for a, b in reversed(spans):
        masked = masked[:a] + tokenizer.mask_token + masked[b:]
    ids = tokenizer(masked, return_tensors="pt")["input_ids"]
    position = int((ids[0] == tokenizer.mask_token_id).nonzero()[spans.index((start, end))])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, position].double(), dim=-1)
    return [logprobs[tokenizer.convert_tokens_to_ids(w.lower())].item() for w in words]


def test_batched_equals_one_at_a_time(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    result = WinoBiasBenchmark(data_root, limit=24, batch_size=7, seed=2).score(model, tokenizer)
    table = result.details["sentences"]
    assert len(table) == 24 and (table.groupby(["stereotype", "type"]).size() == 6).all()
    by_key = {(s.stereotype, s.type, s.index): s for s in load_winobias(data_root, "dev")}
    for _, row in table.iterrows():
        s = by_key[(row["stereotype"], row["type"], row["index"])]
        expected = _plain_logprobs(model, tokenizer, s.text, *s.pronoun_span, [row["pronoun"], row["opposite"]],
                                   s.extra_pronoun_spans)
        assert [row["log_p_pronoun"], row["log_p_opposite"]] == pytest.approx(expected, abs=1e-5)
    assert result.metrics["winobias/pro_acc"] == pytest.approx(table.loc[table.stereotype == "pro", "correct"].mean())
    assert {f"winobias/type{t}/acc_gap" for t in (1, 2)} <= set(result.metrics)


def test_extra_mentions_are_masked(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    s = next(s for s in load_winobias(data_root, "dev") if s.extra_pronoun_spans)
    from ncsearch.evaluate.winobias import masked_pronoun_request

    request = masked_pronoun_request(tokenizer, s.text, s.pronoun_span, [s.pronoun, "she"],
                                     also_mask=s.extra_pronoun_spans)
    assert request.input_ids.count(tokenizer.mask_token_id) == 1 + len(s.extra_pronoun_spans)
    assert request.targets == tokenizer.convert_tokens_to_ids([s.pronoun.lower(), "she"])


def test_summarise_by_hand():
    table = pd.DataFrame({
        "stereotype": ["pro", "pro", "pro", "anti", "anti"],
        "correct": [True, True, False, False, True],
        "prob": [0.5, 0.25, 0.0, 0.1, 0.3],
    })
    metrics = summarise(table)
    assert metrics["winobias/pro_acc"] == pytest.approx(2 / 3)
    assert metrics["winobias/anti_acc"] == pytest.approx(0.5)
    assert metrics["winobias/acc_gap"] == pytest.approx(2 / 3 - 0.5)
    assert metrics["winobias/pro_prob"] == pytest.approx(0.25)
    assert metrics["winobias/prob_gap"] == pytest.approx(0.25 - 0.2)
