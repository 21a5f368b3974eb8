"""The per-family table: each tiny model resolves to its own family by head and by model_type alike."""

from __future__ import annotations

import pytest
from tiny_models import FAMILIES as TINY_FAMILIES
from tiny_models import tiny_masked_lm

from ncsearch.model_families import (
    CONFIG_KEYS,
    FAMILIES,
    family_of_head,
    family_of_model_type,
)


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_head_and_model_type_name_the_same_family(name):
    model = tiny_masked_lm(name, vocab=50, hidden=16, layers=1, heads=2, intermediate=32, max_positions=16)
    by_head, by_type = family_of_head(model), family_of_model_type(model.config.model_type)
    assert by_head is not None and by_head is by_type and by_head.name == name
    assert len(by_head.encoder_layers(model.base_model)) == 1
    for logical, attribute in by_head.config_keys.items():
        assert hasattr(model.config, attribute) and attribute in CONFIG_KEYS[logical]


def test_every_family_names_the_same_logical_settings():
    assert {frozenset(f.config_keys) for f in FAMILIES} == {frozenset(CONFIG_KEYS)}
    assert family_of_model_type("electra") is None and family_of_model_type(None) is None
