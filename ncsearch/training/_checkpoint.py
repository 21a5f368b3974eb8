"""What a training checkpoint holds, and how it is written and read.

Layout of a checkpoint folder (one per `checkpoint_every` steps and one at the end):

    model/          save_pretrained model + tokenizer: loadable with ncsearch.models.load_mlm(path)
    eval/           (the final checkpoint of a search trial) its evaluation folder (ncsearch._eval_store),
                    written by the trial's workers (training/_evaluate.py)
    state.pt        optimizer (empty in the final checkpoint, which has no steps left), LR scheduler,
                    NC3 statistics, step, a frozen-base baseline's trained tensors, the fp16 loss
                    scaler's state (written by rank 0)
    meta.json       step, steps, seed, world size, the last reported metrics, the NC3 vocabulary's
                    token ids (human-readable; `read_meta`)

The random state needs no file: every draw is a function of (seed, step, rank) (see _seeding.py), so
the step counter is also the data position and the RNG position.

`checkpoint_problem` checks that a checkpoint folder is whole (every file present and no file cut
short) without loading any tensor: `ncsearch run --resume` asks it before Ray starts, and a training
worker before it resumes from a checkpoint, so a damaged file is named instead of failing inside
torch or safetensors (or being trained over from step 0).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["MODEL_DIR", "TrainState", "checkpoint_problem", "read_meta", "read_state", "write_checkpoint", "write_model"]

MODEL_DIR = "model"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass
class TrainState:
    """The resumable state besides the model weights."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    nc3: dict[str, Any]
    #: A frozen-base baseline's trained tensors (adapters, prefix), by parameter name; else empty.
    baseline: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The fp16 GradScaler's state_dict (scale, growth tracker); {} for fp32 and bf16 runs.
    scaler: dict[str, Any] = field(default_factory=dict)


def write_model(folder: Path, model: Any, tokenizer: Any) -> None:
    """The model and its tokenizer, loadable from `folder` with `ncsearch.models.load_mlm`.

    Whichever rank calls this writes: `folder` is that rank's own (rank 0's checkpoint, or another
    rank's scratch copy for its share of the evaluation, `_recipe._evaluate`). transformers' own
    `save_pretrained` writes nothing on a torch.distributed rank other than 0, for a folder all ranks
    share; so while it runs, every Hugging Face model inside `model` (a prefix-tuned model holds one)
    answers that check with `is_main_process` alone.
    """
    inner = [module for module in model.modules() if hasattr(module, "should_save_on_this_rank")]
    for module in inner:
        module.should_save_on_this_rank = _this_rank_writes
    try:
        model.save_pretrained(folder)
    finally:
        for module in inner:
            del module.should_save_on_this_rank
    tokenizer.save_pretrained(folder)


def _this_rank_writes(is_main_process: bool) -> bool:
    return is_main_process


def write_checkpoint(folder: Path, *, model: Any | None, tokenizer: Any, state: TrainState) -> None:
    """Write model/, state.pt and meta.json into `folder` (an empty temporary folder); `model` None:
    model/ is already there."""
    folder = Path(folder)
    if model is not None:
        write_model(folder / MODEL_DIR, model, tokenizer)
    torch.save(
        {"step": state.step, "optimizer": state.optimizer, "scheduler": state.scheduler, "nc3": state.nc3,
         "baseline": state.baseline, "scaler": state.scaler},
        folder / STATE_FILE,
    )
    (folder / META_FILE).write_text(json.dumps({"step": state.step, **state.meta}, indent=2, sort_keys=True), encoding="utf-8")


def read_state(folder: Path) -> TrainState:
    """The TrainState saved in checkpoint `folder` (tensors on CPU)."""
    folder = Path(folder)
    raw = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return TrainState(step=int(raw["step"]), optimizer=raw["optimizer"], scheduler=raw["scheduler"], nc3=raw["nc3"],
                      baseline=raw.get("baseline", {}), meta=meta, scaler=raw.get("scaler", {}))


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.json of checkpoint `folder` ({} when absent): cheap to read, no tensors."""
    path = Path(folder) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def checkpoint_problem(folder: Path) -> tuple[Path, str] | None:
    """(the damaged or missing file, what is wrong with it) for checkpoint `folder`, or None when it is
    whole: state.pt and meta.json, and model/ with its config and weights. Reads headers and zip
    directories only (a truncated file loses its end, where both formats say how long they are)."""
    folder = Path(folder)
    state = folder / STATE_FILE
    if not state.is_file():
        return state, "missing"
    problem = _zip_problem(state)
    if problem:
        return state, problem
    for path in (folder / META_FILE, folder / MODEL_DIR / "config.json"):
        if not path.is_file():
            return path, "missing"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return path, f"not valid JSON: {err}"
    weights = sorted((folder / MODEL_DIR).glob("*.safetensors"))
    for path in weights:
        problem = _safetensors_problem(path)
        if problem:
            return path, problem
    if not weights:
        legacy = folder / MODEL_DIR / "pytorch_model.bin"
        if not legacy.is_file():
            return folder / MODEL_DIR / "model.safetensors", "missing"
        problem = _zip_problem(legacy)
        if problem:
            return legacy, problem
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive: its directory is at the end, and every member must lie inside the file."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return f"not a whole torch archive ({size} bytes, cut short?): {err}"
    for member in members:
        if member.header_offset + member.compress_size > size:
            return f"cut short: {size} bytes, but {member.filename!r} ends past that"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the tensors' bytes."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"cut short: {size} bytes, no header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return f"cut short: {size} bytes, but its header alone is {length} bytes"
        try:
            header = json.loads(handle.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            return f"unreadable safetensors header: {err}"
    expected = 8 + length + end
    if size != expected:
        return f"{'cut short' if size < expected else 'wrong size'}: {size} bytes, its header says {expected}"
    return None
