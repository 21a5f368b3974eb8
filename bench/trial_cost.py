"""Where a trial's time goes, at this commit and at a baseline commit, measured in the same run.

Each side runs a real `ncsearch run` (Ray Tune + Optuna + Ray Train + MLflow, in a subprocess with
that commit's source tree first on PYTHONPATH) of that commit's own alpha.yaml trial: its model,
training settings and evaluation suite as that commit ships them, with alpha on a grid of `--trials`
values, no replicates or controls (so that commits before them accept the space), `--concurrent`
trials at a time, one thread each. Both sides get the same adapted model path and data root.
With `--seeds N`, each configuration is trained at N seeds: as N trials of one seed on the baseline
side (which must know `search.replicates`), and with `search.shared_train_run` on the candidate side,
as one trial that trains them one after another in one Ray Train run. The table is then per training
run (seed), not per Tune trial, on both sides. `--baseline-seeds 1` keeps the baseline at one seed per
configuration (a commit from before replicates, such as d2dc018).

Every process of the run carries the phase tracer in bench/_trace_site (see its docstring for what is
timed and how), so old and new code are timed by the same instrumentation. The table gives seconds
per trial for each phase, and the ratio baseline / this commit (above 1: this commit is faster):

- search: Ray start, the search's wall time, trials per hour;
- fixed costs: worker-group start (the trainer's fit() until the worker's loop runs), worker setup
  (model load, corpus, vocabulary, DDP wrap), checkpoint write and report, checkpoint read for
  evaluation, worker-group teardown;
- of which the worker's imports: the time the trial's (rank-0) worker process spends importing
  modules (outermost imports only) from its start until its first batch, a part of worker-group start
  and worker setup above, not added to them again;
- training: data, forward, NC3, backward, optimizer, other (Python between them, report windows);
  tokens per second per core over the steps (non-padding tokens, counted from the same batches);
- evaluation: each benchmark's scoring and the rest of the suite;
- tracking: the MLflow client calls of the whole search, per trial;
- evaluation precision per second, per headline metric: 1 / ((interval half-width / value)^2 x the
  benchmark's seconds per trial). Half-widths come from scoring one checkpoint (this commit's first
  trial) with this commit's code under each side's evaluation settings (the baseline commit may
  predate intervals); seconds come from each side's own trace.

    .venv/bin/python bench/trial_cost.py                       # d2dc018 vs HEAD, 4 trials, 2 at a time
    .venv/bin/python bench/trial_cost.py --trials 2 --concurrent 1 --steps 20   # quick look
    .venv/bin/python bench/trial_cost.py --only candidate --floor   # fixed costs beside bench/fit_floor.py's floor
    .venv/bin/python bench/trial_cost.py --baseline 995712e --seeds 2   # seeds as trials vs in one Train run
    .venv/bin/python bench/trial_cost.py --seeds 2 --baseline-seeds 1   # d2dc018 (one seed) vs shared runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRACE_SITE = Path(__file__).resolve().parent / "_trace_site"
ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
TRAIN_PHASES = ("train.data", "train.forward", "train.nc3", "train.backward", "train.optimizer")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="d2dc018", help="commit to compare against (default d2dc018)")
    parser.add_argument("--space", default="search_spaces/alpha.yaml", help="relative to each side's tree")
    parser.add_argument("--trials", type=int, default=4, help=f"alpha grid size (at most {len(ALPHAS)})")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the space's)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per configuration: trials of one seed on the baseline side, one shared Train "
                             "run (search.shared_train_run) on the candidate side (default 1)")
    parser.add_argument("--baseline-seeds", type=int, default=None,
                        help="seeds per configuration on the baseline side (default: --seeds; 1 for a commit "
                             "without replicates)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--candidate", default="HEAD", help="commit to measure (default HEAD; committed code only)")
    parser.add_argument("--only", choices=("baseline", "candidate"), default=None, help="run one side only")
    parser.add_argument("--keep", default=None, help="keep the runs and traces in this folder")
    parser.add_argument("--json", default=None, help="also write the table to this JSON file")
    parser.add_argument("--floor", action="store_true",
                        help="also run bench/fit_floor.py (same trials and concurrency) and print the candidate's "
                             "fixed costs beside that floor")
    return parser.parse_args(argv)


def side_seeds(args: argparse.Namespace, role: str) -> int:
    """Seeds per configuration on side `role`."""
    if role == "baseline" and args.baseline_seeds is not None:
        return args.baseline_seeds
    return args.seeds


def trial_space(args: argparse.Namespace, tree: Path, model_path: str, *, candidate: bool = True) -> dict:
    """`tree`'s own alpha.yaml trial as a space every compared commit accepts (with `--seeds`, one that
    knows replicates, and on the candidate side shared Train runs)."""
    raw = yaml.safe_load((tree / args.space).read_text(encoding="utf-8"))
    raw["name"] = "trial-cost"
    raw["model"] = model_path
    raw["nc3"]["alpha"] = {"grid": list(ALPHAS[: args.trials])}
    if args.steps is not None:
        raw["train"]["steps"] = args.steps
        raw["train"]["checkpoint_every"] = args.steps
    raw["search"] = {"algorithm": "grid", "num_samples": args.trials, "max_concurrent": args.concurrent, "seed": 0}
    seeds = side_seeds(args, "candidate" if candidate else "baseline")
    if seeds > 1:
        raw["search"]["replicates"] = seeds
        if candidate:
            raw["search"]["shared_train_run"] = True
    return raw


def commit_tree(commit: str, folder: Path) -> Path:
    """A commit's files (git archive), without touching this checkout; extracted once."""
    tree = folder / f"tree-{commit}"
    if tree.is_dir():
        return tree
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             check=True, capture_output=True).stdout
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_search(tree: Path, space: dict, folder: Path, data_root: Path) -> float:
    """One traced `ncsearch run` of `space` with `tree`'s code; its wall time in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(space), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(TRACE_SITE)]),
               NCSEARCH_PHASE_TRACE=str(folder / "trace"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               NCSEARCH_CACHE_DIR=str(folder / "cache"))  # this side's own cache (see warm_reference)
    command = [sys.executable, "-m", "ncsearch.cli", "run", str(space_file), "--storage", str(folder / "runs"),
               "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--data-dir", str(data_root)]
    started = time.perf_counter()
    with open(folder / "run.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(command, check=False, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (folder / "run.log").read_text(encoding="utf-8").splitlines()[-15:]
        raise SystemExit(f"ncsearch run with {tree} failed ({proc.returncode}):\n" + "\n".join(tail))
    return wall


def warm_reference(tree: Path, space: dict, folder: Path, data_root: Path) -> float | None:
    """Seconds of the once-per-model perplexity reference pass (`perplexity.reference`), computed into
    this side's own fresh cache before its search, with every core, as `ncsearch run` does on a
    machine that has not seen the model: the search is then timed as every later one runs."""
    options = ((space.get("eval") or {}).get("options") or {}).get("perplexity") or {}
    if not options.get("reference"):
        return None
    reference = space["model"] if options["reference"] == "base" else options["reference"]
    code = ("import sys; from ncsearch.evaluate.perplexity import prepare_reference; "
            "prepare_reference({'reference': sys.argv[1]}, data_root=sys.argv[2], limit=None)")
    env = dict(os.environ, PYTHONPATH=str(tree), NCSEARCH_CACHE_DIR=str(folder / "cache"), HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, reference, str(data_root)], check=True, env=env)
    return time.perf_counter() - started


def read_trace(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((folder / "trace").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def phase_table(events: list[dict], trials: int, wall: float, tokens_per_trial: float) -> dict[str, float]:
    """Seconds per trial for each phase (see the module docstring), from one run's trace. `trials`
    counts training runs: a Train run of several (one loop, several evaluations) holds several, and
    each later run's setup (from the previous run's evaluation to its first batch) is worker setup."""
    total: dict[str, float] = defaultdict(float)
    for event in events:
        if not event["span"]:
            total[event["label"]] += event["dur"]
    spans = defaultdict(list)
    for event in events:
        if event["span"]:
            spans[event["label"]].append(event)
    by_pid = defaultdict(list)
    for event in events:
        by_pid[event["pid"]].append(event)

    start_up = tear_down = setup = steps_window = in_fit_eval = worker_imports = 0.0
    for fit in spans["train.fit"]:
        fit_end = fit["start"] + fit["dur"]
        loops = [e for e in spans["loop"] if fit["start"] <= e["start"] <= fit_end]
        # Concurrent trials overlap in time: a fit's own loop is the one of its Train run (the trace's
        # "key"); traces without keys fall back to the first loop in its window.
        own = [e for e in loops if fit.get("key") is not None and e.get("key") == fit["key"]]
        if fit.get("key") is not None and not own:
            print(f"[trial_cost] warning: no loop of Train run {fit['key']} in its fit's window; joined by time")
        loops = own or loops
        if not loops:
            continue
        loop = min(loops, key=lambda e: e["start"])
        start_up += loop["start"] - fit["start"]
        tear_down += fit_end - (loop["start"] + loop["dur"])
        worker = [e for e in by_pid[loop["pid"]] if loop["start"] <= e["start"] <= loop["start"] + loop["dur"]]
        first_batch = min((e["start"] for e in worker if e["label"] == "train.data"), default=loop["start"])
        setup += first_batch - loop["start"]
        # The worker process starts after fit() does: its imports until the first batch (Ray's worker
        # and Train modules, torch, transformers, ncsearch) are part of the two phases above.
        worker_imports += sum(e["dur"] for e in spans["import"]
                              if e["pid"] == loop["pid"] and fit["start"] <= e["start"] < first_batch)
        # Evaluation on the trial's own workers (after f2bcd1b) runs inside the loop, after the last step.
        scoring = sum(e["dur"] for e in worker if e["start"] >= first_batch and (
            (e["span"] and e["label"] == "eval.suite")
            or (not e["span"] and e["label"] in ("eval.model_write", "checkpoint.read"))))
        in_fit_eval += scoring
        # A shared Train run: each later run starts after the previous run's evaluation.
        later_setup = 0.0
        for suite in (e for e in worker if e["span"] and e["label"] == "eval.suite"):
            suite_end = suite["start"] + suite["dur"]
            next_batch = min((e["start"] for e in worker if e["label"] == "train.data" and e["start"] > suite_end),
                             default=None)
            if next_batch is not None:
                later_setup += next_batch - suite_end
        setup += later_setup
        steps_window += loop["start"] + loop["dur"] - first_batch - scoring - later_setup

    per = 1.0 / trials
    row: dict[str, float] = {"search.wall_s": wall, "search.trials_per_hour": trials / wall * 3600.0,
                             "search.ray_init": total_span(spans["ray.init"])}
    row["fixed.worker_group_start"] = start_up * per
    row["fixed.worker_setup"] = setup * per
    row["fixed.checkpoint_write"] = total["checkpoint.write"] * per
    row["fixed.checkpoint_report"] = total["train.report"] * per
    row["fixed.checkpoint_read"] = total["checkpoint.read"] * per
    row["fixed.eval_model_write"] = total["eval.model_write"] * per
    row["fixed.worker_group_teardown"] = tear_down * per
    row["of_which.worker_imports"] = worker_imports * per  # inside worker-group start and worker setup
    step_phases = sum(total[p] for p in TRAIN_PHASES)
    for phase in TRAIN_PHASES:
        row[phase] = total[phase] * per
    in_steps = steps_window - total["checkpoint.write"] - total["train.report"]
    row["train.other"] = max(0.0, in_steps - step_phases) * per
    row["train.steps_s"] = in_steps * per
    row["train.tokens_per_s_per_core"] = tokens_per_trial / (in_steps * per) if in_steps > 0 else float("nan")
    benchmarks = sorted(k for k in total if k.startswith("eval."))
    for name in benchmarks:
        row[name] = total[name] * per
    suite = total_span(spans["eval.suite"])
    row["eval.other"] = max(0.0, suite - sum(total[k] for k in benchmarks)) * per
    row["eval.total"] = suite * per + row["fixed.checkpoint_read"] + row["fixed.eval_model_write"]
    row["tracking"] = total["tracking"] * per
    fits = total_span(spans["train.fit"]) * per
    row["trial.train_s"] = fits - in_fit_eval * per
    row["trial.total_s"] = fits + row["eval.total"] - in_fit_eval * per  # scoring inside fit() counted once
    fixed = sum(v for k, v in row.items() if k.startswith("fixed."))
    row["fixed.total"] = fixed
    row["fixed.share"] = fixed / row["trial.total_s"] if row["trial.total_s"] else float("nan")
    return row


def total_span(events: list[dict]) -> float:
    return sum(e["dur"] for e in events)


def tokens_per_trial(space: dict, data_root: Path, model_path: str) -> float:
    """Non-padding tokens the trial trains on (the batches are a pure function of the step)."""
    from ncsearch.config import parse_spec
    from ncsearch.debias import get_baseline
    from ncsearch.models import load_mlm
    from ncsearch.training._data import MLMBatches, chunk_corpus

    spec = parse_spec({**space, "nc3": {**space["nc3"], "alpha": 1.0}, "search": {}}, source="<bench>")
    _, tokenizer = load_mlm(model_path)
    baseline = get_baseline(spec.baseline)(data_root=data_root, options=getattr(spec.baseline_options, spec.baseline))
    texts = baseline.corpus(limit=spec.train.max_train_sentences)
    batches = MLMBatches(chunk_corpus(texts, tokenizer, spec.train.max_length), tokenizer,
                         batch_size=spec.train.batch_size, mlm_probability=spec.train.mlm_probability,
                         seed=spec.train.seed)
    return float(sum(int(batches.batch(step)["attention_mask"].sum()) for step in range(spec.train.steps)))


def precision_rows(spaces: dict[str, dict], rows: dict[str, dict[str, float]], checkpoint: Path,
                   data_root: Path) -> dict[str, dict[str, float]]:
    """Relative half-width, seconds and precision per second of each headline metric, per side."""
    import fnmatch

    import torch

    from ncsearch.evaluate import get_benchmark, run_suite
    from ncsearch.models import load_mlm

    torch.set_num_threads(1)
    model, tokenizer = load_mlm(str(checkpoint))  # the checkpoint's model/ folder
    out: dict[str, dict[str, float]] = {}
    for name, space in spaces.items():
        ev = space["eval"]
        options = {bench: dict(values) for bench, values in (ev.get("options") or {}).items()}
        if options.get("perplexity", {}).get("reference") == "base":
            options["perplexity"]["reference"] = space["model"]
        result = run_suite(model, tokenizer, ev["benchmarks"], data_root=data_root, limits=ev.get("limits") or {},
                           options=options, domains=ev.get("domains"), progress=False)
        row: dict[str, float] = {}
        for bench in ev["benchmarks"]:
            seconds = rows[name].get(f"eval.{bench}")
            patterns = get_benchmark(bench).headline
            for key, value in result.metrics.items():
                if "/overall/" not in key and key in result.intervals and any(fnmatch.fnmatch(key, p) for p in patterns) and value:
                    low, high = result.intervals[key]
                    relative = (high - low) / 2 / abs(value)
                    shown = key.replace("pppl_sampled", "pppl")  # the same quantity, exact or estimated
                    row[f"{shown} rel. half-width"] = relative
                    if seconds and relative > 0:
                        row[f"{shown} precision/s"] = 1.0 / (relative ** 2 * seconds)
        out[name] = row
    return out


def run_floor(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """bench/fit_floor.py's lean-trainer floor (seconds per trial) at this run's trials and
    concurrency: what a Tune trial launching a Train run pays before any of ncsearch's code runs."""
    out = work / "floor.json"
    command = [sys.executable, str(Path(__file__).resolve().parent / "fit_floor.py"), "--trials", str(args.trials),
               "--concurrent", str(args.concurrent), "--json", str(out)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    print(f"[trial_cost] floor: {' '.join(command[1:])} ...", flush=True)
    with open(work / "floor.log", "w", encoding="utf-8") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    lean = json.loads(out.read_text(encoding="utf-8"))["lean"]
    return {"floor.worker_group_start": lean["start_s"], "floor.model_load": lean["load_s"],
            "floor.teardown": lean["teardown_s"], "floor.total": lean["total_s"]}


def show(rows: dict[str, dict[str, float]], baseline: str) -> None:
    names = list(rows)
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    print(f"\n{'phase (s per trial) / metric':44s}" + "".join(f"{n:>14s}" for n in names)
          + (f"{'ratio':>10s}" if len(names) == 2 else ""))
    for key in keys:
        values = [rows[n].get(key) for n in names]
        cells = "".join(f"{v:14.3f}" if v is not None else f"{'-':>14s}" for v in values)
        ratio = ""
        if len(names) == 2 and all(v not in (None, 0.0) for v in values):
            higher_better = key.endswith(("per_hour", "per_s_per_core", "precision/s"))
            r = values[1] / values[0] if higher_better else values[0] / values[1]
            ratio = f"{r:9.2f}x"
        print(f"{key:44s}{cells}{ratio}")
    if len(names) == 2:
        print(f"\nratio: {names[0]} / {names[1]} for times and half-widths, {names[1]} / {names[0]} for rates "
              f"(above 1: {names[1]} is better)")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not 1 <= args.trials <= len(ALPHAS):
        raise SystemExit(f"--trials must be 1..{len(ALPHAS)}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ncsearch-trial-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    # Both sides are named commits, extracted from git: edits in the working tree while the bench
    # runs cannot leak into either side. This process imports the candidate's code too.
    commits = {"baseline": short_commit(args.baseline), "candidate": short_commit(args.candidate)}
    if args.only:
        commits = {args.only: commits[args.only]}
    trees = {role: commit_tree(commit, work) for role, commit in commits.items()}
    sys.path.insert(0, str(commit_tree(short_commit(args.candidate), work)))
    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    data_root = resolve_data_root(args.data_dir)
    model_path = ensure_model("minilm-l6", data_root=data_root)
    rows, spaces, folders = {}, {}, {}
    for role, tree in trees.items():
        name = commits[role]
        folder = folders[name] = work / f"run-{name}"
        space = spaces[name] = trial_space(args, tree, model_path, candidate=role == "candidate")
        tokens = tokens_per_trial(space, data_root, model_path)
        print(f"[trial_cost] {role} {name}: {args.trials} configurations x {side_seeds(args, role)} seed(s), "
              f"{args.concurrent} trials at a time ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)  # --keep may hold a pre-seeded cache/ for a quick look
        once = warm_reference(tree, space, folder, data_root)
        wall = run_search(tree, space, folder, data_root)
        rows[name] = phase_table(read_trace(folder), args.trials * side_seeds(args, role), wall, tokens)
        if once is not None:
            rows[name]["once.reference_s"] = once
        print(f"[trial_cost] {name}: {wall:.0f} s; trial: {space['train']['steps']} steps of "
              f"{space['train']['batch_size']}x{space['train']['max_length']} ({tokens / space['train']['steps']:.0f} "
              f"non-pad tokens a step), precision {space['train'].get('precision', 'fp32')}, suite "
              f"{space['eval']['benchmarks']} limits {space['eval'].get('limits')} options {space['eval'].get('options')}",
              flush=True)
    if args.floor:
        floor = run_floor(args, work)
        last = list(rows)[-1]
        rows[last].update(floor)
        rows[last]["fixed.total / floor.total"] = rows[last]["fixed.total"] / floor["floor.total"]
    print(f"machine: {os.cpu_count()} CPUs")
    show(rows, commits.get("baseline", ""))
    checkpoints = sorted(folders[list(rows)[-1]].glob("runs/**/*checkpoint_*/model"))
    if checkpoints:
        os.environ["NCSEARCH_CACHE_DIR"] = str(folders[list(rows)[-1]] / "cache")  # its reference table, if any
        precision = precision_rows(spaces, rows, checkpoints[0], data_root)
        print(f"\nevaluation precision, all sides scored on {checkpoints[0].parent}")
        show(precision, commits.get("baseline", ""))
        rows = {name: {**rows[name], **precision[name]} for name in rows}
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    if not args.keep:
        print(f"(runs and traces in {work})")
    return 0


def short_commit(ref: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True,
                          check=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
