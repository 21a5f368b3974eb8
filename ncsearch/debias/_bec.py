"""BEC fine-tuning (Bartl et al. 2020): MLM on GAP with every gendered word flipped.

Bartl et al. fine-tune on the gender-swapped GAP corpus (`gap/gap_flipped.tsv`, as used by the NC3
paper's code) so that the model sees each context with the other gender; the swapping was done by
the authors and is read as published rather than recomputed.
"""

from __future__ import annotations

from ncsearch.debias._base import Baseline, register

__all__ = ["BEC"]


@register
class BEC(Baseline):
    """MLM on gender-flipped GAP development + test passages."""

    name = "bec"
    paper_alpha = 100.0  # bec/code/main_nc.py
    required_files = ("gap/gap_flipped.tsv",)

    def source_corpus(self) -> list[str]:
        from ncsearch.data import load_gap_corpus

        return load_gap_corpus(self.data_root, ("development", "test"), flipped=True)
