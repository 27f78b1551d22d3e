"""The gate's drift check: today's code and environment against what a golden recorded."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..fixes import regen_command, restore_or_regen, revert_or_accept
from ..warnings import CodeDriftWarning, EnvDriftWarning, ModelpackWarning
from .diff import compare_code, describe_code_change, drift_detail, drift_summary, env_changes
from .fingerprint import _Fingerprinter

if TYPE_CHECKING:
    from ..golden.manifest import Manifest

EnvDrift = errors.EnvDrift


# -- the gate ----------------------------------------------------------------------------------


def _warn(warning: ModelpackWarning, error: errors.ModelpackError) -> None:
    """Emit ``warning``; when a warnings filter makes it an error, fail with ``error`` instead
    (a headline, not a traceback through the plugin)."""
    try:
        warnings.warn(warning, stacklevel=3)
    except ModelpackWarning:
        raise error from None


def check_drift(
    manifest: Manifest,
    roots: list[tuple[str, str]] | None = None,
    *,
    name: str,
    nodeid: str | None,
    project_root: Path,
    policy: str = "fail",
) -> list[str]:
    """Compare the golden's recorded code and environment with today's.

    Raises :class:`~pytest_modelpack.errors.CodeDrift` (with ``modelpack_drift = warn``: warns
    :class:`~pytest_modelpack.warnings.CodeDriftWarning`); warns
    :class:`~pytest_modelpack.warnings.EnvDriftWarning` for changed versions. Returns lines for the
    summary, which the gate also adds to an OUTPUT MISMATCH they may explain.

    ``roots`` are the project (module, qualname) pairs the bundle references, as the safety scan
    found them; without them, the manifest's list is used.
    """
    from ..golden import environment

    fix = revert_or_accept(nodeid)
    env = env_changes(manifest.environment, environment())
    env_note = "environment changed since the golden was made: " + ", ".join(env)

    code: tuple[list[str], list[str], list[str]] = ([], [], [])
    recorded = manifest.code
    pairs = roots if roots is not None else manifest.project_globals
    current: dict[str, Any] = {}
    fingerprinter = _Fingerprinter(project_root)
    resolved = [fingerprinter.add_root(m, q) for m, q in pairs]
    # A project class or module the bundle names is gone (or no longer project code): loading
    # fails next, and its LOAD ERROR (renamed or moved? restore, alias or regenerate) says more
    # than a list of removed names would.
    if pairs and all(resolved):
        current = fingerprinter.run()
        if current and not recorded:
            # The bundle runs project code, and the manifest records none of it: drift detection
            # would switch off silently. Regen always records it, so the manifest was edited.
            raise errors.CorruptGolden(
                "manifest.json records no project code, but the bundle references some",
                name=name,
                detail=[
                    "project globals in bundle.pkl: "
                    + ", ".join(f"{m}.{q}" for m, q in pairs[:5])
                    + (" ..." if len(pairs) > 5 else ""),
                    "without the recorded code, code drift cannot be checked",
                ],
                fix=restore_or_regen(nodeid),
            )
        code = compare_code(recorded, current)

    drift: errors.CodeDrift | None = None
    if any(code):
        summary = drift_summary(recorded, current, *code)
        detail = drift_detail(recorded, current, *code)
        if env:
            detail.append("also: " + env_note)
        drift = errors.CodeDrift(
            f"{summary} since the golden was made", name=name, detail=detail, fix=fix
        )
        if policy != "warn":
            raise drift

    notes: list[str] = []
    if env:
        notes.append(env_note)
        _warn(
            EnvDriftWarning(f"{name}: {env_note}"),
            EnvDrift(
                f"{', '.join(env)} since the golden was made",
                name=name,
                detail=[
                    "the golden records the versions it was made with; today's differ",
                    "your warnings filter turns pytest_modelpack.warnings.EnvDriftWarning into "
                    "an error",
                ],
                fix="run with the recorded versions, or accept the new environment with: "
                f"{regen_command(nodeid)}",
            ),
        )
    if drift is not None:
        names = ", ".join(describe_code_change(recorded, current))
        notes.append(f"CODE DRIFT tolerated (modelpack_drift = warn): {drift.summary}: {names}")
        _warn(CodeDriftWarning(drift.render()), drift)
    return notes
