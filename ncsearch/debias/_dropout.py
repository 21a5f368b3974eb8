"""Dropout debiasing (Webster et al. 2020): MLM with raised hidden and attention dropout.

The rates come from `baseline_options.dropout`; they replace the model's own rates for the
fine-tune and stay in the saved checkpoint's config (evaluation runs in eval mode, where dropout is
off, so they do not change scores).
"""

from __future__ import annotations

from ncsearch.debias._base import Baseline, register

__all__ = ["Dropout"]


@register
class Dropout(Baseline):
    """MLM on the corpus with `hidden_dropout` and `attention_dropout` raised."""

    name = "dropout"

    def config_overrides(self) -> dict[str, float]:
        opts = self.options.dropout
        return {"hidden_dropout": opts.hidden_dropout, "attention_dropout": opts.attention_dropout}

    def describe(self) -> dict[str, object]:
        opts = self.options.dropout
        return {
            "baseline": self.name,
            "dropout.hidden_dropout": opts.hidden_dropout,
            "dropout.attention_dropout": opts.attention_dropout,
        }
