"""A name -> class registry, shared by the debiasing baselines and the evaluation benchmarks.

Both are plug-in points a researcher extends with a decorated class that declares its name and its
options model; both must answer an unknown name with a one-line error that lists the valid ones, raised
as the user-input error of their layer.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ncsearch.errors import UserInputError

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes keyed by their `name` attribute. `kind` names them in errors ("baseline", ...)."""

    def __init__(self, kind: str, error: type[UserInputError] = UserInputError):
        self.kind = kind
        self.error = error
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: make `cls` available by its `name`. Its `Options` must be a strict options
        model (ncsearch._options.StrictOptions), so unknown keys in a spec are errors."""
        from ncsearch._options import StrictOptions

        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and issubclass(options, StrictOptions)):
            raise TypeError(f"{self.kind} {cls.__name__}.Options must subclass ncsearch._options.StrictOptions")
        self._classes[cls.name] = cls
        return cls

    def available(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as `name`; an unknown (or unhashable) name lists the valid ones."""
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.kind} {name!r}; valid: {', '.join(self.available())}") from None
