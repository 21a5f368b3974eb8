"""Where a training worker runs: its rank, device, DDP wrapping, checkpoint and reporting.

`TrainingRecipe` talks to its runtime only through this interface, so the same recipe runs on a Ray
Train worker (`RayWorker`, the production path) and in a plain `torch.distributed` process group
(`LocalWorker`), which the baseline contract test uses to check resume and 2-worker equality for every
baseline without starting Ray for each one.
"""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["LocalWorker", "RayWorker", "WorkerRuntime"]


class WorkerRuntime(Protocol):
    """What the recipe needs from its runtime."""

    rank: int
    world_size: int
    device: torch.device

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` on the device, in DDP when there is more than one worker."""

    def restored_checkpoint(self) -> AbstractContextManager[Path | None]:
        """The folder of the checkpoint to resume from (None: a fresh start), valid inside the block."""

    def report(self, metrics: dict[str, float], folder: Path | None = None, name: str | None = None) -> None:
        """Report `metrics`. With `name`, this report is a checkpoint: `folder` (rank 0's; None on the
        other ranks) holds it, to be persisted as `name`."""


class RayWorker:
    """A Ray Train V2 worker (`ray.train.get_context()`, `prepare_model`, `report`)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, module: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(module)

    def restored_checkpoint(self) -> AbstractContextManager[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return nullcontext(None)
        return _as_path(checkpoint.as_directory())  # with remote storage, a temporary download

    def report(self, metrics: dict[str, float], folder: Path | None = None, name: str | None = None) -> None:
        import ray.train

        if name is None:
            ray.train.report(metrics)
            return
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


class _as_path:
    def __init__(self, inner: AbstractContextManager[str]):
        self.inner = inner

    def __enter__(self) -> Path:
        return Path(self.inner.__enter__())

    def __exit__(self, *exc: Any) -> Any:
        return self.inner.__exit__(*exc)


class LocalWorker:
    """A worker in the current process: world size 1, or rank r of an initialized gloo process group.

    Checkpoints are copied to `checkpoints/<name>` under `store`, and `resume_from` names one to
    restart from; every report is kept in `reports` (rank 0's view, like Ray's).
    """

    def __init__(self, store: Path, *, resume_from: Path | None = None):
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.device = torch.device("cpu")
        self.store = Path(store)
        self.resume_from = resume_from
        self.reports: list[dict[str, float]] = []

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module
        return nn.parallel.DistributedDataParallel(module)

    def restored_checkpoint(self) -> AbstractContextManager[Path | None]:
        return nullcontext(self.resume_from)

    def report(self, metrics: dict[str, float], folder: Path | None = None, name: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if folder is not None:
            target = self.store / "checkpoints" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
