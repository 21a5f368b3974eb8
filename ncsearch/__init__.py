"""ncsearch: Ray-distributed search over NC3 fairness regularization of masked language models.

The package root stays import-light on purpose: `ncsearch --help` and `ncsearch validate` must not pay
for torch, Ray or MLflow. Heavy modules are imported where they are used.
"""

from ncsearch.errors import ConfigError, DataError, ModelError, NcsearchError, TrialError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "ModelError", "NcsearchError", "TrialError", "__version__"]
