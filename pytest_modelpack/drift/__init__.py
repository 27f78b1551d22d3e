"""Code drift: what project code a golden depends on (fingerprints), and what changed since.

* :mod:`.fingerprint` — the units (classes, methods, functions, module globals) a pickle's project
  globals depend on, with normalised-source fingerprints;
* :mod:`.source` — normalised (AST) source and the definitions and names a unit reads;
* :mod:`.diff` — recorded vs today's units and environment, worded as a summary and unified diffs;
* :mod:`.check` — the gate's check: :func:`assess_drift` (what changed), then
  :func:`report_drift` (CODE DRIFT, or a warning with ``modelpack_drift = warn``; ENV DRIFT
  warnings).
"""

from __future__ import annotations

from .check import Drift, EnvDrift, assess_drift, report_drift
from .diff import compare_code, describe_code_change, env_changes
from .fingerprint import (
    ENV_KEYS,
    code_units,
    fingerprint_model,
    is_project_file,
)
from .source import normalized_source

__all__ = [
    "ENV_KEYS",
    "Drift",
    "EnvDrift",
    "assess_drift",
    "code_units",
    "compare_code",
    "describe_code_change",
    "env_changes",
    "fingerprint_model",
    "is_project_file",
    "normalized_source",
    "report_drift",
]
