"""The `gender` suite scores only the gender parts of StereoSet and CrowS-Pairs (issue 5's suite definition)."""

from __future__ import annotations

import pytest

from ncsearch.config import EvalSpec
from ncsearch.errors import UserInputError
from ncsearch.evaluate import available, get_benchmark, run_suite


def test_domain_filter_defaults_per_suite() -> None:
    assert EvalSpec(suite="gender").domain_filter() == ("gender",)
    assert EvalSpec(suite="full").domain_filter() is None
    assert EvalSpec(suite="custom", benchmarks=["stereoset"]).domain_filter() is None
    assert EvalSpec(suite="full", domains=["religion"]).domain_filter() == ("religion",)


def test_gender_domain_keeps_only_gender_examples(tiny_mlm, data_root) -> None:
    model, tokenizer = tiny_mlm
    result = run_suite(model, tokenizer, ["stereoset", "crows_pairs"], data_root=data_root,
                       limits={"stereoset": 6, "crows_pairs": 4}, batch_size=16, domains=("gender",), progress=False)
    assert set(result.details["stereoset/examples"]["bias_type"]) == {"gender"}
    assert len(result.details["stereoset/examples"]) == 6
    assert set(result.details["crows_pairs/pairs"]["bias_type"]) == {"gender"}
    groups = {key.split("/")[1] for key in result.metrics}
    assert groups == {"gender", "overall"}
    # with only gender examples, the overall scores are the gender scores
    assert result.metrics["stereoset/overall/ss"] == result.metrics["stereoset/gender/ss"]


def test_unknown_domain_is_a_user_error(data_root, tiny_mlm) -> None:
    model, tokenizer = tiny_mlm
    bench = get_benchmark("stereoset")(data_root, limit=2, domains=("age",))
    with pytest.raises(UserInputError, match="no examples in domains"):
        bench.score(model, tokenizer)


@pytest.mark.parametrize("name", available())
def test_every_benchmark_accepts_the_suite_arguments(name, data_root) -> None:
    """run_suite constructs every benchmark with the same keywords, `domains` included."""
    bench = get_benchmark(name)(data_root, limit=4, batch_size=8, seed=1, domains=("gender",))
    assert (bench.limit, bench.batch_size, bench.seed, bench.domains) == (4, 8, 1, ("gender",))
