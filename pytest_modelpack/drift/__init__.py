"""Code drift: what project code a golden depends on (:mod:`.fingerprint`, reading source with
:mod:`.source`), what changed since (:mod:`.diff`), and the gate's check (:mod:`.check`: CODE DRIFT,
or a warning with ``modelpack_drift = warn``; ENV DRIFT warnings).
"""

from __future__ import annotations

from .check import Drift, assess_drift, report_drift
from .diff import compare_code, describe_code_change, drift_detail, env_changes
from .fingerprint import code_units, is_project_file
from .source import normalized_source

__all__ = [
    "Drift",
    "assess_drift",
    "code_units",
    "compare_code",
    "describe_code_change",
    "drift_detail",
    "env_changes",
    "is_project_file",
    "normalized_source",
    "report_drift",
]
