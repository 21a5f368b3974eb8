"""The control: plain masked-LM fine-tuning on the corpus, no debiasing of its own."""

from __future__ import annotations

from ncsearch.debias._base import Baseline, register

__all__ = ["MLM"]


@register
class MLM(Baseline):
    """MLM on GAP development + test; with nc3.alpha > 0 this is the paper's NC3 fine-tune."""

    name = "mlm"
