"""pytest-modelpack: regression tests for pickled compound models.

Golden bundles committed to the repository; Hypothesis inputs comparing live, reloaded and golden
models on CPU and CUDA; loud failures on code drift, unpicklable attributes and unsafe goldens.

Importing this package is cheap: torch and hypothesis load only when a check runs.
"""

from __future__ import annotations

from .apply import apply_model  # torch is imported inside, when a model is applied
from .errors import (
    CodeDrift,
    CorruptGolden,
    LoadError,
    LossyRoundTrip,
    MissingGolden,
    ModelpackError,
    Nondeterministic,
    OutputMismatch,
    Unpicklable,
    UnsafeGolden,
)

__version__ = "0.3.0"

__all__ = [
    "apply_model",
    "ModelpackError",
    "Unpicklable",
    "LossyRoundTrip",
    "Nondeterministic",
    "LoadError",
    "UnsafeGolden",
    "CorruptGolden",
    "CodeDrift",
    "OutputMismatch",
    "MissingGolden",
    "__version__",
]
