"""Cost of the intervals: 2,000 bootstrap resamples of every metric against the scoring they summarise.

Scores one model (default: the adapted `minilm-l6`) on the evaluation a trial of
`search_spaces/alpha.yaml` runs (StereoSet and CrowS-Pairs gender, pseudo-perplexity on 50 passages,
held-out collapse on the gender words), with one CPU thread as a trial's evaluation has, and prints
per benchmark the scoring time, the bootstrap time and their ratio. The bootstrap is timed
`--repeat` times (median). The ratio's reference is the same commit's scoring without intervals,
measured in the same run.

With `--baseline COMMIT` (default d2dc018, the commit before intervals existed) it also times that
commit's `ncsearch eval` on the same flags in a temporary git worktree and prints HEAD's evaluation
(scoring + intervals) over the baseline's. The two suites differ on purpose (HEAD scores CrowS-Pairs
with bias-bench's scorer only unless asked, and adds held-out collapse), so that ratio is context,
not the target.

Target (issue 12): bootstrap <= 5% of the evaluation time.

    .venv/bin/python bench/bootstrap.py [--resamples 2000] [--repeat 3] [--threads 1] [--baseline d2dc018|none]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LIMITS = {"perplexity": 50}
BENCHMARKS = ["stereoset", "crows_pairs", "perplexity", "collapse"]


def _baseline_seconds(commit: str, data_root: Path, threads: int) -> float:
    """Wall time of `ncsearch eval` at `commit` (a temporary worktree, this venv's packages)."""
    with tempfile.TemporaryDirectory(prefix="ncsearch-baseline-") as folder:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", folder, commit], check=True,
                       capture_output=True)
        try:
            env = dict(os.environ, PYTHONPATH=folder, OMP_NUM_THREADS=str(threads))
            code = (f"import sys, time, torch; torch.set_num_threads({threads}); from ncsearch.cli import main; "
                    "t = time.perf_counter(); rc = main(sys.argv[1:]); print('SECONDS', time.perf_counter() - t); sys.exit(rc)")
            args = ["eval", "minilm-l6", "--benchmarks", "stereoset", "crows_pairs", "perplexity", "--domains", "gender",
                    "--limit", "perplexity=50", "--data-dir", str(data_root), "--no-progress"]
            out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=folder, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            return float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("SECONDS")))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", folder], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="d2dc018", help="commit to time `ncsearch eval` at, or 'none'")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ncsearch.data import resolve_data_root
    from ncsearch.evaluate import intervals, run_suite
    from ncsearch.models import load_mlm

    root = resolve_data_root(args.data_dir)
    model, tokenizer = load_mlm(args.model, data_root=root)
    start = time.perf_counter()
    result = run_suite(model, tokenizer, BENCHMARKS, data_root=root, limits=LIMITS, domains=["gender"],
                       progress=False, resamples=0)
    evaluation = time.perf_counter() - start
    scoring = dict(zip(result.details["suite/timings"]["benchmark"], result.details["suite/timings"]["seconds"]))
    print(f"model {args.model}, {args.threads} thread(s), {args.resamples} resamples, bootstrap median of {args.repeat}")
    print(f"{'benchmark':<12} {'metrics':>7} {'units':>6} {'scoring s':>10} {'bootstrap s':>12} {'ratio':>7}")
    total = 0.0
    for name in BENCHMARKS:
        details = {k.split("/", 1)[1]: v for k, v in result.details.items() if k.startswith(f"{name}/")}
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            found = intervals(name, details, resamples=args.resamples)
            runs.append(time.perf_counter() - t)
        seconds = float(np.median(runs))
        total += seconds
        from ncsearch.evaluate import get_benchmark

        units = len(details[get_benchmark(name).resampling.table])
        print(f"{name:<12} {len(found):>7} {units:>6} {scoring[name]:>10.2f} {seconds:>12.3f} {seconds / scoring[name]:>6.1%}")
    print(f"{'all':<12} {'':>7} {'':>6} {evaluation:>10.2f} {total:>12.3f} {total / evaluation:>6.1%}  "
          f"(target <= 5.0%: {'met' if total / evaluation <= 0.05 else 'NOT met'})")
    if args.baseline.lower() != "none":
        base = _baseline_seconds(args.baseline, root, args.threads)
        print(f"`ncsearch eval` at {args.baseline}: {base:.1f} s; HEAD evaluation with intervals: "
              f"{evaluation + total:.1f} s ({(evaluation + total) / base:.2f}x; different suites, see the docstring)")


if __name__ == "__main__":
    main()
