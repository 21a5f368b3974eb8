"""Training throughput of the ncsearch loop vs a plain Hugging Face `Trainer`, and a trial's peak RSS.

Both sides train the same model (`minilm-l6`, the MLM-adapted MiniLM-L6) on the same chunked GAP
corpus with the same global batch, sequence length, learning rate and number of steps, on one worker
with the same number of threads. The ncsearch side is a real Ray Train V2 trial (`fit_trial`, one
worker, NC3 statistics kept; `--alpha` > 0 adds the regularizer's gradient); its tokens/s is the mean
of the report windows after the first (which holds warm-up). The HF side is `Trainer` with
`DataCollatorForLanguageModeling` (full-vocabulary logits at every position); its tokens/s is timed
over the same steps after the same warm-up. Tokens are non-padding tokens.

Targets: ratio ncsearch/HF >= 1.0 (the sparse head skips ~85% of the logits), peak RSS of the
trial's worker <= 3 GB.

    python bench/train_throughput.py                        # 40 steps x 16 x 128, 1 thread
    python bench/train_throughput.py --steps 12 --batch 8 --max-length 64   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--report-every", type=int, default=5, help="ncsearch report window (the first is warm-up)")
    parser.add_argument("--alpha", type=float, default=0.0, help="NC3 weight on the ncsearch side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (= the worker's CPUs)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def spec_for(args: argparse.Namespace):
    from ncsearch.config import parse_spec

    return parse_spec({
        "name": "bench-train",
        "model": args.model,
        "train": {"steps": args.steps, "batch_size": args.batch, "max_length": args.max_length,
                  "report_every": args.report_every, "checkpoint_every": args.steps, "lr": 5e-5},
        "nc3": {"alpha": args.alpha, "vocab": {"source": "gender"}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
        "resources": {"workers_per_trial": 1, "cpus_per_worker": args.threads},
    })


def run_ncsearch(args: argparse.Namespace, spec, data_root: Path, model_path: str, folder: Path) -> dict[str, float]:
    import ray

    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    ray.init(address="local", num_cpus=max(args.threads, 1), include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        started = time.perf_counter()
        fit_trial(spec, data_root=data_root, storage_path=folder / "runs", name="ncsearch",
                  callbacks=[metrics_log(folder / "log.jsonl")], model_path=model_path)
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    rows = read_metrics_log(folder / "log.jsonl")
    windows = [r["train/tokens_per_s"] for r in rows[1:]] or [rows[-1]["train/tokens_per_s"]]
    return {"tokens_per_s": sum(windows) / len(windows), "peak_rss_mb": max(r["train/peak_rss_mb"] for r in rows),
            "final_mlm_loss": rows[-1]["train/mlm_loss"], "trial_wall_s": wall}


def run_hf_trainer(args: argparse.Namespace, spec, data_root: Path, model_path: str, folder: Path) -> dict[str, float]:
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from ncsearch.debias import get_baseline
    from ncsearch.models import load_mlm
    from ncsearch.training import chunk_corpus

    torch.set_num_threads(args.threads)
    model, tokenizer = load_mlm(model_path)
    texts = get_baseline("mlm")(data_root=data_root).corpus()
    examples = [{"input_ids": ids} for ids in chunk_corpus(texts, tokenizer, args.max_length)]
    warmup = args.report_every

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.tokens = 0
            self.start: float | None = None
            self.end = 0.0

        def on_step_begin(self, targs, state, control, **kw):
            if state.global_step == warmup:
                self.start = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if self.start is not None:
                self.end = time.perf_counter()

    timer = Timer()

    class CountingCollator(DataCollatorForLanguageModeling):
        step = 0

        def __call__(self, features, return_tensors=None):
            batch = super().__call__(features, return_tensors)
            if CountingCollator.step >= warmup:
                timer.tokens += int(batch["attention_mask"].sum())
            CountingCollator.step += 1
            return batch

    train = spec.train
    targs = TrainingArguments(
        output_dir=str(folder / "hf"), per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=train.lr, weight_decay=train.weight_decay, warmup_steps=int(train.warmup_ratio * args.steps),
        max_grad_norm=train.grad_clip or 0.0, logging_steps=args.steps, save_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=train.seed, disable_tqdm=True,
    )
    collator = CountingCollator(tokenizer=tokenizer, mlm_probability=train.mlm_probability)
    model.train()
    trainer = Trainer(model=model, args=targs, train_dataset=examples, data_collator=collator, callbacks=[timer])
    out = trainer.train()
    elapsed = max(timer.end - (timer.start or timer.end), 1e-9)
    return {"tokens_per_s": timer.tokens / elapsed, "final_loss": float(out.training_loss)}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.steps <= 2 * args.report_every:
        print(f"--steps must exceed 2 x --report-every ({args.report_every}) to leave timed windows", file=sys.stderr)
        return 2
    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    data_root = resolve_data_root(args.data_dir)
    model_path = ensure_model(args.model, data_root=data_root)
    spec = spec_for(args)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder = Path(tmp)
        ours = run_ncsearch(args, spec, data_root, model_path, folder)
        hf = run_hf_trainer(args, spec, data_root, model_path, folder)
    ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
    results = {
        "model": args.model, "steps": args.steps, "batch": args.batch, "max_length": args.max_length,
        "threads": args.threads, "alpha": args.alpha, "ncsearch": ours, "hf_trainer": hf, "ratio": ratio,
        "load_average_1min_at_start": load, "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"model {args.model}: {args.steps} steps x {args.batch} x {args.max_length} tokens, {args.threads} thread(s), "
          f"nc3.alpha {args.alpha:g} (load average at start {load:.1f})")
    print(f"  ncsearch loop (Ray Train, 1 worker): {ours['tokens_per_s']:9.0f} tokens/s")
    print(f"  Hugging Face Trainer:                {hf['tokens_per_s']:9.0f} tokens/s")
    print(f"  ratio ncsearch / HF: {ratio:.2f}x  (target >= 1.0)")
    print(f"  peak RSS of the trial's worker: {ours['peak_rss_mb']:.0f} MiB  (target <= 3072)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
