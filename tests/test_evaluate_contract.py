"""The one test case every registered benchmark must pass on a tiny random masked LM.

- metrics are finite Python floats under keys that start with "<name>/";
- `limit` is respected: a larger limit makes the benchmark run the encoder on more sequences
  (counted with a module forward hook, whatever the benchmark does with the model);
- results are deterministic: two fresh instances with the same seed give identical metrics;
- details are pandas DataFrames;
- the fast path equals the plain Hugging Face forward: metrics with `fast_path` off (no row encoder,
  no oneDNN-packed weights) equal the default ones up to float rounding;
- its options are a strict `Options` model whose defaults construct it, and an unknown option or a
  bad value is one ConfigError line naming `eval.options.<name>.<field>`.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ncsearch._options import StrictOptions
from ncsearch.errors import ConfigError
from ncsearch.evaluate import BenchmarkResult, available, build_benchmarks, get_benchmark

# Per benchmark (small, large) limits; a pseudo-perplexity passage alone is ~60 sequences.
LIMITS = {"perplexity": (2, 3)}
DEFAULT_LIMITS = (4, 24)


def test_every_contract_benchmark_is_registered():
    assert set(available()) >= {"stereoset", "crows_pairs", "seat", "bec_pro", "winobias", "perplexity", "glue"}


def test_config_allows_exactly_the_registered_benchmarks():
    from ncsearch.config import SUITES, EvalSpec, benchmark_names

    assert set(benchmark_names()) == set(available())
    assert set(SUITES["full"]) == set(available()) and len(SUITES["full"]) == len(available())
    assert set(SUITES["gender"]) <= set(available())
    for name in available():  # every registered name is accepted where the spec names benchmarks
        spec = EvalSpec(suite="custom", benchmarks=[name], limits={name: 2}, options={name: {}})
        assert spec.benchmark_names() == (name,)


@pytest.mark.parametrize("name", available())
def test_benchmark_options_model(name, data_root):
    cls = get_benchmark(name)
    assert isinstance(cls.Options, type) and issubclass(cls.Options, StrictOptions)
    assert cls.Options.__doc__
    defaults = cls.Options()
    built = build_benchmarks([name], data_root=data_root)[0]
    assert type(built) is cls and built.options == defaults
    assert cls(data_root).options == defaults  # the constructor alone gives the same defaults
    if cls.Options.model_fields:
        field = next(iter(cls.Options.model_fields))
        assert cls(data_root, **{field: getattr(defaults, field)}).options == defaults  # keyword arguments work
    bad = {"no_such_option": 1}
    if cls.Options.model_fields:
        bad[next(iter(cls.Options.model_fields))] = object()  # no option type takes this
    for given, fields in [({"no_such_option": 1}, ["no_such_option"]), (bad, list(bad))]:
        with pytest.raises(ConfigError) as info:
            build_benchmarks([name], data_root=data_root, options={name: given})
        message = str(info.value)
        assert "\n" not in message, message
        for field in fields:
            assert f"eval.options.{name}.{field}" in message, message
    assert "unknown option" in message


def test_a_bad_option_is_caught_when_the_spec_is_validated():
    from ncsearch.config import parse_spec

    data = {"name": "t", "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"},
                                        {"metric": "perplexity/pppl", "mode": "min"}]}
    with pytest.raises(ConfigError) as info:
        parse_spec({**data, "eval": {"options": {"winobias": {"split": "train"}, "stereoset": {"x": 1}}}})
    assert [p.split(": ")[1] for p in info.value.problems] == ["eval.options.winobias.split", "eval.options.stereoset.x"]
    with pytest.raises(ConfigError, match=r"eval.limits.nope: unknown benchmark 'nope'; valid: bec_pro, "):
        parse_spec({**data, "eval": {"limits": {"nope": 3}}})


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
