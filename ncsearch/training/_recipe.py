"""The per-worker training recipe run by Ray Train: setup -> train -> cleanup.

One worker of a TorchTrainer (Train V2) runs `train_loop_per_worker(config)`. The recipe:

The runtime (rank, device, DDP wrapping, checkpoint, reporting) is a `WorkerRuntime` (_worker.py):
Ray Train's in production, a plain torch process group in the baseline contract test.

- setup: the concrete spec; the model from `load_mlm` (or from the checkpoint being resumed), changed as
  the baseline says (e.g. raised dropout, adapters) and wrapped by the runtime (Ray's `prepare_model`:
  DDP over gloo on CPU, nccl on GPU) around the sparse MLM head; the baseline's corpus, chunked to
  `max_length`; the vocabulary subset V (vocab.py) and the NC3 statistics on it (collapse.py);
  AdamW with linear warm-up and decay.
- train: per step, this worker's share of the global batch, loss = MLM (head only at masked positions)
  + the baseline's own terms + alpha * NC3 (statistics all-reduced over workers, gradient on the
  decoder rows only), backward, gradient clipping, optimizer and scheduler steps. Every
  `report_every` steps the train/* metrics go to the runtime (`ray.train.report`); every `checkpoint_every` steps and
  at the end a checkpoint goes with them. A non-finite loss raises TrialError before any update.
- cleanup: drop references so the worker's memory is returned before Ray tears it down.
"""

from __future__ import annotations

import gc
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ncsearch.debias import StepContext
from ncsearch.errors import TrialError
from ncsearch.training._checkpoint import (
    MODEL_DIR,
    TrainState,
    checkpoint_problem,
    read_state,
    write_checkpoint,
    write_model,
)
from ncsearch.training._data import MLMBatches, chunk_corpus
from ncsearch.training._optim import adamw, linear_warmup_decay
from ncsearch.training._precision import (
    apply_device_settings,
    autocast_for,
    batch_to_device,
    grad_scaler_for,
    resolve_precision,
)
from ncsearch.training._run_sequence import checkpoint_name, run_labels, train_runs
from ncsearch.training._seeding import derive_seed, seed_everything
from ncsearch.training._worker import RayWorker, WorkerRuntime

__all__ = ["TrainingRecipe", "train_loop_per_worker"]

# Ray Train V2 routes worker logging (and print) to the driver's console and the run's log files.
_log = logging.getLogger(__name__)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. `config`: {"spec": concrete SearchSpec.to_dict(), "data_root": str,
    "model_path": str (a loadable masked LM, e.g. from ncsearch.models.ensure_model)}, and from a
    search's trial driver "evaluation" (see TrainingRecipe) and "assets" ({"model", "data"}:
    `ncsearch._assets.ShippedFolder`s, unpacked here when this node lacks the driver's folders).
    With "runs" (a list of {"spec", "evaluation"}), the worker trains those runs one after another
    (`_run_sequence.py`)."""
    assets = config.get("assets")
    if assets:
        config = {**config, "model_path": assets["model"].local_path(), "data_root": assets["data"].local_path()}
    if config.get("runs"):
        train_runs(config, RayWorker())
        return
    recipe = TrainingRecipe(config, RayWorker())
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.cleanup()


class _Window:
    """Sums over the steps since the last report (local to the worker until `reduce`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss = 0.0
        self.mlm = 0.0
        self.mlm_weighted = 0.0
        self.masked = 0.0
        self.tokens = 0.0
        self.extra: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, *, loss: float, mlm_loss: float, masked: int, tokens: int, extra: dict[str, float]) -> None:
        self.steps += 1
        self.loss += loss
        self.mlm += mlm_loss
        self.mlm_weighted += mlm_loss * masked
        self.masked += masked
        self.tokens += tokens
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value

    def reduce(self, world_size: int) -> dict[str, float]:
        """Window averages over all workers (one small all-reduce when distributed).

        train/mlm_loss is weighted by masked tokens, so it is the loss of the global batch whatever
        the number of workers; train/loss adds the mean of the other terms (alpha * NC3, a
        baseline's own terms) to it.
        """
        keys = sorted(self.extra)
        values = torch.tensor(
            [self.loss - self.mlm, self.mlm_weighted, self.masked, self.tokens] + [self.extra[k] for k in keys],
            dtype=torch.float64,
        )
        if world_size > 1:
            import torch.distributed as dist

            values = values.to(_collective_device())
            dist.all_reduce(values)
            values = values.cpu()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        per_step = max(self.steps, 1) * world_size
        has_mlm = float(values[2]) > 0  # a method without an MLM stream masks nothing
        mlm = float(values[1] / values[2]) if has_mlm else float("nan")
        out = {
            "train/loss": (mlm if has_mlm else 0.0) + float(values[0]) / per_step,
            "train/mlm_loss": mlm,
            "train/tokens_per_s": float(values[3]) / elapsed,
        }
        for i, key in enumerate(keys):
            out[f"train/{key}"] = float(values[4 + i]) / per_step
        return out


def _peak_rss_mb() -> float:
    """This worker process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class TrainingRecipe:
    """State of one worker's training run; see the module docstring for the lifecycle."""

    def __init__(self, config: dict[str, Any], runtime: WorkerRuntime):
        from ncsearch.config import parse_spec

        self.config = config
        self.runtime = runtime
        self.spec = parse_spec(config["spec"], source="<trial spec>")
        self.data_root = Path(config["data_root"])
        self.model_path = str(config["model_path"])
        self.model: Any = None
        self.wrapped: Any = None
        #: {"identity": ...} when the trial's evaluation runs on these workers after the last step, else None.
        self.evaluation: dict[str, Any] | None = config.get("evaluation")
        #: This run's place in its Train run (`_run_sequence.py`): run `run_index` of `run_count`.
        self.run_index = int(config.get("run_index", 0))
        self.run_count = int(config.get("run_count", 1))

    # ----- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        from ncsearch.debias import get_baseline
        from ncsearch.heads import SparseMLM, mlm_head
        from ncsearch.models import load_mlm

        spec = self.spec
        self.rank = self.runtime.rank
        self.world_size = self.runtime.world_size
        seed_everything(derive_seed(spec.train.seed, 0, self.rank))

        self.baseline = get_baseline(spec.baseline)(
            data_root=self.data_root, options=getattr(spec.baseline_options, spec.baseline)
        )
        frozen_base = self.baseline.frozen_base
        restored = self._restore(load_model=not frozen_base)
        state = restored[0] if restored is not None else None
        if restored is None or frozen_base:
            model, self.tokenizer = load_mlm(self.model_path, trust_remote_code=spec.trust_remote_code)
        else:
            _, model, self.tokenizer = restored
        self.device = self.runtime.device
        self.pin_memory = apply_device_settings(self.device).pin_memory  # TF32 and pinned copies on CUDA only
        self.baseline.setup(
            self.tokenizer, self.rank, self.world_size, spec.train.seed,
            device=self.device, batch_size=spec.train.batch_size, max_length=spec.train.max_length,
            model_path=self.model_path,
        )
        self.model = self.baseline.prepare_model(model)
        if state is not None and frozen_base:
            self.baseline.load_trainable_state(self.model, state.baseline)
        self.model.train()

        texts = self.baseline.corpus(limit=spec.train.max_train_sentences)
        self.batches: MLMBatches | None = None
        if self.baseline.mlm_stream:
            self.batches = MLMBatches(
                chunk_corpus(texts, self.tokenizer, spec.train.max_length),
                self.tokenizer,
                batch_size=spec.train.batch_size,
                mlm_probability=spec.train.mlm_probability,
                seed=spec.train.seed,
                rank=self.rank,
                world_size=self.world_size,
            )
        self.regularizer = _build_regularizer(self.tokenizer, spec.nc3, texts, self.data_root)

        self.wrapped = self.runtime.wrap(SparseMLM(self.model))
        self.head = mlm_head(self.model)  # the bare model: DDP hides the decoder weight
        self.optimizer = _build_optimizer(self.model, spec.train)
        precision = resolve_precision(spec.train.precision, self.device)  # "auto" decided for this device
        self.autocast = autocast_for(precision, self.device)
        self.bf16 = float(precision == "bf16")
        self.scaler = grad_scaler_for(precision, self.device)  # enabled for fp16 only
        self.skipped_steps = 0
        self.scheduler = _build_scheduler(self.optimizer, spec.train)
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        if state is not None:
            if state.optimizer:  # the final checkpoint has none: nothing is left to train (see _report)
                self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.regularizer.load_state_dict(state.nc3)
            if state.scaler and self.scaler.is_enabled():
                self.scaler.load_state_dict(state.scaler)
            _move_statistics(self.regularizer, self.device)
            self.step = state.step
            self.last_metrics = dict(state.meta.get("metrics", {}))
            self.skipped_steps = int(self.last_metrics.get("train/skipped_steps", 0))
        self.resumed_from = self.step

    def _restore(self, *, load_model: bool = True) -> tuple[TrainState, Any, Any] | None:
        """(state, model, tokenizer) of the checkpoint Ray Train hands back on a restart, else None
        (model and tokenizer are None when `load_model` is false: a frozen-base method rebuilds them).

        Read inside `as_directory()`: with remote storage the folder is a temporary download.
        """
        from ncsearch.models import load_mlm

        if not self.config.get("resume", True):  # a later run of a restarted multi-run Train run
            return None
        with self.runtime.restored_checkpoint() as folder:
            if folder is None:
                return None
            damaged = checkpoint_problem(folder)
            if damaged:  # fail naming the file, never train over it from step 0
                raise TrialError(f"cannot resume from checkpoint {folder}: {damaged[0]} is damaged ({damaged[1]})")
            state = read_state(folder)
            if not load_model:
                return state, None, None
            model, tokenizer = load_mlm(str(folder / MODEL_DIR), trust_remote_code=self.spec.trust_remote_code)
        return state, model, tokenizer

    # ----- train ------------------------------------------------------------------------------------

    def train(self) -> None:
        train = self.spec.train
        nc3 = self.spec.nc3
        window = _Window()
        if self.step >= train.steps:  # restarted after the final checkpoint: nothing left to do
            self.runtime.report(self._labelled(dict(self.last_metrics, step=self.step)))
            return
        while self.step < train.steps:
            torch.manual_seed(derive_seed(train.seed, 3, self.step, self.rank))  # dropout of this step
            batch = output = None
            with self.autocast():
                if self.batches is not None:
                    batch = batch_to_device(self.batches.batch(self.step), self.device, pin_memory=self.pin_memory)
                    output = self.wrapped(batch["input_ids"], batch["attention_mask"], batch["labels"])
                terms = self.baseline.step_terms(
                    StepContext(self.step, self.wrapped, self.model, self.device, batch, output)
                )
            self._update_statistics(terms.nc3, batch, output)
            if nc3.alpha > 0:
                reg_loss, reg_values = self.regularizer.loss(self.head.weight)
            else:  # statistics only, for monitoring: no gradient
                with torch.no_grad():
                    reg_loss, reg_values = self.regularizer.loss(self.head.weight)
            extra = terms.losses
            mlm_loss = output.loss if output is not None else torch.zeros((), device=self.device)
            loss = mlm_loss + nc3.alpha * reg_loss
            for term in extra.values():
                loss = loss + term
            self._check_finite(loss, mlm_loss, reg_values)

            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # disabled scaler (fp32, bf16): loss.backward() itself
            if train.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
            self._optimizer_step()
            self.scheduler.step()
            self.step += 1

            window.add(
                loss=float(loss.detach()),
                mlm_loss=float(mlm_loss.detach()),
                masked=int(output.index.numel()) if output is not None else 0,
                tokens=int(batch["attention_mask"].sum()) if batch is not None else 0,
                extra={k: float(v.detach()) for k, v in extra.items()},
            )
            final = self.step == train.steps
            save = final or self.step % train.checkpoint_every == 0
            if save or self.step % train.report_every == 0:
                metrics = window.reduce(self.world_size)
                metrics.update(
                    {
                        "step": self.step,
                        "train/unc3": reg_values["unc3"],
                        "train/nc3": reg_values["nc3"],
                        "train/nc3_classes": reg_values["classes"],
                        "train/lr": lr,
                        "train/bf16": self.bf16,
                        "train/resumed_from": self.resumed_from,
                        "train/peak_rss_mb": _peak_rss_mb(),
                    }
                )
                if self.scaler.is_enabled():
                    metrics["train/skipped_steps"] = float(self.skipped_steps)
                self._report(metrics, save=save)
                window.reset()
                self._maybe_inject_failure(saved=save)

    def _optimizer_step(self) -> None:
        """optimizer.step() through the scaler: under fp16 a step with inf/NaN gradients is skipped and
        the scale lowered (counted, and reported as train/skipped_steps); the step counter and the
        schedule advance all the same (`train`)."""
        if not self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # = self.optimizer.step()
            return
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < scale:  # a skipped first step makes torch warn that the LR
            self.skipped_steps += 1  # scheduler stepped before the optimizer: expected, harmless

    def _update_statistics(self, source: Any, batch: dict[str, torch.Tensor] | None, output: Any) -> None:
        """Feed NC3's class statistics from the baseline's own pass when it names one, else from the
        masked MLM pass (nothing when the method has neither)."""
        from ncsearch.collapse import select_pairs

        nc3 = self.spec.nc3
        if source is not None:
            hidden, input_ids, labels, attention_mask = source.hidden, source.input_ids, source.labels, source.attention_mask
        elif output is not None and batch is not None:
            hidden, input_ids, labels, attention_mask = output.hidden, batch["input_ids"], batch["labels"], batch["attention_mask"]
        else:
            return
        features, token_ids = select_pairs(
            hidden.float(),  # bf16 under autocast; NC3's class sums stay fp32
            input_ids=input_ids,
            labels=labels,
            attention_mask=attention_mask,
            features=nc3.features,
            positions=nc3.positions,
            label_shift=nc3.label_shift,
            head_transform=self.head.transform if nc3.features == "head" else None,
            label_source=nc3.labels,
        )
        self.regularizer.start_epoch(self._epoch())  # means "epoch" start afresh at each boundary
        self.regularizer.update(features, token_ids)

    def _epoch(self) -> int:
        """The epoch of this step in the stream NC3's features come from (the baseline's, else MLM's)."""
        own = self.baseline.epoch_of(self.step)
        if own is not None:
            return own
        return self.batches.sampler.epoch_of(self.step) if self.batches is not None else 0

    def _maybe_inject_failure(self, *, saved: bool) -> None:
        """Fault injection for resume tests, in a run that did not start from a checkpoint:
        config["fail_after_step"] = k raises right after step k is reported, as a crashed training
        loop would; on a Ray Train worker, NCSEARCH_FAULT_KILL_AT_STEP = k SIGKILLs rank 0's process
        once its step-k checkpoint is registered (`_faults.py`)."""
        if self.resumed_from != 0 or self.config.get("group_restored"):
            return
        fail_at = self.config.get("fail_after_step")
        if fail_at is not None and self.step == int(fail_at):
            raise RuntimeError(f"injected failure after step {self.step} (fail_after_step)")
        if saved and self.rank == 0 and isinstance(self.runtime, RayWorker):
            from ncsearch.training._faults import kill_after_checkpoint

            kill_after_checkpoint(self.step, self._checkpoint_name(), run_index=self.run_index)

    def _check_finite(self, loss: torch.Tensor, mlm_loss: torch.Tensor, reg_values: dict[str, float]) -> None:
        """Raise TrialError on every worker at once when any worker's loss is NaN or infinite."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0], dtype=torch.float64)
        if self.world_size > 1:
            import torch.distributed as dist

            bad = bad.to(_collective_device())
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if float(bad) > 0:
            step = self.step + 1
            raise TrialError(
                f"non-finite loss at step {step}: loss={float(loss.detach()):.6g} "
                f"(mlm_loss={float(mlm_loss.detach()):.6g}, unc3={reg_values['unc3']:.6g}, "
                f"alpha={self.spec.nc3.alpha:g}, lr={self.optimizer.param_groups[0]['lr']:.3g}); "
                "lower train.lr or nc3.alpha, or set train.grad_clip"
            )

    def _report(self, metrics: dict[str, float], *, save: bool) -> None:
        self.last_metrics = metrics
        if self.rank == 0:
            shown = ", ".join(
                f"{k.removeprefix('train/')}={v:.4g}" for k, v in metrics.items() if k in _SHOWN
            )
            _log.info("[ncsearch train] step %d/%d: %s", self.step, self.spec.train.steps, shown)
        if not save:
            self.runtime.report(self._labelled(metrics))
            return
        last = self.step >= self.spec.train.steps
        evaluate = self.evaluation is not None and last
        with tempfile.TemporaryDirectory(prefix="ncsearch-ckpt-") as folder:
            if evaluate:  # every worker scores the final model first; its results go into this checkpoint
                metrics = {**metrics, **self._evaluate(Path(folder))}
            if self.rank == 0:
                # The final checkpoint resumes nothing but evaluation (a restart after it only re-reports),
                # so it leaves out AdamW's two moments: twice the model's size, written and then copied
                # into the run's storage by `report` in every trial.
                state = TrainState(
                    step=self.step,
                    optimizer={} if last else self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(),
                    nc3=self.regularizer.state_dict(),
                    scaler=self.scaler.state_dict(),
                    baseline=self.baseline.trainable_state(self.model) if self.baseline.frozen_base else {},
                    meta={
                        "steps": self.spec.train.steps,
                        "seed": self.spec.train.seed,
                        "world_size": self.world_size,
                        "baseline": self.spec.baseline,
                        "metrics": metrics,
                        "run_index": self.run_index,
                        # V, as this model's token ids: held-out collapse is measured on the same set.
                        "nc3_vocab_ids": [int(i) for i in self.regularizer.index.ids.tolist()],
                    },
                )
                exported = None if evaluate else self.baseline.export_model(self.model)  # evaluation saved it
                write_checkpoint(Path(folder), model=exported, tokenizer=self.tokenizer, state=state)
            saved = Path(folder) if self.rank == 0 else None
            self.runtime.report(self._labelled(metrics, checkpoint=True), saved, self._checkpoint_name())

    def _checkpoint_name(self) -> str:
        return checkpoint_name(self.step, run_index=self.run_index, run_count=self.run_count)

    def _labelled(self, metrics: dict[str, Any], *, checkpoint: bool = False) -> dict[str, Any]:
        """`metrics` with this run's keys when its Train run has several (`_run_sequence.run_labels`)."""
        return run_labels(metrics, run_index=self.run_index, run_count=self.run_count,
                          step=self.step if checkpoint else None, final=self.step >= self.spec.train.steps)

    def _evaluate(self, folder: Path) -> dict[str, Any]:
        """Score the final model on every worker (`_evaluate.py`). Rank 0 saves the model into the
        checkpoint `folder` and scores that copy, writing `eval/` beside it; the other ranks save theirs
        to a scratch folder. Returns rank 0's report ({} elsewhere)."""
        from ncsearch.training._evaluate import EVAL_DIR, evaluate_final_model

        with tempfile.TemporaryDirectory(prefix="ncsearch-eval-") as scratch:
            model_dir = (folder if self.rank == 0 else Path(scratch)) / MODEL_DIR
            write_model(model_dir, self.baseline.export_model(self.model), self.tokenizer)
            return evaluate_final_model(
                self.spec, model_dir, vocab_ids=[int(i) for i in self.regularizer.index.ids.tolist()],
                data_root=self.data_root, device=self.device, rank=self.rank,
                out_dir=folder / EVAL_DIR if self.rank == 0 else None, identity=self.evaluation["identity"],
            )

    # ----- cleanup ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.wrapped = self.model = None
        for name in ("optimizer", "scheduler", "regularizer", "batches", "head"):
            if hasattr(self, name):
                setattr(self, name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_SHOWN = ("train/loss", "train/mlm_loss", "train/unc3", "train/nc3", "train/lr", "train/tokens_per_s")


# ----- setup helpers: each gets only its slice of the spec -------------------------------------------


def _build_regularizer(tokenizer: Any, nc3: Any, corpus: list[str], data_root: Path) -> Any:
    """NC3 statistics on the vocabulary subset of `nc3.vocab` (built against this model's tokenizer)."""
    from ncsearch.collapse import NC3Regularizer
    from ncsearch.vocab import build_vocab

    vocab = nc3.vocab
    subset = build_vocab(
        tokenizer,
        source=vocab.source,
        size=vocab.size,
        policy=vocab.policy,
        file=vocab.file,
        seed=vocab.seed,
        frequency_matched=vocab.frequency_matched,
        corpus=corpus,
        data_root=data_root,
    )
    if not subset.token_ids:
        from ncsearch.errors import ConfigError

        raise ConfigError(f"nc3.vocab (source {vocab.source!r}) has no token of this model's vocabulary")
    return NC3Regularizer(subset.token_ids, kind=nc3.kind, means=nc3.means, ema_momentum=nc3.ema_momentum)


def _move_statistics(regularizer: Any, device: torch.device) -> None:
    """Put restored NC3 statistics (loaded on CPU) on the training device, where the features and the
    all-reduce (nccl needs device tensors) are."""
    if regularizer.sums is not None:
        regularizer.index.to(device)
        regularizer.sums = regularizer.sums.to(device)
        regularizer.counts = regularizer.counts.to(device)


def _build_optimizer(model: torch.nn.Module, train: Any) -> torch.optim.Optimizer:
    """AdamW (`_optim.adamw`); no weight decay on biases and LayerNorm weights (the usual BERT recipe).

    `fused=True`: one kernel per parameter group for the whole update instead of a dozen elementwise
    passes per tensor (on one CPU thread 0.10 s -> 0.02 s a step for MiniLM-L6's 23M parameters).
    Same formula; measured on a 30-step alpha = 10 trial at fp32, its loss curve equalled the
    per-tensor loop's (commit d2dc018) bit for bit (README, "Trial cost"). It is not a pinned test:
    fused and per-tensor AdamW may round differently on other hardware.
    """
    return adamw(model, lr=train.lr, weight_decay=train.weight_decay, fused=True)


def _build_scheduler(optimizer: torch.optim.Optimizer, train: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `ceil(warmup_ratio * steps)` steps from lr/(warmup+1), then linear decay to 0
    at `steps` (`_optim.linear_warmup_decay`)."""
    return linear_warmup_decay(optimizer, train.steps, math.ceil(train.warmup_ratio * train.steps))

