"""ReplicatedSearch around a real OptunaSearch (SQLite study), driven as Tune drives a searcher:
seeds and controls become trials, controls are shared and trained once per seed, Optuna hears one
mean per configuration, concurrency is capped, and the state survives save/restore (--resume)."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.search import Searcher

from ncsearch._trial_driver import FINAL_KEY, TrialIdentity, searched_values
from ncsearch.config import parse_spec
from ncsearch.space import translate

ICAT, PPPL = "stereoset/gender/icat", "perplexity/pppl"


def _spec(**search):
    return parse_spec({
        "name": "rep", "nc3": {"alpha": {"grid": [1.0, 10.0]}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": search.pop("objectives", [{"metric": ICAT, "mode": "max"}, {"metric": PPPL, "mode": "min"}]),
        "search": {"algorithm": "grid", "replicates": 2, "control": True, "max_concurrent": 4, **search},
    })


def _searcher(spec, tmp_path, name="rep"):
    plan = translate(spec)
    search = plan.searcher(storage_url=f"sqlite:///{tmp_path}/optuna.db", study_name=name)
    search.set_search_properties(None, None, plan.param_space)
    return search


def _result(identity: TrialIdentity, alpha: float) -> dict:
    """A fake final result whose values depend on the run: ICAT = 60 + seed + alpha/10, control 60 + seed."""
    shift = 0.0 if identity.role == "control" else alpha / 10
    return {FINAL_KEY: 1.0, ICAT: 60.0 + identity.replicate + shift, PPPL: 100.0 - identity.replicate}


def _drain(search, start=0):
    """Ask until the searcher has nothing more right now; (trial id, config) pairs."""
    out = []
    for i in range(start, start + 50):
        config = search.suggest(f"t{i}")
        if config is None or config == Searcher.FINISHED:
            return out, config
        out.append((f"t{i}", config))
    raise AssertionError("the searcher never stopped suggesting")


def test_seeds_and_one_control_per_seed_then_optuna_hears_the_mean(tmp_path):
    search = _searcher(_spec(), tmp_path)
    asked, last = _drain(search)
    identities = [TrialIdentity.of(c) for _, c in asked]
    # max_concurrent 4 with 2 seeds: two configurations in flight; the control only once per seed.
    assert len(asked) == 4 and last is None
    assert [(i.role, i.group, i.replicate) for i in identities] == [
        ("trial", "c001", 0), ("control", identities[1].group, 0), ("trial", "c001", 1), ("control", identities[1].group, 1)]
    control = identities[1].group
    assert control.startswith("control-") and identities[0].control == control
    for trial_id, config in asked:
        search.on_trial_complete(trial_id, _result(TrialIdentity.of(config), searched_values(config)["nc3.alpha"]))
    more, last = _drain(search, start=len(asked))
    assert {TrialIdentity.of(c).group for _, c in more} == {"c002"}  # no second control for the same key
    assert all(TrialIdentity.of(c).control == control for _, c in more)
    for trial_id, config in more:
        search.on_trial_complete(trial_id, _result(TrialIdentity.of(config), searched_values(config)["nc3.alpha"]))
    assert search.suggest("t99") == Searcher.FINISHED
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 2  # one Optuna trial per configuration, not per seed
    by_alpha = {t.params["nc3.alpha"]: t.values for t in study.trials}
    assert by_alpha[10.0] == pytest.approx([60.5 + 1.0, 99.5])  # mean over seeds 0 and 1
    assert by_alpha[1.0] == pytest.approx([60.5 + 0.1, 99.5])


def test_delta_objectives_wait_for_the_control_and_failed_seeds_are_left_out(tmp_path):
    spec = _spec(objectives=[{"metric": f"delta/{ICAT}", "mode": "max"}, {"metric": PPPL, "mode": "min"}],
                 max_concurrent=2)
    search = _searcher(spec, tmp_path, name="delta")
    asked, _ = _drain(search)
    assert len(asked) == 2  # max_concurrent 2
    first, control = asked
    search.on_trial_complete(first[0], _result(TrialIdentity.of(first[1]), searched_values(first[1])["nc3.alpha"]))
    more, _ = _drain(search, start=2)
    assert len(more) == 1
    # seed 1 of the configuration fails for good; its control seed 1 finishes later
    rest = [c for c in more]
    search.on_trial_complete(rest[0][0], None, error=True)
    study = optuna.load_study(study_name="delta", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # still waiting for the control
    search.on_trial_complete(control[0], _result(TrialIdentity.of(control[1]), 1.0))
    remaining, _ = _drain(search, start=3)
    for trial_id, config in remaining:
        if TrialIdentity.of(config).role == "control":
            search.on_trial_complete(trial_id, _result(TrialIdentity.of(config), 1.0))
    study = optuna.load_study(study_name="delta", storage=f"sqlite:///{tmp_path}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 1
    alpha = done[0].params["nc3.alpha"]
    assert done[0].values == pytest.approx([alpha / 10, 100.0])  # the paired delta on seed 0 only


def test_state_survives_save_and_restore(tmp_path):
    spec = _spec()
    search = _searcher(spec, tmp_path)
    asked, _ = _drain(search)
    search.on_trial_complete(asked[0][0], _result(TrialIdentity.of(asked[0][1]), 10.0))
    path = tmp_path / "searcher.pkl"
    search.save(str(path))
    again = _searcher(spec, tmp_path)
    again.restore(str(path))
    for trial_id, config in asked[1:]:
        again.on_trial_complete(trial_id, _result(TrialIdentity.of(config), searched_values(config)["nc3.alpha"]))
    more, _ = _drain(again, start=10)
    assert {TrialIdentity.of(c).role for _, c in more} == {"trial"}  # the control is not trained twice
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 1


def test_a_failed_seed_that_finishes_on_resume_reaches_optuna_as_a_new_trial(tmp_path):
    """`--resume` runs failed trials again. A configuration told FAIL (every seed failed) and one told
    the mean of its one surviving seed are added again, complete, with the mean over all their seeds,
    after a save/restore as on --resume; a seed that fails again changes nothing."""
    spec = _spec(control=False, max_concurrent=2)
    search = _searcher(spec, tmp_path, name="again")
    first, _ = _drain(search)  # c001: seeds 0 and 1
    for trial_id, _config in first:
        search.on_trial_complete(trial_id, None, error=True)
    second, _ = _drain(search, start=10)  # c002
    search.on_trial_complete(second[0][0], _result(TrialIdentity.of(second[0][1]), 1.0))
    search.on_trial_complete(second[1][0], None, error=True)
    assert search.suggest("t99") == Searcher.FINISHED
    study = optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]

    path = tmp_path / "searcher.pkl"
    search.save(str(path))
    resumed = _searcher(spec, tmp_path, name="again")
    resumed.restore(str(path))
    resumed.on_trial_complete(first[0][0], None, error=True)  # fails again: nothing new
    assert len(optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 2
    for trial_id, config in [first[0], first[1], second[1]]:
        alpha = searched_values(config)["nc3.alpha"]
        resumed.on_trial_complete(trial_id, _result(TrialIdentity.of(config), alpha))
    study = optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    again = {t.user_attrs["ncsearch.again_of_trial"]: t for t in study.trials[2:]}
    assert {t.user_attrs["ncsearch.seeds"] for t in again.values()} == {2}
    for number, trial in again.items():
        original = study.trials[number]
        assert trial.params == original.params
        assert trial.values == pytest.approx([60.5 + trial.params["nc3.alpha"] / 10, 99.5])  # both seeds now
    assert study.trials[1].values == pytest.approx([60.0 + study.trials[1].params["nc3.alpha"] / 10, 100.0])  # seed 0 only


def test_a_shared_train_run_is_one_trial_per_configuration_and_hears_each_seed_as_it_ends(tmp_path):
    """search.shared_train_run: a configuration's seeds are one trial, its control's another; the
    trial's per-seed final results (in on_trial_result) are what Optuna's mean is made of, a seed
    without one when the trial ends failed, and --resume's rerun that finishes it reaches Optuna again."""
    from ncsearch._trial_driver import REPLICATE_RESULT_KEY

    spec = _spec(shared_train_run=True, max_concurrent=2)
    search = _searcher(spec, tmp_path, name="shared")
    asked, last = _drain(search)
    identities = [TrialIdentity.of(c) for _, c in asked]
    # max_concurrent 2, one trial per configuration: both configurations start, the control once
    assert [(i.role, i.replicates) for i in identities] == [("trial", (0, 1)), ("control", (0, 1))] and last is None
    for trial_id, config in asked:
        identity = TrialIdentity.of(config)
        for replicate in identity.replicates:
            seed = TrialIdentity(identity.role, identity.group, replicate)
            search.on_trial_result(trial_id, {**_result(seed, searched_values(config)["nc3.alpha"]),
                                              REPLICATE_RESULT_KEY: replicate})
        search.on_trial_complete(trial_id, {FINAL_KEY: 1.0})
    (second, config), = _drain(search, start=10)[0]
    assert TrialIdentity.of(config).replicates == (0, 1) and TrialIdentity.of(config).control == identities[1].group
    alpha = searched_values(config)["nc3.alpha"]
    search.on_trial_result(second, {**_result(TrialIdentity("trial", "c002", 0), alpha), REPLICATE_RESULT_KEY: 0})
    search.on_trial_complete(second, None, error=True)  # seed 1 never reported: it failed
    assert search.suggest("t99") == Searcher.FINISHED
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/optuna.db")
    by_alpha = {t.params["nc3.alpha"]: t.values for t in study.trials}
    first_alpha = searched_values(asked[0][1])["nc3.alpha"]
    assert by_alpha[first_alpha] == pytest.approx([60.5 + first_alpha / 10, 99.5])  # mean over both seeds
    assert by_alpha[alpha] == pytest.approx([60.0 + alpha / 10, 100.0])  # seed 0 only

    # --resume runs the trial again: it reports seed 0 again and seed 1 for the first time
    for replicate in (0, 1):
        search.on_trial_result(second, {**_result(TrialIdentity("trial", "c002", replicate), alpha),
                                        REPLICATE_RESULT_KEY: replicate})
    search.on_trial_complete(second, {FINAL_KEY: 1.0})
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 3 and study.trials[2].user_attrs["ncsearch.seeds"] == 2
    assert study.trials[2].values == pytest.approx([60.5 + alpha / 10, 99.5])


def test_a_state_saved_with_one_replicate_per_trial_still_restores(tmp_path):
    """Searcher states saved before shared Train runs map a trial to one replicate, not a tuple."""
    spec = _spec(control=False, max_concurrent=2)
    search = _searcher(spec, tmp_path, name="old")
    asked, _ = _drain(search)
    import pickle

    path = tmp_path / "searcher.pkl"
    search.save(str(path))
    saved = pickle.loads(path.read_bytes())
    state = saved["state"]
    state["_trial_of"] = {trial: (group, replicates[0]) for trial, (group, replicates) in state["_trial_of"].items()}
    state.pop("shared")
    path.write_bytes(pickle.dumps(saved))
    again = _searcher(spec, tmp_path, name="old")
    again.restore(str(path))
    for trial_id, config in asked:
        again.on_trial_complete(trial_id, _result(TrialIdentity.of(config), searched_values(config)["nc3.alpha"]))
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
