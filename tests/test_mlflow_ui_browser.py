"""The MLflow UI in a real browser (issue 16, drill 7): `ncsearch ui` on the finished smoke search, and
headless Chromium (Debian package `chromium`, which .ci/run installs) opening the parent run's
Pareto artifacts (PNG and HTML) and its report, as a person would, through the UI's own pages.

What "rendered" means here: the PNG is decoded by the page at its full size and the screenshot of it
is not blank; in the HTML artifact (the UI shows it in a sandboxed iframe) Plotly has drawn its SVG
with the objectives' axis titles; in the report the title, every section and every embedded figure
are there. Each page's screenshot is kept: under $CI_ARTIFACTS_DIR/mlflow-ui/ when set, else under
test-artifacts/mlflow-ui/ in the checkout (ignored by git).

The search's runs must read as model training, not as GenAI evaluation: in the UI's default
("GenAI") view they are listed under "Training runs" (they have their trained models as outputs) and
not under "Evaluation runs", and the link `ncsearch ui` prints opens the "Model training" view.

Skipped, saying why, where no Chromium is installed. About 1 minute besides the shared smoke search.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from headless_browser import Browser, find_chromium, png_spread

from conftest_search import REPO, env, free_port, kill_group, ncsearch, wait_http

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: install the Debian package `chromium` (apt-get install -y chromium; .ci/run does) "
           "to open the MLflow UI in a real browser",
)
ARTIFACTS = Path(os.environ.get("CI_ARTIFACTS_DIR") or REPO / "test-artifacts") / "mlflow-ui"
ICAT, PPPL = "stereoset/gender/icat", "perplexity/pppl_sampled"


@pytest.fixture(scope="module")
def ui(smoke):
    """`ncsearch ui RUN_DIR` on a free port; the links it printed."""
    port = free_port()
    proc = subprocess.Popen(ncsearch("ui", str(smoke["run_dir"]), "--port", str(port)), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed = [proc.stdout.readline() for _ in range(4)]
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", proc=proc)
        (runs_link,) = [line.split("runs: ", 1)[1].strip() for line in printed if line.startswith("runs: ")]
        parent = next(r for r in smoke["runs"] if r.data.tags.get("ncsearch.role") == "parent")
        yield {"base": base, "runs_link": runs_link, "printed": printed, "parent": parent,
               "experiment_id": parent.info.experiment_id, "client": smoke["client"], "runs": smoke["runs"]}
    finally:
        kill_group(proc, signal.SIGTERM)
        kill_group(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


def _keep(name: str, png: bytes) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(png)
    return path


def _text_with(*needles: str) -> str:
    """JS: the page's text once it holds every one of `needles` (null before)."""
    return (f"(() => {{ const t = document.body ? document.body.innerText : ''; "
            f"return {json.dumps(list(needles))}.every(n => t.includes(n)) ? t : null; }})()")


def _artifact_page(ui: dict, path: str) -> str:
    return (f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs/{ui['parent'].info.run_id}/artifactPath/{path}"
            "?workflowType=machine_learning")


def test_the_search_is_a_model_training_experiment(ui, browser):
    client = ui["client"]
    parent = client.get_run(ui["parent"].info.run_id)
    assert client.get_experiment(ui["experiment_id"]).tags["mlflow.experimentKind"] == "custom_model_development"
    seeds = [client.get_run(r.info.run_id) for r in ui["runs"] if r.data.tags.get("ncsearch.role") == "seed"]
    assert seeds and len(parent.outputs.model_outputs) == len(seeds)  # every trained model, an output of the search
    for seed in seeds:
        (output,) = seed.outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.source_run_id == seed.info.run_id
        assert model.tags["ncsearch.checkpoint"] == seed.data.tags["ncsearch.checkpoint"]
        group = client.get_run(seed.data.tags["mlflow.parentRunId"])
        assert output.model_id in {o.model_id for o in group.outputs.model_outputs}
    name = parent.info.run_name

    # the link `ncsearch ui` prints: the "Model training" view, the search listed under "Runs"
    assert ui["runs_link"] == f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs?workflowType=machine_learning"
    shown = browser.visit(ui["runs_link"], _text_with("Model training", "Runs", name))
    _keep("runs-model-training-view", shown.screenshot)
    assert "Evaluation runs" not in shown.value

    # the UI's default "GenAI" view: a "Training runs" page that lists the search ...
    shown = browser.visit(f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs", _text_with("Training runs", name))
    _keep("runs-genai-view", shown.screenshot)
    # ... and an "Evaluation runs" page without it: its empty state, once the runs were fetched
    empty = "Evaluate and improve the quality"
    shown = browser.visit(f"{ui['base']}/#/experiments/{ui['experiment_id']}/evaluation-runs",
                          f"(() => {{ const t = document.body ? document.body.innerText : ''; "
                          f"return (t.includes({json.dumps(empty)}) || t.includes({json.dumps(name)})) ? t : null; }})()")
    _keep("evaluation-runs-genai-view", shown.screenshot)
    assert name not in shown.value and empty in shown.value


def test_the_pareto_png_renders(ui, browser):
    ready = ("(() => { const i = [...document.images].find(i => i.complete && i.naturalWidth > 300); "
             "if (!i) return null; const r = i.getBoundingClientRect(); "
             "return [i.naturalWidth, i.naturalHeight, r.left, r.top, r.right, r.bottom]; })()")
    shown = browser.visit(_artifact_page(ui, "pareto/pareto.png"), ready)
    _keep("pareto-png", shown.screenshot)
    width, height, *box = shown.value
    assert (width, height) == _png_size(ui["client"], ui["parent"].info.run_id, "pareto/pareto.png")
    spread, colours = png_spread(shown.screenshot, tuple(int(v) for v in box))
    assert spread > 10 and colours > 20, (spread, colours)  # a drawn figure, not a blank box


def _png_size(client, run_id: str, path: str) -> tuple[int, int]:
    from PIL import Image

    local = client.download_artifacts(run_id, path)
    with Image.open(local) as image:
        return image.size


def test_the_pareto_html_renders(ui, browser):
    # evaluated in every frame: only the artifact's sandboxed iframe has Plotly in it
    ready = ("(() => (typeof Plotly === 'object' && document.querySelectorAll('.main-svg').length > 0) ? "
             "{text: document.body.innerText, points: document.querySelectorAll('.scatterlayer .point').length} : null)()")
    shown = browser.visit(_artifact_page(ui, "pareto/pareto.html"), ready)
    _keep("pareto-html", shown.screenshot)
    assert f"{ICAT} (higher is better)" in shown.value["text"] and f"{PPPL} (lower is better)" in shown.value["text"]
    assert re.search(r"configurations? on the front", shown.value["text"]), shown.value["text"][:500]
    assert shown.value["points"] >= 3  # two configurations and the control
    spread, colours = png_spread(shown.screenshot)
    assert spread > 10 and colours > 20, (spread, colours)


def test_the_report_renders(ui, browser):
    from ncsearch.report import SECTIONS

    ready = ("(() => { const h = document.querySelector('h1'); if (!h || !h.textContent.startsWith('ncsearch report')) "
             "return null; const imgs = [...document.images]; "
             "return {h1: h.textContent, h2: [...document.querySelectorAll('h2')].map(e => e.textContent), "
             "images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length}; })()")
    shown = browser.visit(_artifact_page(ui, "report/report.html"), ready)
    _keep("report-html", shown.screenshot)
    assert shown.value["h1"] == "ncsearch report: smoke"
    for section in SECTIONS:
        assert section in shown.value["h2"], (section, shown.value["h2"])
    assert shown.value["images"] >= 3 and shown.value["decoded"] == shown.value["images"]
    spread, colours = png_spread(shown.screenshot)
    assert spread > 10 and colours > 20, (spread, colours)
