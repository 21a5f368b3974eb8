"""A masked LM whose encoder runs behind a trained peft prefix (P-tuning v2 deep prefix).

A prefix cannot be merged into the weights: it is a set of extra key/value vectors in every attention
layer. So a prefix-tuned model is saved as the plain masked LM (`save_pretrained`, the frozen base
weights) plus the peft adapter in the subfolder `prefix/` (adapter_config.json and its weights;
a subfolder, because transformers' `from_pretrained` would otherwise notice an adapter_config.json
beside config.json and try to load the adapter itself). `ncsearch.models.load_mlm` sees that
subfolder and returns a `PrefixMaskedLM` again.

How the rest of ncsearch sees a `PrefixMaskedLM`:

- `ncsearch.heads.encode` calls `unwrap(model).base_model(input_ids=..., attention_mask=...)`:
  `base_model` is a `PrefixedEncoder`, whose forward runs the encoder with the prefix (the peft
  `PeftModelForFeatureExtraction` passes it as the attention cache and prepends ones to the mask) and
  returns the states of the input positions only.
- `ncsearch.heads.mlm_head`, `.config` and any other attribute the wrapped `*ForMaskedLM` has are
  read through to it, so the head is the model's own (the prefix does not change it).
- Evaluation's fast row encoder (`evaluate._row_encoder.RowEncoder.for_model`) finds no encoder layers
  on a `PrefixedEncoder` (it has no `encoder` attribute) and returns None, so `score_masked` always
  takes the plain forward path for a prefix model: the hand-written layers know nothing of a prefix.
- GLUE deep-copies `base_model` and fine-tunes it: a `PrefixedEncoder` is a module with `config` and
  `base_model` (itself), and every parameter of a loaded model requires a gradient, as for any
  checkpoint `load_mlm` returns.

Positions: as in P-tuning v2 (and Hugging Face BERT with a cache), the input's position ids start
after the prefix, so an input may hold at most `max_position_embeddings - num_virtual_tokens` tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ncsearch.errors import ModelError

__all__ = ["PREFIX_DIR", "PrefixMaskedLM", "PrefixedEncoder", "add_prefix", "load_prefix"]

#: The subfolder of a saved model that holds the peft prefix.
PREFIX_DIR = "prefix"


class PrefixedEncoder(nn.Module):
    """The encoder of a masked LM behind a peft prefix: `forward(input_ids, attention_mask)` returns an
    output whose `last_hidden_state` (B, T, d) are the states of the input positions."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft = peft_model

    @property
    def config(self) -> Any:
        return self.peft.base_model.config

    @property
    def base_model(self) -> PrefixedEncoder:
        return self

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.peft.active_peft_config.num_virtual_tokens)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Any:
        import torch

        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is not None and input_ids.shape[1] + self.num_virtual_tokens > limit:
            raise ModelError(
                f"an input of {input_ids.shape[1]} tokens behind a {self.num_virtual_tokens}-token prefix exceeds "
                f"the model's {limit} positions"
            )
        if attention_mask is None:  # peft prepends the prefix's mask only to a given mask
            attention_mask = torch.ones_like(input_ids)
        return self.peft(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class PrefixMaskedLM(nn.Module):
    """A `*ForMaskedLM` (`masked_lm`) whose encoder runs behind a prefix (`prefixed`); attributes it
    does not have itself (the head, `config`, ...) are the masked LM's."""

    def __init__(self, masked_lm: nn.Module, prefixed: PrefixedEncoder):
        super().__init__()
        self.masked_lm = masked_lm
        self.prefixed = prefixed

    @property
    def base_model(self) -> PrefixedEncoder:
        return self.prefixed

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("masked_lm", "module"):  # never recurse; never look like a DDP wrapper
                raise
            return getattr(super().__getattr__("masked_lm"), name)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Last-layer states (B, T, d) of the prefixed encoder (the head is applied by ncsearch.heads)."""
        return self.prefixed(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The masked LM's own files (base weights) plus the prefix in `folder/prefix/`."""
        folder = Path(folder)
        self.masked_lm.save_pretrained(folder, **kwargs)
        self.prefixed.peft.save_pretrained(folder / PREFIX_DIR)


def add_prefix(masked_lm: nn.Module, *, num_virtual_tokens: int, projection: bool = False,
               projection_hidden_size: int = 512) -> PrefixMaskedLM:
    """`masked_lm` with a fresh peft prefix on its encoder (`masked_lm.base_model`): every weight of the
    masked LM, head included, is frozen; only the prefix trains."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    masked_lm.requires_grad_(False)  # peft freezes the encoder it wraps, not the head beside it
    config = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        num_virtual_tokens=num_virtual_tokens,
        prefix_projection=projection,
        encoder_hidden_size=projection_hidden_size,
    )
    return PrefixMaskedLM(masked_lm, PrefixedEncoder(get_peft_model(masked_lm.base_model, config)))


def load_prefix(masked_lm: nn.Module, folder: str | Path) -> PrefixMaskedLM:
    """`masked_lm` (loaded from a saved PrefixMaskedLM's folder) with the prefix saved in `folder`.

    Every parameter requires a gradient afterwards, as in any model `load_mlm` returns (GLUE fine-tunes
    the whole encoder, prefix included)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(masked_lm.base_model, str(folder))
    except Exception as err:  # peft raises many types for a bad or mismatched adapter
        first = (str(err).strip() or type(err).__name__).splitlines()[0][:300]
        raise ModelError(f"cannot load the prefix in {str(folder)!r}: {first}") from None
    model = PrefixMaskedLM(masked_lm, PrefixedEncoder(peft_model))
    model.requires_grad_(True)
    return model.train(masked_lm.training)
