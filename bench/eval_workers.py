"""A trial's evaluation time with 1 and with N workers (issue 15: evaluation on the trial's own workers).

Scores one model (default: the adapted `minilm-l6`) on a trial's evaluation suite, the way a search
trial's Ray Train workers do after training (`ncsearch.training._evaluate`): once in one process with
`--threads` threads (what a 1-worker trial does, and the same work the trial driver did alone before
f2bcd1b), then in N gloo processes of `--threads` threads each under `shard_scoring`, each scoring its
share of every benchmark's batches. Both runs score the same checkpoint with the same settings at this
commit; the ratio printed is time(1 worker) / time(N workers), and the metrics of the two runs must agree
(max relative difference printed). Bootstrap intervals are left out of both (rank 0 alone computes them
in a trial; they are the same work either way).

Target: ratio >= 1.6 with 2 workers of 1 thread on a machine with >= 2 free cores.

    .venv/bin/python bench/eval_workers.py [--model minilm-l6] [--workers 2] [--threads 1]
        [--benchmarks stereoset crows_pairs perplexity collapse] [--limit perplexity=40] [--repeat 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUITE = ["stereoset", "crows_pairs", "perplexity", "collapse"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--benchmarks", nargs="+", default=SUITE)
    parser.add_argument("--limit", action="append", default=["perplexity=40"], metavar="NAME=N")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each side; medians are compared")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict:
    limits = {name: int(n) for name, n in (item.split("=", 1) for item in args.limit)}
    return {"limits": limits, "domains": ["gender"], "batch_size": 64, "progress": False, "resamples": 0}


def _score(model_dir: str, data_root: str, names: list[str], settings: dict) -> tuple[float, dict[str, float]]:
    from ncsearch.evaluate import run_suite
    from ncsearch.evaluate._shard import ShardGroup, shard_scoring
    from ncsearch.models import load_mlm

    model, tokenizer = load_mlm(model_dir)
    group = ShardGroup.from_torch()
    if group is not None:
        group.all_gather(None)  # start together
    start = time.perf_counter()
    with shard_scoring(group):
        result = run_suite(model, tokenizer, names, data_root=data_root, **settings)
    return time.perf_counter() - start, result.metrics


def _worker(rank: int, world: int, threads: int, model_dir: str, data_root: str, names: list[str], settings: dict,
            init: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        seconds, metrics = _score(model_dir, data_root, names, settings)
        slowest = max(dist_gather(seconds))
        if rank == 0:
            Path(out).write_text(json.dumps({"seconds": slowest, "metrics": metrics}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def dist_gather(value: float) -> list[float]:
    from ncsearch.evaluate._shard import ShardGroup

    group = ShardGroup.from_torch()
    return group.all_gather(value) if group is not None else [value]


def _sharded(args: argparse.Namespace, model_dir: str, data_root: str, settings: dict) -> tuple[float, dict]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.json"
        mp.spawn(_worker, args=(args.workers, args.threads, model_dir, data_root, args.benchmarks, settings,
                                str(Path(scratch) / "init"), str(out)), nprocs=args.workers, join=True)
        data = json.loads(out.read_text())
    return data["seconds"], data["metrics"]


def main(argv: list[str] | None = None) -> int:
    import statistics

    import torch

    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    args = parse(argv)
    data_root = str(resolve_data_root(None))
    model_dir = ensure_model(args.model, data_root=Path(data_root))
    settings = _settings(args)
    one, many = [], []
    for _ in range(args.repeat):
        torch.set_num_threads(args.threads)
        seconds, alone = _score(model_dir, data_root, args.benchmarks, settings)
        one.append(seconds)
        seconds, shared = _sharded(args, model_dir, data_root, settings)
        many.append(seconds)
    worst = max(abs(shared[k] - v) / max(abs(v), 1e-12) for k, v in alone.items() if v == v)
    row = {"model": args.model, "benchmarks": args.benchmarks, "limits": settings["limits"], "threads": args.threads,
           "workers": args.workers, "one_worker_s": statistics.median(one), "n_workers_s": statistics.median(many),
           "runs_one": one, "runs_n": many, "max_rel_metric_diff": worst}
    row["ratio"] = row["one_worker_s"] / row["n_workers_s"]
    print(f"evaluation of {args.model} on {', '.join(args.benchmarks)} ({args.threads} thread(s) per worker)")
    print(f"  1 worker : {row['one_worker_s']:.1f} s  (runs: {', '.join(f'{s:.1f}' for s in one)})")
    print(f"  {args.workers} workers: {row['n_workers_s']:.1f} s  (runs: {', '.join(f'{s:.1f}' for s in many)})")
    print(f"  ratio 1/{args.workers} workers: {row['ratio']:.2f}x (target >= 1.6 for 2); "
          f"max relative metric difference {worst:.2e}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
