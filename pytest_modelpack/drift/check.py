"""The gate's drift check: today's code and environment against what a golden recorded."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors
from ..fixes import listed, regen_command, restore_or_regen, revert_or_accept
from ..warnings import CodeDriftWarning, EnvDriftWarning, ModelpackWarning
from .diff import (
    compare_code,
    describe_code_change,
    drift_detail,
    drift_summary,
    env_changes,
    moves,
)
from .fingerprint import _Fingerprinter

if TYPE_CHECKING:
    from ..golden.manifest import Manifest


def _warn(warning: ModelpackWarning, error: errors.ModelpackError) -> None:
    """Emit ``warning``; when a warnings filter makes it an error, fail with ``error`` instead
    (a headline, not a traceback through the plugin)."""
    try:
        warnings.warn(warning, stacklevel=3)
    except ModelpackWarning:
        raise error from None


@dataclasses.dataclass
class Drift:
    """What changed since a golden was made: its project code, and its environment."""

    #: CODE DRIFT, not yet raised or warned (None: the code the golden depends on is unchanged).
    code: errors.CodeDrift | None = None
    #: The changed environment entries (``torch 2.12.0 -> 2.13.0``).
    env: list[str] = dataclasses.field(default_factory=list)
    #: The changed unit names, for the summary line.
    changed_names: list[str] = dataclasses.field(default_factory=list)
    #: ``models.Net -> nets.Net``: units whose module changed and whose source did not.
    moved: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Neither code nor environment changed: a differing output comes from the model's state."""
        return self.code is None and not self.env

    @property
    def env_note(self) -> str:
        return "environment changed since the golden was made: " + ", ".join(self.env)


def assess_drift(
    manifest: Manifest,
    roots: list[tuple[str, str]] | None = None,
    *,
    name: str,
    nodeid: str | None,
    project_root: Path,
) -> Drift:
    """The golden's recorded code and environment against today's; raises only CORRUPT GOLDEN.
    ``roots``: the project globals the scan found in the bundle (default: the manifest's)."""
    from ..golden import environment

    drift = Drift(env=env_changes(manifest.environment, environment()))
    recorded = manifest.code
    pairs = roots if roots is not None else manifest.project_globals
    fingerprinter = _Fingerprinter(project_root)
    resolved = [fingerprinter.add_root(m, q) for m, q in pairs]
    # A project class or module the bundle names is gone (or no longer project code): loading
    # fails next, and its LOAD ERROR (renamed or moved? restore, alias or regenerate) says more
    # than a list of removed names would.
    if not (pairs and all(resolved)):
        return drift
    current = fingerprinter.run()
    if current and not recorded:
        # The bundle runs project code, and the manifest records none of it: drift detection
        # would switch off silently. Regen always records it, so the manifest was edited.
        raise errors.CorruptGolden(
            "manifest.json records no project code, but the bundle references some",
            name=name,
            detail=[
                "project globals in bundle.pkl: " + listed((f"{m}.{q}" for m, q in pairs), 5),
                "without the recorded code, code drift cannot be checked",
            ],
            fix=restore_or_regen(nodeid),
        )
    code = compare_code(recorded, current)
    drift.moved = [f"{a} -> {b}" for a, b in moves(recorded, current)]
    if any(code):
        detail = drift_detail(recorded, current, *code)
        if drift.env:
            detail.append("also: " + drift.env_note)
        drift.code = errors.CodeDrift(
            f"{drift_summary(recorded, current, *code)} since the golden was made",
            name=name,
            detail=detail,
            fix=revert_or_accept(nodeid),
        )
        drift.changed_names = describe_code_change(recorded, current)
    return drift


def report_drift(
    drift: Drift,
    *,
    name: str,
    nodeid: str | None,
    policy: str = "fail",
    behaviour: list[str] | None = None,
) -> list[str]:
    """Raise CODE DRIFT (``modelpack_drift = warn``: warn it), warn ENV DRIFT; return the summary
    lines. ``behaviour``: what the golden's outputs say of a code change (first line: verdict)."""
    code = drift.code
    if code is not None and behaviour:
        code.detail.extend(behaviour)
        code.args = (code.render(),)
    if code is not None and policy != "warn":
        raise code

    notes: list[str] = []
    if drift.env:
        notes.append(drift.env_note)
        _warn(
            EnvDriftWarning(f"{name}: {drift.env_note}"),
            errors.EnvDrift(
                f"{', '.join(drift.env)} since the golden was made",
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
    if code is not None:
        names = ", ".join(drift.changed_names)
        verdict = f"; {behaviour[0]}" if behaviour else ""
        notes.append(
            f"CODE DRIFT tolerated (modelpack_drift = warn): {code.summary}: {names}{verdict}"
        )
        _warn(CodeDriftWarning(code.render()), code)
    return notes
