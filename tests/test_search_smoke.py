"""`ncsearch run search_spaces/smoke.yaml` for real: Ray Tune + Optuna + Ray Train V2 + MLflow SQLite,
with 2 seeds per configuration and a seed-matched control over 2 alpha values (6 training runs).

One search (the session-wide `smoke` fixture of conftest.py, which the MLflow UI browser test reads
too); every test reads what it left behind: the run directory, the MLflow store, the Optuna study,
the report, and `ncsearch compare` / `report` / `pareto` run on it.
"""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest

from conftest_search import SMOKE, run

ICAT, PPPL = "stereoset/gender/icat", "perplexity/pppl_sampled"


def _role(smoke, role):
    return [r for r in smoke["runs"] if r.data.tags.get("ncsearch.role") == role]


def _identities(run_dir):
    return [json.loads(p.read_text()) for p in sorted((run_dir / "trials").glob("*/eval/identity.json"))]


def _checkpoint_of(run_dir, trial_id):
    """The trial's final checkpoint: its workers wrote the evaluation folder into it (eval/)."""
    folder = (run_dir / "trials" / trial_id / "eval").resolve().parent
    assert (folder / "model" / "config.json").is_file() and folder.name.startswith("checkpoint_"), folder
    return str(folder)


def test_prints_the_run_directory_first_and_a_verdict(smoke):
    out = smoke["proc"].stdout
    assert out.splitlines()[0] == f"run directory: {smoke['run_dir']}"
    assert "6 runs finished, 0 failed (2 configurations)" in out
    assert "Pareto front of configuration means:" in out and "Verdict:" in out
    assert "report.html" in out


def test_each_control_is_trained_once_per_seed(smoke):
    identities = _identities(smoke["run_dir"])
    assert len(identities) == 6
    controls = [i for i in identities if i["role"] == "control"]
    assert sorted(i["replicate"] for i in controls) == [0, 1] and len({i["group"] for i in controls}) == 1
    assert all(i["alpha"] == 0.0 for i in controls)
    trials = [i for i in identities if i["role"] == "trial"]
    assert sorted((i["params"]["nc3.alpha"], i["seed"]) for i in trials) == [(1.0, 0), (1.0, 1), (10.0, 0), (10.0, 1)]
    assert {i["control"] for i in trials} == {controls[0]["group"]}
    # a control shares its seed's data order and masks: the same seed, the same control key
    assert {i["control_key"] for i in identities} == {controls[0]["control_key"]}
    # and in MLflow: one control run holding exactly one seed run per seed
    (control,) = _role(smoke, "control")
    seeds = [r for r in _role(smoke, "seed") if r.data.tags["mlflow.parentRunId"] == control.info.run_id]
    assert sorted(r.data.tags["ncsearch.replicate"] for r in seeds) == ["0", "1"]


def test_mlflow_reads_search_configuration_seed(smoke):
    (parent,) = _role(smoke, "parent")
    configurations = _role(smoke, "configuration")
    assert parent.info.status == "FINISHED" and len(configurations) == 2
    assert {c.info.run_name for c in configurations} == {"alpha=1", "alpha=10"}
    seeds = _role(smoke, "seed")
    assert len(seeds) == 6 and all(s.info.status == "FINISHED" for s in seeds)
    for config in configurations:
        assert config.data.tags["mlflow.parentRunId"] == parent.info.run_id
        mine = [s for s in seeds if s.data.tags["mlflow.parentRunId"] == config.info.run_id]
        assert len(mine) == 2
        m = config.data.metrics
        assert m[ICAT] == pytest.approx(sum(s.data.metrics[ICAT] for s in mine) / 2)  # mean over seeds
        assert m[f"{ICAT}.ci_low"] <= m[ICAT] <= m[f"{ICAT}.ci_high"]
        assert f"{ICAT}.seed_sd" in m and m["replicates/finished"] == 2
        for key in (f"delta/{ICAT}", f"delta/{ICAT}.ci_low", f"delta/{ICAT}.p_value", f"delta/{PPPL}.p_holm"):
            assert key in m, key
    seed = seeds[0]
    assert seed.data.metrics[f"{PPPL}.ci_low"] <= seed.data.metrics[PPPL] <= seed.data.metrics[f"{PPPL}.ci_high"]
    assert "collapse/unc3" in seed.data.metrics and "train/unc3" in seed.data.metrics
    steps = [m.step for m in smoke["client"].get_metric_history(seed.info.run_id, "train/loss")]
    assert steps == [2, 4]
    evals = {a.path for a in smoke["client"].list_artifacts(seed.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/intervals.json", "eval/identity.json", "eval/stereoset"} <= evals
    names = {a.path for a in smoke["client"].list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= names
    names = {a.path for a in smoke["client"].list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/pareto.csv", "pareto/configurations.csv", "pareto/all_trials.csv", "pareto/pareto.png",
            "pareto/pareto.html"} <= names
    assert math.isfinite(parent.data.metrics["pareto/hypervolume"]) and parent.data.tags["ncsearch.verdict"]


def test_optuna_hears_one_mean_per_configuration(smoke):
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke['run_dir'] / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    configurations = {c.info.run_name: c for c in _role(smoke, "configuration")}
    for t in complete:
        metrics = configurations[f"alpha={t.params['nc3.alpha']:g}"].data.metrics
        assert t.values == pytest.approx([metrics[ICAT], metrics[PPPL]])


def test_report_has_its_sections_and_embedded_figures(smoke):
    from ncsearch.report import SECTIONS

    html = (smoke["run_dir"] / "report" / "report.html").read_text()
    markdown = (smoke["run_dir"] / "report" / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in markdown, section
    assert html.count("data:image/png;base64,") >= 3
    assert "No configuration moved any fairness metric beyond noise" in markdown or "beyond noise:" in markdown
    front = pd.read_csv(smoke["run_dir"] / "pareto" / "pareto.csv")
    assert {"label", "vs_control", f"{ICAT}.ci_low"} <= set(front.columns)


def test_compare_reproduces_the_reported_delta_from_runs_and_from_checkpoints(smoke, tmp_path):
    from ncsearch._records import load_search
    from ncsearch.analysis import SearchAnalysis

    identities = _identities(smoke["run_dir"])
    control = next(i for i in identities if i["role"] == "control" and i["replicate"] == 0)
    trial = next(i for i in identities if i["role"] == "trial" and i["replicate"] == 0 and i["params"]["nc3.alpha"] == 10.0)
    record = load_search("smoke", tracking_uri=f"sqlite:///{smoke['run_dir'] / 'mlflow.db'}")
    analysis = SearchAnalysis(record.runs, record.groups, record.objectives)
    reported = analysis.summaries[trial["group"]].seed_deltas[ICAT][0]

    stored = run("compare", control["trial_id"], trial["trial_id"], "--storage", str(smoke["storage"]),
                 "--json", str(tmp_path / "stored.json"), timeout=300)
    assert stored.returncode == 0, stored.stderr
    checkpoints = [_checkpoint_of(smoke["run_dir"], side["trial_id"]) for side in (control, trial)]
    # ICAT alone: scoring the checkpoints' exact PPPL too would only add time to this test
    rescored = run("compare", *checkpoints, "--storage", str(smoke["storage"]),
                   "--benchmarks", "stereoset", "--domains", "gender",
                   "--limit", "stereoset=40", "--json", str(tmp_path / "rescored.json"), timeout=600)
    assert rescored.returncode == 0, rescored.stderr
    for path in ("stored.json", "rescored.json"):
        rows = {m["metric"]: m for m in json.loads((tmp_path / path).read_text())["metrics"]}
        value, low, high = rows[ICAT]["difference"]
        assert value == pytest.approx(reported.value, abs=1e-9), path
        assert (low, high) == pytest.approx((reported.low, reported.high), abs=1e-9), path
    assert ICAT in stored.stdout and "B - A (paired)" in stored.stdout


def test_report_and_pareto_commands_read_the_search_back(smoke):
    shown = run("pareto", str(smoke["run_dir"]), "--all", timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "hypervolume" in shown.stdout and "vs control" in shown.stdout and "[" in shown.stdout
    again = run("report", str(smoke["run_dir"]), "--no-log", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "Verdict:" in again.stdout


def test_the_search_starts_only_the_processes_its_trials_use(smoke):
    """Each of the 6 trials runs in a Tune actor (Tune reuses them: at most one per trial), which
    runs Ray Train's controller in its own process (training/_lean_trainer.py), and starts one Train
    worker and Ray Train's synchronization actor. The local Ray instance starts no idle workers, no
    AutoscalingCoordinator (no autoscaler reads its requests), and no queue actor per trial (the
    trial reports to Tune in its own process, training/_tune_report.py)."""
    started = smoke["ray_workers"]
    assert set(started) == {"ImplicitFunc", "RayTrainWorker", "SynchronizationActor"}, started
    assert started["RayTrainWorker"] == started["SynchronizationActor"] == 6 and started["ImplicitFunc"] <= 6, started


def _seed_runs_by_run(runs) -> dict[tuple[str, str, str], object]:
    """Seed runs keyed by (kind, alpha, replicate)."""
    return {(r.data.tags["ncsearch.kind"], r.data.params["nc3.alpha"], r.data.tags["ncsearch.replicate"]): r
            for r in runs if r.data.tags.get("ncsearch.role") == "seed"}


def test_a_shared_train_run_trains_a_configurations_seeds_in_one_trial_to_the_same_numbers(smoke, tmp_path):
    """search.shared_train_run: the `smoke` fixture's search at one of its alphas, with the
    configuration's (and the control's) two seeds trained one after another in one Tune trial and one
    Ray Train run. The 4 seeds still get their own MLflow runs and evaluation folders, with the numbers
    of the fixture's runs of the same seeds."""
    from mlflow import MlflowClient

    proc = run("run", str(SMOKE), "--storage", str(tmp_path), "--set", "search.shared_train_run=true",
               "--set", "nc3.alpha={grid: [10.0]}")
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "4 runs finished, 0 failed (1 configurations)" in out
    run_dir = tmp_path / "smoke"
    identities = _identities(run_dir)
    assert len(identities) == 4 and len({i["trial_id"] for i in identities}) == 2  # 2 trials of 2 seeds
    for trial_id in {i["trial_id"] for i in identities}:
        finals = sorted(p.name for p in (run_dir / "trials" / trial_id / "train").glob("run*_checkpoint_*"))
        assert finals == ["run0_checkpoint_000004", "run1_checkpoint_000004"], finals
    assert out.count(" seeds 0, 1 (trial ") == 2 and out.count(" finished (") == 4

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    shared = _seed_runs_by_run(client.search_runs([exp.experiment_id], max_results=1000))
    alone = {key: r for key, r in _seed_runs_by_run(smoke["runs"]).items() if key[1] in ("10.0", "0.0")}
    assert sorted(shared) == sorted(alone) and len(shared) == 4
    for key, run_ in shared.items():
        assert run_.info.status == "FINISHED"
        for metric in (ICAT, PPPL, "train/loss", "train/unc3"):
            assert run_.data.metrics[metric] == pytest.approx(alone[key].data.metrics[metric], rel=1e-5), (key, metric)
        history = client.get_metric_history(run_.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [2, 4]  # its own curve, not its twin seed's
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    (told,) = study.trials  # Optuna heard the configuration once, the mean over its two seeds
    seeds = [r for key, r in shared.items() if key[0] == "trial"]
    assert told.state.name == "COMPLETE" and len(seeds) == 2
    assert told.values == pytest.approx([sum(r.data.metrics[m] for r in seeds) / 2 for m in (ICAT, PPPL)], rel=1e-9)
