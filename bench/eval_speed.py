"""Evaluation speed: batched scorers vs the one-sentence-at-a-time reference loop.

Times, on one model (default: the adapted `minilm-l6`) and a fixed number of CPU threads:
- full CrowS-Pairs (1,508 pairs) with bias-bench's likelihood score (optionally also Nangia et al.'s);
- full StereoSet intrasentence (2,106 examples, ~7k masked sentences);
each batched (`ncsearch.evaluate`) and as the reference implementations do it: one masked sentence
per forward pass, the full-vocabulary head at every position. The reference is timed on an evenly
spaced sample and extrapolated per masked sentence (printed as such); on the sample the two must agree.
Each side is timed `--repeat` times, alternating; the speed-up is the ratio of the medians, and the
speed-up of each alternating pair is printed too (on a shared VM both sides drift together, so the
per-pair ratios show how steady the comparison is). The default sample makes the reference's timed
window about as long as the batched run's.

Targets (issue 5): CrowS <= 120 s, StereoSet <= 60 s on 2 threads, both >= 10x faster than the reference.

    .venv/bin/python bench/eval_speed.py [--model minilm-l6] [--threads 2] [--batch-size 64]
        [--sample 400] [--repeat 3] [--nangia] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def _reference_logprob(model, ids: list[int], position: int, target: int) -> float:
    """One forward of the whole masked LM (as bias-bench and nyu-mll do), log-prob at one position."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, position]
    return torch.log_softmax(logits.float(), dim=-1)[target].item()


def _time_reference(model, requests, sample: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Seconds per request on an evenly spaced sample, the sample's indices and its log-probs."""
    picks = np.unique(np.linspace(0, len(requests) - 1, num=min(sample, len(requests))).astype(int))
    start = time.perf_counter()
    values = np.array([_reference_logprob(model, requests[i].input_ids, requests[i].positions[0], requests[i].targets[0]) for i in picks])
    return (time.perf_counter() - start) / len(picks), picks, values


def _bench(label: str, model, requests, *, batch_size: int, pad_id: int, sample: int, repeat: int) -> dict:
    """Times both sides `repeat` times, alternating, and reports medians (a shared VM is noisy)."""
    from ncsearch.evaluate import score_masked

    batched_runs, reference_runs = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        batched = score_masked(model, requests, batch_size=batch_size, pad_id=pad_id)
        batched_runs.append(time.perf_counter() - start)
        per_request, picks, reference = _time_reference(model, requests, sample)
        reference_runs.append(per_request * len(requests))
    batched_s, reference_s = float(np.median(batched_runs)), float(np.median(reference_runs))
    diff = float(np.max(np.abs(np.array([batched[i][0] for i in picks]) - reference)))
    pair_speedups = [r / b for r, b in zip(reference_runs, batched_runs)]
    runs = f" (median of {repeat}: {', '.join(f'{t:.1f}' for t in batched_runs)})" if repeat > 1 else ""
    print(f"{label}: {len(requests)} masked sentences")
    print(f"  batched (batch {batch_size}):       {batched_s:8.1f} s{runs}")
    print(f"  one at a time (extrapolated from {len(picks)}): {reference_s:8.1f} s  "
          f"({reference_s / len(requests) * 1000:.1f} ms each)")
    print(f"  speed-up: {reference_s / batched_s:5.1f}x   max |batched - reference| on the sample: {diff:.2e}")
    if repeat > 1:
        print(f"  speed-up of each alternating pair: {', '.join(f'{x:.1f}x' for x in pair_speedups)}")
    return {"requests": len(requests), "batched_s": batched_s, "batched_runs_s": batched_runs,
            "reference_s_extrapolated": reference_s, "reference_runs_s": reference_runs,
            "reference_sample": int(len(picks)), "speedup": reference_s / batched_s,
            "pair_speedups": pair_speedups, "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample", type=int, default=400, help="reference requests timed per benchmark")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side; medians are reported")
    parser.add_argument("--nangia", action="store_true", help="also time Nangia et al.'s scorer (batched only)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from ncsearch.data import load_crows_pairs, load_stereoset, resolve_data_root
    from ncsearch.evaluate.crows_pairs import crows_requests, plan_pair
    from ncsearch.evaluate.stereoset import stereoset_requests
    from ncsearch.models import load_mlm

    root = resolve_data_root(args.data_dir)
    model, tokenizer = load_mlm(args.model, data_root=root)
    model.eval()
    pad_id = tokenizer.pad_token_id or 0
    load_before = os.getloadavg()
    print(f"model {args.model}, {args.threads} threads, load average before: {load_before[0]:.1f}")

    results = {"model": args.model, "threads": args.threads, "batch_size": args.batch_size}
    timing = dict(batch_size=args.batch_size, pad_id=pad_id, sample=args.sample, repeat=args.repeat)
    start = time.perf_counter()
    plans = [plan_pair(pair, tokenizer) for pair in load_crows_pairs(root)]
    crows, _ = crows_requests(plans, tokenizer.mask_token_id, scorers=("bias_bench",))
    prep = time.perf_counter() - start
    results["crows_pairs"] = _bench(f"CrowS-Pairs, bias-bench score, {len(plans)} pairs", model, crows, **timing)
    results["crows_pairs"]["prepare_s"] = prep
    print(f"  (tokenizing and aligning: {prep:.1f} s)")

    start = time.perf_counter()
    items = load_stereoset(root, kind="intrasentence")
    stereo, _ = stereoset_requests(items, tokenizer)
    prep = time.perf_counter() - start
    results["stereoset"] = _bench(f"StereoSet intrasentence, {len(items)} examples", model, stereo, **timing)
    results["stereoset"]["prepare_s"] = prep
    print(f"  (building masked sentences: {prep:.1f} s)")

    if args.nangia:
        from ncsearch.evaluate import score_masked

        nangia, _ = crows_requests(plans, tokenizer.mask_token_id, scorers=("nangia",))
        start = time.perf_counter()
        score_masked(model, nangia, batch_size=args.batch_size, pad_id=pad_id)
        results["crows_pairs_nangia_batched_s"] = time.perf_counter() - start
        print(f"CrowS-Pairs, Nangia score: {len(nangia)} masked sentences, batched "
              f"{results['crows_pairs_nangia_batched_s']:.1f} s")

    load_after = os.getloadavg()
    results["load_average"] = {"before": load_before[0], "after": load_after[0]}
    print(f"load average after: {load_after[0]:.1f} (the machine has {os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
