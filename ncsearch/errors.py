"""One exception root for everything ncsearch raises on purpose.

The CLI maps `UserInputError` subclasses (bad YAML, a missing file, an unknown model) to exit code 2
with a single line of text, and every other `NcsearchError` to exit code 1. Messages quote the value
received so the user can fix it without reading a traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "NcsearchError",
    "TrialError",
    "UserInputError",
]


class NcsearchError(Exception):
    """Root of every error ncsearch raises deliberately."""

    exit_code: int = 1


class UserInputError(NcsearchError):
    """The user's input (a file, a flag, a name) is wrong; nothing was started."""

    exit_code = 2


class ConfigError(UserInputError):
    """A search-space YAML file or a `--set` override is invalid.

    `problems` holds one line per problem so that every error in a file is reported at once.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(UserInputError):
    """A benchmark or corpus file is missing, corrupt or malformed."""


class ModelError(UserInputError):
    """A model name or path cannot be resolved to a masked-LM checkpoint."""


class TrialError(NcsearchError):
    """A trial failed for a reason worth recording (e.g. a non-finite loss)."""
