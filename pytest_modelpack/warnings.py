"""Warnings emitted by pytest-modelpack: environment drift, tolerated code drift."""

from __future__ import annotations


class ModelpackWarning(UserWarning):
    """Base of pytest-modelpack's own warnings."""


class EnvDriftWarning(ModelpackWarning):
    """Third-party versions differ from those the golden was made with."""


class CodeDriftWarning(ModelpackWarning):
    """Project code changed since the golden was made (``modelpack_drift = warn``)."""
