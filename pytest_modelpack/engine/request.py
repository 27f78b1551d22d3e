"""What one check is asked to do, and what it found: the data that flows through the engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import errors
from ..options import Settings
from ..states import Mode, Verdict

__all__ = ["CheckRequest", "CheckResult", "NONDETERMINISM_PROBES", "display_path", "short_repr"]

#: How many of the first Hypothesis inputs are also run twice on the live model, to tell a
#: nondeterministic model apart from a lossy round-trip or a real regression.
NONDETERMINISM_PROBES = 3
REPR_LIMIT = 200


@dataclasses.dataclass
class CheckRequest:
    model: Any
    name: str
    inputs: Any
    settings: Settings
    device: str
    golden_folder: Path
    project_root: Path
    nodeid: str
    apply: Callable[[Any, Any], Any] | None = None
    rtol: float | None = None
    atol: float | None = None
    examples: int | None = None
    #: True for the one device run that writes the golden at regen (the first configured device).
    writes_golden: bool = True


@dataclasses.dataclass
class CheckResult:
    name: str
    device: str
    mode: Mode
    nodeid: str
    golden: str
    verdict: Verdict = Verdict.PASSED
    examples: int = 0
    bundle_size: int | None = None
    seconds: float = 0.0
    detail: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: When golden and live outputs differ: the state paths that differ (statediff.StateDiff).
    state_diff: list[str] = dataclasses.field(default_factory=list)
    error: errors.ModelpackError | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("error")
        # Plain strings: rows travel to the xdist controller (execnet) and into the JSON report.
        data["mode"], data["verdict"] = str(self.mode), str(self.verdict)
        if self.error is not None:
            data["headline"] = f"{self.error.kind} — {self.error.summary}"
            data["kind"] = self.error.kind
        return data


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when it is inside it (what a user types)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."
