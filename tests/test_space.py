"""space.py: SearchSpec -> Tune param space, Optuna sampler and searcher (pure translation)."""

from __future__ import annotations

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ncsearch.config import parse_spec
from ncsearch._replicates import ReplicatedSearch
from ncsearch.errors import ConfigError
from ncsearch.space import AskTellGridSampler, make_sampler, param_space, translate

OBJECTIVES = [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}]
EVAL = {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]}


def spec(**fields):
    data = {"name": "t", "objectives": OBJECTIVES, "eval": EVAL}
    data.update(fields)
    return parse_spec(data)


def test_each_distribution_kind_maps_to_its_tune_domain():
    s = spec(
        nc3={"alpha": {"loguniform": [0.1, 100.0]}, "kind": {"choice": ["unc3", "nc3"]},
             "vocab": {"size": {"int": [50, 500]}}},
        train={"lr": {"uniform": [1e-5, 1e-4]}},
    )
    space = param_space(s)
    assert list(space) == ["train.lr", "nc3.alpha", "nc3.kind", "nc3.vocab.size"]  # fixed fields absent
    assert isinstance(space["nc3.alpha"], tune.search.sample.Float)
    assert isinstance(space["nc3.alpha"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["nc3.alpha"].lower, space["nc3.alpha"].upper) == (0.1, 100.0)
    assert isinstance(space["train.lr"].get_sampler(), tune.search.sample.Uniform)
    assert space["nc3.kind"].categories == ["unc3", "nc3"]
    # int bounds are inclusive in the YAML; tune.randint excludes its upper bound
    assert (space["nc3.vocab.size"].lower, space["nc3.vocab.size"].upper) == (50, 501)


def test_int_upper_bound_is_reachable_through_optuna():
    s = spec(nc3={"vocab": {"size": {"int": [3, 4]}}, "alpha": 1.0})
    converted = OptunaSearch.convert_search_space(param_space(s))
    assert converted["nc3.vocab.size"] == optuna.distributions.IntDistribution(3, 4)


def test_translate_builds_multi_objective_plan():
    s = spec(nc3={"alpha": {"loguniform": [0.1, 10.0]}}, search={"algorithm": "nsga2", "num_samples": 12, "max_concurrent": 3, "seed": 7})
    plan = translate(s)
    assert plan.metrics == ["stereoset/gender/icat", "perplexity/pppl"]
    assert plan.modes == ["max", "min"]
    assert plan.num_samples == 12 and plan.max_concurrent == 3
    assert isinstance(plan.sampler, optuna.samplers.NSGAIISampler)
    assert translate(s, num_samples=2).max_concurrent == 2  # never more concurrent than training runs
    assert plan.expected_runs == 12


def test_replicates_and_controls_count_training_runs():
    s = spec(nc3={"alpha": {"grid": [1.0, 10.0, 100.0]}}, search={"algorithm": "grid", "replicates": 2, "control": True})
    plan = translate(s)
    assert (plan.num_samples, plan.replicates, plan.controls) == (3, 2, 1)
    assert plan.expected_runs == 8  # 3 configurations x 2 seeds + one control x 2 seeds
    both = spec(baseline={"grid": ["mlm", "cda"]}, nc3={"alpha": {"grid": [1.0, 10.0]}},
                search={"algorithm": "grid", "replicates": 3, "control": True})
    assert translate(both).controls == 2 and translate(both).expected_runs == (4 + 2) * 3


@pytest.mark.parametrize(
    ("algorithm", "cls"),
    [("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
     ("random", optuna.samplers.RandomSampler)],
)
def test_samplers_are_seeded(algorithm, cls):
    s = spec(nc3={"alpha": {"uniform": [0.0, 1.0]}}, search={"algorithm": algorithm, "seed": 3})
    draws = []
    for _ in range(2):
        sampler = make_sampler(s)
        assert isinstance(sampler, cls)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        draws.append([study.ask({"a": optuna.distributions.FloatDistribution(0, 1)}).params["a"] for _ in range(3)])
    assert draws[0] == draws[1]


def test_grid_enumerates_every_point_once_with_multiple_objectives(tmp_path):
    s = spec(search={"algorithm": "grid"}, baseline={"grid": ["mlm", "cda"]}, nc3={"alpha": {"grid": [0.0, 1.0, 10.0]}})
    plan = translate(s)
    assert plan.num_samples == 6  # num_samples not given: the whole grid
    assert isinstance(plan.sampler, AskTellGridSampler)
    search = plan.searcher(storage_url=f"sqlite:///{tmp_path}/optuna.db", study_name="g")
    assert isinstance(search, ReplicatedSearch)
    inner = search.inner
    inner.set_search_properties(None, None, plan.param_space)
    seen = []
    for i in range(6):
        cfg = inner.suggest(f"t{i}")
        seen.append((cfg["baseline"], cfg["nc3.alpha"]))
        inner.on_trial_complete(f"t{i}", {"stereoset/gender/icat": 50.0 + i, "perplexity/pppl": 10.0 - i})
    assert sorted(seen) == sorted((b, a) for b in ("mlm", "cda") for a in (0.0, 1.0, 10.0))
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert len(study.directions) == 2


def test_grid_num_samples_caps():
    s = spec(search={"algorithm": "grid", "num_samples": 2}, nc3={"alpha": {"grid": [0.0, 1.0, 10.0]}})
    assert translate(s).num_samples == 2
    plan = translate(s, num_samples=10)
    assert plan.num_samples == 3 and "3 points" in plan.notes[0]


def test_study_is_persisted_with_directions(tmp_path):
    s = spec(nc3={"alpha": {"loguniform": [0.1, 10.0]}}, search={"algorithm": "tpe", "seed": 1})
    plan = translate(s)
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = plan.searcher(storage_url=url, study_name="persisted").inner
    search.set_search_properties(None, None, plan.param_space)
    cfg = search.suggest("a")
    assert 0.1 <= cfg["nc3.alpha"] <= 10.0
    search.on_trial_complete("a", {"stereoset/gender/icat": 60.0, "perplexity/pppl": 20.0})
    study = optuna.load_study(study_name="persisted", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.trials[0].values == [60.0, 20.0]
    assert study.trials[0].params == {"nc3.alpha": cfg["nc3.alpha"]}


def test_nothing_to_search_is_a_config_error():
    with pytest.raises(ConfigError, match="searches nothing"):
        translate(spec())


def test_degenerate_float_range_is_a_config_error():
    with pytest.raises(ConfigError, match="single value"):
        translate(spec(nc3={"alpha": {"uniform": [1.0, 1.0]}}))


@pytest.mark.parametrize("name", ["alpha", "smoke", "vocab", "baseline", "modes"])
def test_shipped_search_spaces_translate(name):
    from pathlib import Path

    from ncsearch.config import load_spec

    path = Path(__file__).resolve().parents[1] / "search_spaces" / f"{name}.yaml"
    plan = translate(load_spec(path))
    assert plan.param_space and not plan.notes
    assert len(plan.metrics) >= 2
    if name == "baseline":
        assert plan.num_samples == 8 and plan.controls == 8  # NC3 on per baseline, each beside its own control
        assert plan.expected_runs == 32
    if name == "alpha":
        assert plan.expected_runs == 8  # 3 alphas x 2 seeds + the control x 2 seeds
    if name == "modes":
        assert plan.num_samples == 24
