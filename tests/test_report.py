"""The search analysis and report on synthetic runs with known effects (no Ray, no models).

Every run is "scored" on the same 90 StereoSet-like examples and 40 passages. Seeds add noise that
is shared by every group at that seed (common random numbers), and one configuration shifts the
stereotype scores by a known amount; another is identical to the control.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ncsearch._eval_store import EvalRecord
from ncsearch.analysis import GroupInfo, RunRecord, SearchAnalysis
from ncsearch.config import parse_spec
from ncsearch.evaluate import point_metrics
from ncsearch.evaluate.perplexity import PerplexityBenchmark
from ncsearch.evaluate.stereoset import StereoSetBenchmark
from ncsearch.report import SECTIONS, build_report, write_report

ICAT, PPPL, ODDS = "stereoset/gender/icat", "perplexity/pppl", "stereoset/gender/log_odds"


def _tables(seed: int, shift: float) -> dict[str, dict[str, pd.DataFrame]]:
    base = np.random.default_rng(100)  # the examples: the same for every run
    noise = np.random.default_rng(seed)  # the training seed: the same for every group at this seed
    n = 90
    stereo = base.uniform(0.2, 0.6, n) * np.exp(noise.normal(0, 0.05, n))
    anti = base.uniform(0.2, 0.6, n)
    examples = pd.DataFrame({"id": [f"e{i}" for i in range(n)], "target": [f"t{i % 3}" for i in range(n)],
                             "bias_type": "gender", "stereotype": stereo * np.exp(-shift), "anti-stereotype": anti,
                             "unrelated": base.uniform(0.0, 0.3, n)})
    passages = pd.DataFrame({"passage": np.arange(40), "tokens": base.integers(30, 60, 40)})
    passages["sum_logprob"] = -passages["tokens"] * (5.0 + noise.normal(0, 0.02) + base.normal(0, 0.3, 40))
    return {"stereoset": {"examples": examples}, "perplexity": {"passages": passages}}


def _run(trial: str, role: str, group: str, replicate: int, shift: float) -> RunRecord:
    details = _tables(replicate, shift)
    metrics = point_metrics(StereoSetBenchmark, details["stereoset"]["examples"])
    metrics |= point_metrics(PerplexityBenchmark, details["perplexity"]["passages"])
    metrics["train/unc3"] = 0.1 - shift / 10 + replicate * 0.01
    record = EvalRecord(Path("."), metrics, {}, {}, _details=details)
    return RunRecord(trial, role, group, replicate, "FINISHED", metrics=metrics, evaluation=record)


def _search(*, control: bool = True, replicates: int = 2, shift: float = 0.5):
    spec = parse_spec({
        "name": "synthetic", "nc3": {"alpha": {"grid": [1.0, 10.0]}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"], "domains": ["gender"]},
        "objectives": [{"metric": ICAT, "mode": "max"}, {"metric": PPPL, "mode": "min"}],
        "search": {"algorithm": "grid", "replicates": replicates, "control": control},
    })
    groups = {"c001": GroupInfo("c001", "trial", {"nc3.alpha": 10.0}, "alpha=10", "ctl" if control else None),
              "c002": GroupInfo("c002", "trial", {"nc3.alpha": 1.0}, "alpha=1", "ctl" if control else None)}
    runs = []
    for r in range(replicates):
        runs.append(_run(f"a{r}", "trial", "c001", r, shift))
        runs.append(_run(f"b{r}", "trial", "c002", r, 0.0))
        if control:
            runs.append(_run(f"k{r}", "control", "ctl", r, 0.0))
    if control:
        groups["ctl"] = GroupInfo("ctl", "control", {"nc3.alpha": 10.0}, "control")
    parent = SimpleNamespace(info=SimpleNamespace(run_id="p", status="FINISHED"),
                             data=SimpleNamespace(tags={"ncsearch.git_sha": "abc"}, metrics={}))
    return SimpleNamespace(experiment="synthetic", tracking_uri="sqlite:///x", parent=parent, spec=spec, groups=groups,
                           runs=runs, objectives=[(ICAT, "max"), (PPPL, "min")])


def test_paired_delta_finds_the_known_shift_and_not_the_identical_twin():
    record = _search()
    analysis = SearchAnalysis(record.runs, record.groups, record.objectives, resamples=500)
    shifted, twin = analysis.summaries["c001"], analysis.summaries["c002"]
    # log-odds of stereotype over anti-stereotype drop by exactly the shift on every example
    assert shifted.deltas[ODDS].value == pytest.approx(-0.5)
    assert shifted.deltas[ODDS].excludes(0.0) and shifted.deltas[ODDS].p_value < 0.01
    assert twin.deltas[ODDS].value == 0.0 and not twin.deltas[ODDS].excludes(0.0) and twin.deltas[ODDS].p_value == 1.0
    # the paired interval is far tighter than the configuration's own interval
    assert shifted.deltas[ODDS].half_width < shifted.estimates[ODDS].half_width / 5
    assert set(shifted.per_seed[ICAT]) == {0, 1} and ICAT in shifted.seed_sd
    assert analysis.difference("c001", "c002", ODDS).excludes(0.0)
    assert shifted.mlflow_metrics()[f"delta/{ODDS}.ci_high"] < 0


def test_report_verdict_front_and_files(tmp_path):
    record = _search()
    report = write_report(record, pareto_dir=tmp_path / "pareto", report_dir=tmp_path / "report", resamples=300)
    assert any("alpha=10 moved stereoset/gender/log_odds beyond noise" in line for line in report.verdict)
    assert not any("alpha=1 moved" in line for line in report.verdict)
    assert any("Two seeds per configuration" in line for line in report.verdict)
    assert report.hypervolume.value >= 0 and report.hypervolume.low <= report.hypervolume.high
    front = pd.read_csv(tmp_path / "pareto" / "pareto.csv")
    assert {"label", ICAT, f"{ICAT}.ci_low", f"{ICAT}.ci_high", "vs_control", "distinct_from"} <= set(front.columns)
    assert len(pd.read_csv(tmp_path / "pareto" / "all_trials.csv")) == 6
    assert (tmp_path / "pareto" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "error_x" in (tmp_path / "pareto" / "pareto.html").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    import html as html_module

    for section in SECTIONS:
        assert f"<h2>{html_module.escape(section)}" in html and f"## {section}" in markdown, section
    assert html.count("data:image/png;base64,") >= 3  # front, response curve, claim: embedded, opens offline
    assert "<script" not in html and "http" not in html.split("<body>", 1)[1]
    assert (tmp_path / "report" / "figures" / "response_nc3.alpha.png").is_file()
    assert "alpha=10" in markdown and "[" in markdown


def test_ties_are_reported_as_ties_without_a_control():
    record = _search(control=False, replicates=1, shift=0.0)
    report = build_report(record, resamples=300)
    assert any("One seed per configuration" in line for line in report.verdict)
    assert any("trained no control" in line for line in report.verdict)
    members = report.members
    if len(members) > 1:
        assert all(not m.distinct_from for m in members)
        assert any("cannot be told apart" in line for line in report.verdict)
    assert all(m.vs_control == "no control" for m in members)


def test_report_command_refuses_a_search_without_a_finished_run(tmp_path, capsys):
    from ncsearch.cli import main
    from ncsearch.tracking import SearchTracker

    spec = parse_spec({"name": "empty", "nc3": {"alpha": {"grid": [1.0]}}, "search": {"algorithm": "grid"},
                       "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
                       "objectives": [{"metric": ICAT, "mode": "max"}, {"metric": PPPL, "mode": "min"}]})
    SearchTracker(tmp_path / "empty", experiment="empty").start_parent(spec, yaml_path=None, ray_address=None)
    capsys.readouterr()  # MLflow's own lines while the test set the store up
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no finished trial" in err[0]
    assert not (tmp_path / "empty" / "report").exists()  # nothing half-written
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "cannot find a tracking store" in capsys.readouterr().err


@pytest.mark.parametrize("searched", ["vocab", "baseline"])
def test_response_curves_for_two_parameters_and_for_categories(tmp_path, searched):
    """Vocabulary size coloured by source (a numeric and a categorical parameter), and a baseline grid
    (categories only, each configuration beside its own control): the report draws and tabulates both."""
    record = _search()
    if searched == "vocab":
        values = {"c001": {"nc3.vocab.size": 50, "nc3.vocab.source": "gender"},
                  "c002": {"nc3.vocab.size": 100, "nc3.vocab.source": "random"}}
        record.spec = parse_spec({**record.spec.to_dict(), "nc3": {"alpha": 10.0, "vocab": {
            "size": {"grid": [50, 100]}, "source": {"grid": ["gender", "random"]}}}})
    else:
        values = {"c001": {"baseline": "cda"}, "c002": {"baseline": "mlm"}}
        record.spec = parse_spec({**record.spec.to_dict(), "baseline": {"grid": ["mlm", "cda"]}, "nc3": {"alpha": 10.0}})
    for group, v in values.items():
        record.groups[group].values = v
    write_report(record, pareto_dir=tmp_path / "pareto", report_dir=tmp_path / "report", resamples=200)
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("response_*.png"))
    expected = ["response_nc3.vocab.size.png", "response_nc3.vocab.source.png"] if searched == "vocab" else ["response_baseline.png"]
    assert figures == expected
    markdown = (tmp_path / "report" / "report.md").read_text()
    if searched == "baseline":
        assert "## Paired differences against the control (baseline x NC3)" in markdown


def test_unc3_is_not_differenced_across_vocabularies():
    record = _search()
    record.groups["c001"].values = {"nc3.vocab.size": 50}
    record.groups["c002"].values = {"nc3.vocab.size": 100}
    record.groups["ctl"].values = {"nc3.vocab.size": 50}  # the control keeps the first configuration's V
    analysis = SearchAnalysis(record.runs, record.groups, record.objectives, resamples=200)
    assert "train/unc3" in analysis.summaries["c001"].deltas
    assert "train/unc3" not in analysis.summaries["c002"].deltas and ODDS in analysis.summaries["c002"].deltas
    assert analysis.claim_points("train/unc3", ODDS)[2] == "values of the configurations' runs"


def test_a_search_where_every_run_failed_still_gets_its_report(tmp_path):
    """The end of a search writes the report whatever happened: here every seed failed (a full disk, say)."""
    record = _search()
    record.runs = [RunRecord(r.trial_id, r.role, r.group, r.replicate, "FAILED") for r in record.runs]
    report = write_report(record, pareto_dir=tmp_path / "pareto", report_dir=tmp_path / "report", resamples=100)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "No configuration finished, so there is nothing to conclude." in report.verdict
    assert "No run finished, so there is no response to show." in markdown
    assert not (tmp_path / "report" / "figures" / "response_nc3.alpha.png").exists()
