"""What one check is asked to do, and what it found: the data that flows through the engine."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..options import Settings
from ..states import Mode, Verdict

if TYPE_CHECKING:
    from ..golden import GoldenStore
    from ..safety.policy import Trust

__all__ = ["CheckRequest", "CheckResult", "NONDETERMINISM_PROBES", "display_path", "short_repr"]

#: How many of the first Hypothesis inputs are also run twice on the live model, to tell a
#: nondeterministic model apart from a lossy round-trip or a real regression.
NONDETERMINISM_PROBES = 3
REPR_LIMIT = 200
#: At most this many per-input error points per comparison stage travel in a report row.
POINTS_LIMIT = 200


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
    #: What the live model's own pickle does (filled by the round-trip): trusted for its golden.
    trust: Trust | None = None
    #: The golden's store, its bundle's hash already started by the test's setup (gate only).
    prefetched: GoldenStore | None = None


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
    #: Per comparison stage: its tolerance and per-input ``[max_abs, max_rel, used]`` points
    #: (``used`` = share of the tolerance, <= 1 passes), for the HTML report's plots.
    comparisons: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    #: When golden and live outputs differ: the state paths that differ (statediff.StateDiff).
    state_diff: list[str] = dataclasses.field(default_factory=list)
    error: errors.ModelpackError | None = dataclasses.field(default=None, repr=False)
    #: Seconds spent per stage (round_trip, verify_scan, sha256_wait, load, compare, regen ...):
    #: where a check's time goes, in the JSON report.
    stages: dict[str, float] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds the block takes to :attr:`stages` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stages[stage] = round(self.stages.get(stage, 0.0) + elapsed, 6)

    def record_comparison(
        self,
        stage: str,
        expected: Any,
        got: Any,
        *,
        exact: bool,
        rtol: float | None,
        atol: float | None,
    ) -> None:
        """Note how close ``got`` came to ``expected`` on one input of comparison ``stage``."""
        from ..metrics import error_metrics

        entry = next((c for c in self.comparisons if c["stage"] == stage), None)
        if entry is None:
            entry = {"stage": stage, "exact": exact, "rtol": None, "atol": None, "inputs": 0}
            entry["points"] = []
            self.comparisons.append(entry)
        entry["inputs"] += 1
        if len(entry["points"]) >= POINTS_LIMIT:
            return
        m = error_metrics(expected, got, exact=exact, rtol=rtol, atol=atol)
        if entry["rtol"] is None and m.rtol is not None:
            entry["rtol"], entry["atol"] = m.rtol, m.atol
        entry["points"].append([m.max_abs, m.max_rel, m.used])

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("error")
        # Plain strings: rows travel to the xdist controller (execnet) and into the JSON report.
        data["mode"], data["verdict"] = str(self.mode), str(self.verdict)
        if self.error is not None:
            data["headline"] = f"{self.error.kind} — {self.error.summary}"
            data["kind"] = self.error.kind
            data["error_detail"] = [str(line) for line in self.error.detail]
            data["fix"] = self.error.fix
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
