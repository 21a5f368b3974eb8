"""Debiasing baselines: what a training run trains on and how (DESIGN.md §6).

`get_baseline(name)` returns the class; NC3 (nc3.alpha > 0) is added on top of any of them by the
training loop, not here.
"""

from ncsearch.debias._base import Baseline, NC3Features, StepContext, StepTerms, available, get_baseline, preflight_baselines, register
from ncsearch.debias._adept import ADEPT, ADEPTOptions
from ncsearch.debias._ase import ASE, ASEOptions
from ncsearch.debias._bec import BEC
from ncsearch.debias._cda import CDA, CDAOptions, CounterfactualSwapper
from ncsearch.debias._dropout import Dropout, DropoutOptions
from ncsearch.debias._fisher_lowrank import FisherLowRank, FisherLowRankOptions
from ncsearch.debias._mabel import MABEL, MABELOptions
from ncsearch.debias._mlm import MLM

__all__ = [
    "ADEPT",
    "ADEPTOptions",
    "ASE",
    "ASEOptions",
    "BEC",
    "CDA",
    "Baseline",
    "CDAOptions",
    "CounterfactualSwapper",
    "Dropout",
    "DropoutOptions",
    "FisherLowRank",
    "FisherLowRankOptions",
    "MABEL",
    "MABELOptions",
    "MLM",
    "NC3Features",
    "StepContext",
    "StepTerms",
    "available",
    "get_baseline",
    "preflight_baselines",
    "register",
]
