"""Dropout debiasing (Webster et al. 2020): MLM with raised hidden and attention dropout.

The rates come from `baseline_options.dropout`; they replace the model's own rates for the
fine-tune and stay in the saved checkpoint's config (evaluation runs in eval mode, where dropout is
off, so they do not change scores).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ncsearch._options import StrictOptions
from ncsearch.debias._base import Baseline, register

__all__ = ["Dropout", "DropoutOptions"]


class DropoutOptions(StrictOptions):
    """Webster et al. 2020's rates for BERT: hidden 0.20, attention 0.15."""

    hidden_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.20
    attention_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.15


@register
class Dropout(Baseline):
    """MLM on the corpus with `hidden_dropout` and `attention_dropout` raised."""

    name = "dropout"
    Options = DropoutOptions
    options: DropoutOptions

    def config_overrides(self) -> dict[str, float]:
        return {"hidden_dropout": self.options.hidden_dropout, "attention_dropout": self.options.attention_dropout}
