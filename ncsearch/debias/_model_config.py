"""Applying logical config changes (dropout rates) to a loaded masked LM.

Hugging Face models read their dropout rates from the config when the modules are built, so changing
`model.config` afterwards does nothing. The model is therefore rebuilt from the changed config and the
weights are copied over (tied weights stay tied: the new model ties them itself).
"""

from __future__ import annotations

import copy

from torch import nn

from ncsearch.errors import ModelError
from ncsearch.model_families import CONFIG_KEYS

__all__ = ["apply_config_overrides"]


def config_attribute(config: object, logical: str) -> str:
    """The attribute of `config` that holds the logical setting (the first of the families' names it has)."""
    for attr in CONFIG_KEYS[logical]:
        if hasattr(config, attr):
            return attr
    raise ModelError(f"{type(config).__name__} has no setting for {logical!r} (looked for {', '.join(CONFIG_KEYS[logical])})")


def apply_config_overrides(model: nn.Module, overrides: dict[str, float]) -> nn.Module:
    """A copy of `model` built from its config with `overrides` applied, holding the same weights."""
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(f"unknown model setting(s) {unknown}; known: {', '.join(CONFIG_KEYS)}")
    config = copy.deepcopy(model.config)
    for logical, value in overrides.items():
        setattr(config, config_attribute(config, logical), float(value))
    rebuilt = type(model)(config)
    try:
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as err:
        raise ModelError(f"cannot rebuild {type(model).__name__} with {overrides}: {str(err).splitlines()[0]}") from None
    rebuilt.to(next(model.parameters()).device)
    rebuilt.train(model.training)
    return rebuilt
