"""GPU check: mixed precision and fractional-GPU packing, measured on a machine with a CUDA GPU.

Prints, on the first CUDA device:
- training tokens/s at train.precision fp32 (TF32 products) and bf16 (and fp16 with --fp16): the real
  training recipe (`TrainingRecipe`, one in-process worker on the GPU) on `minilm-l6`, the same batches
  for each precision, `--steps` timed steps after `--warmup` steps; ratio bf16 / fp32;
- the peak GPU memory of each of those runs (`torch.cuda.max_memory_allocated`: model, optimizer state,
  activations of one trial's training), which says how many trials share one GPU;
- evaluation requests/s at eval.precision fp32 and bf16 (StereoSet and CrowS-Pairs, gender) and each
  headline metric's deviation bf16 - fp32, with the peak GPU memory of scoring;
- search throughput: `search_spaces/smoke.yaml` (6 training runs, `--search-steps` steps each) run
  through `ncsearch.search.run_search` twice: resources.gpus_per_worker 0.25 with 4 trials at a time,
  and 1 with 1 at a time; trials per hour of each and the ratio.

Targets (issue 15): bf16 training tokens/s > fp32's; bf16 evaluation deviation of every headline metric
within its bootstrap interval; four 0.25-GPU trials >= 3x the trials/hour of one 1-GPU trial.

Without a CUDA GPU it prints one line to stderr and exits 2 (nothing to measure).

    .venv/bin/python bench/gpu_check.py [--steps 40] [--warmup 10] [--batch 32] [--max-length 128]
        [--fp16] [--eval-limit 0] [--search-steps 40] [--skip-search] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
NO_GPU = "bench/gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False); nothing to measure"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per precision")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps first (one report window)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--fp16", action="store_true", help="also time train.precision fp16 (GradScaler)")
    parser.add_argument("--eval-limit", type=int, default=0, help="cap StereoSet/CrowS-Pairs examples (0: all)")
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--search-steps", type=int, default=40, help="train.steps of each smoke-search trial")
    parser.add_argument("--skip-search", action="store_true", help="skip the 0.25-GPU vs 1-GPU search comparison")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def _train_spec(args: argparse.Namespace, model_path: str, precision: str):
    from ncsearch.config import parse_spec

    steps = args.warmup + args.steps
    return parse_spec({
        "name": "gpu-check", "model": model_path,
        "train": {"steps": steps, "batch_size": args.batch, "max_length": args.max_length, "precision": precision,
                  "report_every": args.warmup, "checkpoint_every": 10 * steps, "lr": 5e-5},
        "nc3": {"alpha": 10.0, "vocab": {"source": "gender"}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
        "resources": {"gpus_per_worker": 1},
    })


def measure_training(args: argparse.Namespace, model_path: str, data_root: Path, precision: str) -> dict[str, float]:
    """Tokens/s over the windows after the first, and the peak GPU memory, of one in-process run."""
    import torch

    from ncsearch.training import TrainingRecipe
    from ncsearch.training._worker import LocalWorker

    class GpuWorker(LocalWorker):
        def __init__(self, store: Path):
            super().__init__(store)
            self.device = torch.device("cuda", torch.cuda.current_device())

        def wrap(self, module):
            return module.to(self.device)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        spec = _train_spec(args, model_path, precision)
        runtime = GpuWorker(Path(tmp))
        config = {"spec": spec.to_dict(), "data_root": str(data_root), "model_path": model_path}
        recipe = TrainingRecipe(config, runtime)
        try:
            recipe.setup()
            start = time.perf_counter()
            recipe.train()
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
        finally:
            recipe.cleanup()
    timed = runtime.reports[1:] or runtime.reports
    return {"tokens_per_s": sum(r["train/tokens_per_s"] for r in timed) / len(timed),
            "final_mlm_loss": runtime.reports[-1]["train/mlm_loss"], "train_wall_s": wall,
            "skipped_steps": runtime.reports[-1].get("train/skipped_steps", 0.0),
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}


def measure_evaluation(args: argparse.Namespace, model_path: str, data_root: Path) -> dict[str, object]:
    """Requests/s of StereoSet + CrowS-Pairs (gender) at fp32 and bf16, and the headline deviations."""
    import torch

    from ncsearch.evaluate import run_suite
    from ncsearch.evaluate._precision import deviations
    from ncsearch.evaluate._scoring import report_progress
    from ncsearch.models import load_mlm

    names = ["stereoset", "crows_pairs"]
    limits = {name: args.eval_limit for name in names} if args.eval_limit > 0 else {}
    model, tokenizer = load_mlm(model_path)
    model.to(torch.device("cuda", torch.cuda.current_device()))
    out: dict[str, object] = {}
    results = {}
    for precision in ("fp32", "bf16", "fp32"):  # fp32 twice: the first run warms the GPU up
        requests = [0]

        def hook(added: int, advanced: int, requests: list[int] = requests) -> None:
            requests[0] += added

        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        with report_progress(hook):
            result = run_suite(model, tokenizer, names, data_root=data_root, limits=limits, domains=["gender"],
                               batch_size=args.eval_batch, progress=False, resamples=200, precision=precision)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        results[precision] = result
        out[precision] = {"requests": requests[0], "seconds": seconds, "requests_per_s": requests[0] / seconds,
                          "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}
    found = deviations(names, results["fp32"].metrics, results["bf16"].metrics)
    out["deviation"] = {d.metric: {"fp32": d.fp32, "bf16": d.bf16, "deviation": d.deviation,
                                   "fp32_interval": list(results["fp32"].intervals.get(d.metric, (float("nan"),) * 2))}
                        for d in found}
    return out


def measure_search(args: argparse.Namespace, data_root: Path, gpus: float, concurrent: int) -> dict[str, float]:
    """Trials/hour of the smoke search at `gpus` per worker, `concurrent` trials at a time."""
    from ncsearch.config import load_spec
    from ncsearch.search import run_search

    overrides = [f"resources.gpus_per_worker={gpus}", f"search.max_concurrent={concurrent}",
                 f"train.steps={args.search_steps}", f"train.checkpoint_every={args.search_steps}",
                 "train.precision=bf16"]
    spec = load_spec(REPO / "search_spaces" / "smoke.yaml", overrides)
    with tempfile.TemporaryDirectory(prefix="gpu-check-search-") as tmp:
        start = time.perf_counter()
        outcome = run_search(spec, data_dir=data_root, storage=tmp, echo=lambda line: None)
        wall = time.perf_counter() - start
    import ray

    ray.shutdown()
    return {"gpus_per_worker": gpus, "concurrent": concurrent, "finished": outcome.finished,
            "failed": outcome.failed, "wall_s": wall, "trials_per_hour": outcome.finished / wall * 3600}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    data_root = resolve_data_root(args.data_dir)
    model_path = str(ensure_model(args.model, data_root=data_root))
    device = torch.cuda.get_device_name(torch.cuda.current_device())
    total_mib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**20
    results: dict[str, object] = {"device": device, "device_memory_mib": total_mib, "model": args.model,
                                  "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                                  "max_length": args.max_length}
    print(f"{device} ({total_mib:.0f} MiB), model {args.model}: {args.steps} timed steps after {args.warmup}, "
          f"batch {args.batch} x {args.max_length}")

    precisions = ["fp32", "bf16"] + (["fp16"] if args.fp16 else [])
    training = {p: measure_training(args, model_path, data_root, p) for p in precisions}
    results["training"] = training
    for p, r in training.items():
        extra = f", {r['skipped_steps']:.0f} skipped steps" if p == "fp16" else ""
        print(f"  train {p:4}: {r['tokens_per_s']:9.0f} tokens/s, peak GPU memory {r['peak_gpu_mib']:7.0f} MiB, "
              f"final MLM loss {r['final_mlm_loss']:.4f}{extra}")
    ratio = training["bf16"]["tokens_per_s"] / training["fp32"]["tokens_per_s"]
    results["train_bf16_over_fp32"] = ratio
    print(f"  train tokens/s bf16 / fp32: {ratio:.2f}x  (target > 1)")

    evaluation = measure_evaluation(args, model_path, data_root)
    results["evaluation"] = evaluation
    for p in ("fp32", "bf16"):
        e = evaluation[p]
        print(f"  eval {p}: {e['requests_per_s']:8.0f} requests/s ({e['requests']} requests, {e['seconds']:.1f} s), "
              f"peak GPU memory {e['peak_gpu_mib']:.0f} MiB")
    print(f"  eval requests/s bf16 / fp32: {evaluation['bf16']['requests_per_s'] / evaluation['fp32']['requests_per_s']:.2f}x")
    for key, d in evaluation["deviation"].items():
        low, high = d["fp32_interval"]
        print(f"    {key:36} fp32 {d['fp32']:10.4f}  bf16 {d['bf16']:10.4f}  bf16 - fp32 {d['deviation']:+.4f}  "
              f"(fp32 95% interval [{low:.4f}, {high:.4f}])")

    if not args.skip_search:
        packed = measure_search(args, data_root, 0.25, 4)
        whole = measure_search(args, data_root, 1.0, 1)
        results["search"] = {"quarter_gpu_x4": packed, "one_gpu_x1": whole,
                             "ratio": packed["trials_per_hour"] / whole["trials_per_hour"]}
        for label, r in (("4 trials x 0.25 GPU", packed), ("1 trial x 1 GPU", whole)):
            print(f"  search {label}: {r['finished']} runs in {r['wall_s']:.0f} s = {r['trials_per_hour']:.1f} trials/hour"
                  + (f" ({r['failed']} failed)" if r["failed"] else ""))
        print(f"  trials/hour, 4 x 0.25 GPU / 1 x 1 GPU: {results['search']['ratio']:.2f}x  (target >= 3)")
    peak = max(r["peak_gpu_mib"] for r in training.values())
    print(f"  peak GPU memory of one trial's training: {peak:.0f} MiB; a 0.25 share is {total_mib / 4:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
