"""The one test case every registered benchmark must pass on a tiny random masked LM.

- metrics are finite Python floats under keys that start with "<name>/";
- `limit` is respected: a larger limit makes the benchmark run the encoder on more sequences
  (counted with a module forward hook, whatever the benchmark does with the model);
- results are deterministic: two fresh instances with the same seed give identical metrics;
- details are pandas DataFrames;
- the fast path equals the plain Hugging Face forward: metrics with `fast_path` off (no row encoder,
  no oneDNN-packed weights) equal the default ones up to float rounding.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ncsearch.evaluate import BenchmarkResult, available, get_benchmark

# Per benchmark (small, large) limits; a pseudo-perplexity passage alone is ~60 sequences.
LIMITS = {"perplexity": (2, 3)}
DEFAULT_LIMITS = (4, 24)


def test_every_contract_benchmark_is_registered():
    assert set(available()) >= {"stereoset", "crows_pairs", "seat", "bec_pro", "winobias", "perplexity", "glue"}


def _run(name, data_root, model, tokenizer, limit, *, fast_path=True):
    """The result, and how many sequences went through a BERT encoder while scoring (a global hook,
    so that copies a benchmark fine-tunes, as GLUE does, are counted too). The embeddings module is
    counted because every path runs it once per sequence: the full forward and the row encoder
    (`evaluate._row_encoder`), which skips `BertModel.forward`."""
    seen = [0]

    def count(module, args, output):
        if type(module).__name__ == "BertEmbeddings":
            seen[0] += int(output.shape[0])

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        benchmark = get_benchmark(name)(data_root, limit=limit, batch_size=8, seed=0, fast_path=fast_path)
        result = benchmark.score(model, tokenizer)
    finally:
        hook.remove()
    return result, seen[0]


@pytest.mark.parametrize("name", available())
def test_benchmark_contract(name, tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    small, large = LIMITS.get(name, DEFAULT_LIMITS)
    first, small_count = _run(name, data_root, model, tokenizer, small)
    assert isinstance(first, BenchmarkResult)
    assert first.metrics, f"{name} returned no metrics"
    for key, value in first.metrics.items():
        assert key.startswith(f"{name}/"), key
        assert isinstance(value, float) and math.isfinite(value), (key, value)
    assert all(isinstance(table, pd.DataFrame) for table in first.details.values())

    again, _ = _run(name, data_root, model, tokenizer, small)
    assert again.metrics == first.metrics

    _, large_count = _run(name, data_root, model, tokenizer, large)
    assert 0 < small_count < large_count, (small_count, large_count)


@pytest.mark.parametrize("name", available())
def test_fast_path_equals_the_plain_hugging_face_forward(name, tiny_mlm, data_root, monkeypatch):
    """Off, the fast path is fenced off entirely (no row encoder built, no weight packed for oneDNN),
    and the metrics equal the fast path's up to float rounding."""
    from ncsearch.evaluate._fused_linear import FusedLinear
    from ncsearch.evaluate._row_encoder import RowEncoder

    model, tokenizer = tiny_mlm
    small, _ = LIMITS.get(name, DEFAULT_LIMITS)
    fast, _ = _run(name, data_root, model, tokenizer, small)

    packed: list[bool] = []
    real_of = FusedLinear.of.__func__

    def recording_of(cls, weight, bias, *, pack=True):
        packed.append(pack)
        return real_of(cls, weight, bias, pack=pack)

    def no_row_encoder(cls, model):
        raise AssertionError(f"{name} built a row encoder with fast_path off")

    monkeypatch.setattr(FusedLinear, "of", classmethod(recording_of))
    monkeypatch.setattr(RowEncoder, "for_model", classmethod(no_row_encoder))
    plain, _ = _run(name, data_root, model, tokenizer, small, fast_path=False)
    assert not any(packed), f"{name} packed weights for oneDNN with fast_path off"
    assert set(plain.metrics) == set(fast.metrics)
    for key, value in fast.metrics.items():
        assert plain.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", available())
def test_benchmark_resampling_contract(name, tiny_mlm, data_root):
    """Every benchmark declares a resampling unit whose table is in its details, and writes its metrics
    once as a function of row weights: weight 1 gives the reported metrics, and integer weights give
    the metrics of the table with those rows repeated (so a bootstrap count matrix is a resample)."""
    import numpy as np

    from ncsearch.evaluate import intervals, point_metrics

    model, tokenizer = tiny_mlm
    small, _ = LIMITS.get(name, DEFAULT_LIMITS)
    result, _ = _run(name, data_root, model, tokenizer, max(small, 6))
    cls = get_benchmark(name)
    table = result.details[cls.resampling.table]
    assert set(cls.resampling.key) | set(cls.resampling.strata) <= set(table.columns)
    point = point_metrics(cls, table)
    assert point and set(point) <= set(result.metrics)
    for key, value in point.items():
        assert value == pytest.approx(result.metrics[key], rel=1e-9, abs=1e-12), key

    counts = np.random.default_rng(0).integers(1, 4, size=len(table))
    weighted = cls.metrics_from_weights(table, counts[None, :].astype(float))
    repeated = point_metrics(cls, table.loc[table.index.repeat(counts)].reset_index(drop=True))
    assert set(weighted) == set(repeated)
    for key, value in repeated.items():
        assert float(weighted[key][0]) == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key

    found = intervals(name, result.details, resamples=50)
    assert set(found) == set(point)
    assert all(e.low <= e.high for e in found.values() if math.isfinite(e.low))
