"""The engine: one check's stages (round-trip, gate, regenerate) behind :func:`run_check`."""

from __future__ import annotations

from .check import run_check
from .request import CheckRequest, CheckResult

__all__ = ["run_check", "CheckRequest", "CheckResult"]
