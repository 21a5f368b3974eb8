"""A trial's evaluation, run by its own Ray Train workers on their own devices, before the final checkpoint.

The trial driver asks Ray for no CPU and no GPU, so scoring there would run beside other trials on
whatever node the driver landed on. Instead, after the last training step every worker loads the
exported final model (as `load_mlm` would load it from the checkpoint: merged adapters, a saved
prefix) onto its device and runs the suite under `shard_scoring`: each worker scores its share of
every benchmark's batches and receives the others' (`ncsearch.evaluate._shard`), so the suite scales
with `resources.workers_per_trial` and gives the metrics of a single-process run.

Rank 0 alone bootstraps the intervals and writes the evaluation folder (`ncsearch._eval_store`) into
the final checkpoint as `eval/`, so it travels with the checkpoint through Ray's storage path (a
local folder, NFS, s3:// or gs://); its final report carries the metrics, the flat intervals and
the evaluation time. A restart after that checkpoint re-reports them without scoring again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ncsearch.config import SearchSpec

__all__ = ["EVAL_DIR", "EVAL_SECONDS_KEY", "evaluate_final_model"]

#: The evaluation folder inside the final checkpoint.
EVAL_DIR = "eval"
EVAL_SECONDS_KEY = "time/eval_s"


def evaluate_final_model(
    spec: SearchSpec,
    model_dir: Path,
    *,
    vocab_ids: list[int],
    data_root: Path,
    device: torch.device,
    rank: int,
    out_dir: Path | None,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """Score the model in `model_dir` on the trial's suite, sharded over the initialised process group.

    Every rank must call this. Rank 0 writes the evaluation folder into `out_dir` (with `identity`,
    what was scored and how) and returns the report: metrics, `<metric>/low|high`, EVAL_SECONDS_KEY,
    the tokenizer fingerprint and this node; the other ranks return {}.
    """
    from ncsearch._eval_store import write_eval
    from ncsearch._node import node_identity
    from ncsearch._trial_driver import TOKENIZER_KEY, evaluation_suite
    from ncsearch.evaluate import run_suite
    from ncsearch.evaluate._shard import ShardGroup, shard_scoring
    from ncsearch.models import load_mlm, tokenizer_fingerprint
    from ncsearch.stats import RESAMPLES, flat_intervals

    start = time.perf_counter()
    model, tokenizer = load_mlm(str(model_dir), trust_remote_code=spec.trust_remote_code)
    model.to(device)
    names, options = evaluation_suite(spec, vocab_ids)
    # One record of how the checkpoint was scored, stored so `ncsearch compare` can rescore alike.
    settings = {"limits": dict(spec.eval.limits), "options": options, "batch_size": spec.eval.batch_size,
                "seed": spec.eval.seed, "fast_path": spec.eval.fast_path, "precision": spec.eval.precision,
                "domains": list(spec.eval.domain_filter() or []) or None}
    with shard_scoring(ShardGroup.from_torch()):
        result = run_suite(model, tokenizer, names, data_root=data_root, progress=False,
                           resamples=RESAMPLES if rank == 0 else 0, **settings)
    seconds = time.perf_counter() - start
    if rank != 0:
        return {}
    fingerprint = tokenizer_fingerprint(tokenizer)
    write_eval(out_dir, metrics={**result.metrics, EVAL_SECONDS_KEY: seconds}, intervals=result.intervals,
               details=result.details,
               identity={**identity, "tokenizer": fingerprint, "model": spec.model,
                         "eval": {"benchmarks": names, **settings}})
    report: dict[str, Any] = {k: float(v) for k, v in result.metrics.items()}
    report.update(flat_intervals(result.intervals))
    report[EVAL_SECONDS_KEY] = seconds
    report[TOKENIZER_KEY] = fingerprint
    report.update(node_identity())
    return report
