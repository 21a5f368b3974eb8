"""The base of every options model: search-space sections, baseline options and benchmark options.

It lives apart from `config.py` so that a baseline or benchmark module can declare its own options
model (the registries own names and options) without importing the whole schema, and the schema can
then build its `baseline_options` section from the registry without an import cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["NoOptions", "StrictOptions"]


class StrictOptions(BaseModel):
    """Unknown keys are errors; YAML scalars are taken as typed (no "10" -> 10 coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, arbitrary_types_allowed=True)


class NoOptions(StrictOptions):
    """A method or benchmark that takes no options (any key given is an error)."""
