"""A configuration's seeds in one Ray Train run against one Train run each: fixed costs per seed.

Issue 13 asks for per-trial fixed costs of at most 10% of a trial. A Train run's fixed costs are
mostly its new worker process importing Ray Train, torch and transformers (bench/trial_cost.py,
`of_which.worker_imports`), paid once per Train run. `ncsearch.train.fit_runs` trains several specs
one after another in one Train run (training/_run_sequence.py). This bench trains alpha.yaml's trial
(its model, training settings and evaluation suite, alpha fixed) at `--seeds` seeds both ways, in
one local Ray instance, one run at a time, on one worker of one CPU, from a Ray actor as a search's
trial does:

- separate: `fit_trial` once per seed, each its own Train run (what a search trial does today);
- shared: one `fit_runs` call for all the seeds.

Every process carries the phase tracer of bench/_trace_site. Per seed, it prints the Train run's
wall time split into training (first batch to last optimizer step of each seed), evaluation (the
suite) and the rest, the fixed costs: worker-group start, imports, model load, corpus, checkpoints,
teardown. Both ways run the same arithmetic; the bench checks that each seed's final train/loss and
objectives agree between them.

    .venv/bin/python bench/seed_runs.py --seeds 2 --rounds 2
    .venv/bin/python bench/seed_runs.py --seeds 3 --steps 20     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE_SITE = Path(__file__).resolve().parent / "_trace_site"
TRAIN_PHASES = ("train.data", "train.forward", "train.nc3", "train.backward", "train.optimizer")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the configuration (default 2, alpha.yaml's)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the space's)")
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "alpha.yaml"))
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat both ways, alternating which goes first (default 1: separate first)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keep", default=None, help="keep the runs and traces in this folder")
    parser.add_argument("--json", default=None, help="also write the table to this JSON file")
    parser.add_argument("--inner", default=None, help=argparse.SUPPRESS)  # the traced child process
    return parser.parse_args(argv)


def train_both_ways(args: argparse.Namespace, work: Path) -> dict:
    """In the traced child: the seeds as separate Train runs, then as one, called from a Ray actor as a
    search's trial calls them (so Ray Train's controller runs in that process, training/_lean_trainer.py);
    wall times and the values that must agree."""
    sys.path.insert(0, str(REPO))
    import ray

    from ncsearch.config import load_spec
    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model
    from ncsearch.search import set_train_env

    overrides = [f"nc3.alpha={args.alpha}"] + ([f"train.steps={args.steps}"] if args.steps else [])
    spec = load_spec(args.space, overrides)
    data_root = resolve_data_root(args.data_dir)
    model_path = ensure_model(spec.model, data_root=data_root)
    set_train_env(None)
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        trial = ray.remote(num_cpus=0)(_Trial).remote()
        return ray.get(trial.run.remote(spec.to_dict(), args.seeds, args.rounds, str(data_root), str(model_path),
                                        str(work)))
    finally:
        ray.shutdown()


class _Trial:
    """Stands in for a search's Tune trial actor: asks Ray for no CPU and calls the trainers."""

    def run(self, spec_data: dict, seeds: int, rounds: int, data_root: str, model_path: str, work: str) -> dict:
        sys.path.insert(0, str(REPO))
        from ncsearch.config import parse_spec
        from ncsearch.train import fit_runs, fit_trial

        spec = parse_spec(spec_data)
        specs = [spec.for_replicate(r) for r in range(seeds)]
        evaluations = [{"identity": {"bench": "seed_runs", "seed": s.train.seed}} for s in specs]
        storage = Path(work, "runs")

        def separate(round_: int) -> list:
            return [fit_trial(seeded, data_root=data_root, storage_path=storage, name=f"separate-{round_}-{seeded.train.seed}",
                              model_path=model_path, extra_config={"evaluation": evaluation})
                    for seeded, evaluation in zip(specs, evaluations)]

        def shared(round_: int) -> list:
            return fit_runs(specs, data_root=data_root, storage_path=storage, name=f"shared-{round_}",
                            model_path=model_path, evaluations=evaluations)

        walls: dict[str, float] = {"separate": 0.0, "shared": 0.0}
        outcomes: dict[str, list] = {}
        order: list[str] = []
        for round_ in range(rounds):
            for way in (("separate", "shared") if round_ % 2 == 0 else ("shared", "separate")):
                started = time.perf_counter()
                outcomes[way] = (separate if way == "separate" else shared)(round_)
                walls[way] += (time.perf_counter() - started) / rounds
                order.append(way)
        objectives = [o.base_metric for o in spec.objectives]
        values = {way: [{k: o.metrics.get(k) for k in ("train/loss", *objectives)} for o in found]
                  for way, found in outcomes.items()}
        return {"walls": walls, "values": values, "model": spec.model, "steps": spec.train.steps, "order": order}


def split_fits(events: list[dict]) -> list[dict]:
    """Per Train run (a `train.fit` span, in order): its seconds of training, evaluation and the rest."""
    fits = sorted((e for e in events if e["label"] == "train.fit"), key=lambda e: e["start"])
    rows = []
    for fit in fits:
        lo, hi = fit["start"], fit["start"] + fit["dur"]
        inside = [e for e in events if lo <= e["start"] and e["start"] + e["dur"] <= hi + 1e-6 and e is not fit]
        suites = sorted((e for e in inside if e["label"] == "eval.suite"), key=lambda e: e["start"])
        steps = sorted((e for e in inside if e["label"] in TRAIN_PHASES), key=lambda e: e["start"])
        training, previous_end = 0.0, lo
        for suite in suites:  # a seed's training ends where its evaluation starts
            mine = [e for e in steps if previous_end <= e["start"] < suite["start"]]
            if mine:
                training += max(e["start"] + e["dur"] for e in mine) - mine[0]["start"]
            previous_end = suite["start"] + suite["dur"]
        evaluation = sum(s["dur"] for s in suites)
        worker_pids = {e["pid"] for e in inside if e["label"] == "loop"}
        imports = sum(e["dur"] for e in inside if e["label"] == "import" and e["pid"] in worker_pids)
        loads = sum(e["dur"] for e in inside if e["label"] == "model.load" and e["pid"] in worker_pids)
        rows.append({"seeds": len(suites), "wall": fit["dur"], "training": training, "evaluation": evaluation,
                     "fixed": fit["dur"] - training - evaluation, "worker_imports": imports, "model_load": loads})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.inner:
        result = train_both_ways(args, Path(args.inner))
        Path(args.inner, "result.json").write_text(json.dumps(result), encoding="utf-8")
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="ncsearch-seed-runs-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TRACE_SITE)]),
               NCSEARCH_PHASE_TRACE=str(work / "trace"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    command = [sys.executable, __file__, "--inner", str(work), "--seeds", str(args.seeds), "--space", args.space,
               "--alpha", str(args.alpha), "--rounds", str(args.rounds)] + (["--steps", str(args.steps)] if args.steps else []) + (
               ["--data-dir", args.data_dir] if args.data_dir else [])
    subprocess.run(command, env=env, check=True)
    result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    events = [json.loads(line) for path in sorted((work / "trace").glob("*.jsonl"))
              for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    fits = split_fits(events)
    # In time order, each round's fits: `seeds` single runs and one shared run, in the order the round took.
    separate, shared, position = [], [], 0
    for way in result["order"]:
        taken = args.seeds if way == "separate" else 1
        (separate if way == "separate" else shared).extend(fits[position:position + taken])
        position += taken
    n = args.seeds * args.rounds
    rows = {}
    for key in ("wall", "training", "evaluation", "fixed", "worker_imports", "model_load"):
        rows[key] = (sum(f[key] for f in separate) / n, sum(f[key] for f in shared) / n)
    print(f"machine: {os.cpu_count()} CPUs, one Train worker of one CPU, one run at a time; model {result['model']}; "
          f"alpha.yaml's trial at alpha={args.alpha:g}, {result['steps']} steps, its evaluation suite; {args.seeds} "
          f"seeds, {args.rounds} round(s) (order: {', '.join(result['order'])})")
    print(f"{'seconds per seed':<44s}{'separate':>10s}{'shared':>10s}{'ratio':>8s}")
    labels = {"wall": "Train run wall time", "training": "training (first batch to last step)",
              "evaluation": "evaluation (the suite)", "fixed": "fixed costs (the rest)",
              "worker_imports": "  of which the worker's imports", "model_load": "  of which model loads"}
    for key, (sep, sha) in rows.items():
        print(f"{labels[key]:<44s}{sep:>10.2f}{sha:>10.2f}{(sep / sha if sha else float('nan')):>8.2f}x")
    for way, (sep_fixed, wall) in {"separate": (rows["fixed"][0], rows["wall"][0]),
                                   "shared": (rows["fixed"][1], rows["wall"][1])}.items():
        print(f"fixed costs, {way}: {100 * sep_fixed / wall:.1f}% of a seed's Train run time")
    print(f"wall time for {args.seeds} seeds (mean over rounds): separate {result['walls']['separate']:.1f} s, "
          f"shared {result['walls']['shared']:.1f} s")
    same = all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k]))
               for a, b in zip(result["values"]["separate"], result["values"]["shared"]) for k in a
               if isinstance(a[k], float) and isinstance(b[k], float))
    print(f"each seed's final train/loss and objectives equal both ways (to 1e-5): {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "fits": fits, **result}, indent=2), encoding="utf-8")
    if not args.keep:
        print(f"(runs and traces in {work})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
