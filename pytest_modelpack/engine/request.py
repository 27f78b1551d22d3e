"""What one check is asked to do, and what it found: the data that flows through the engine."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..compare import safe_repr
from ..options import Settings
from ..states import Mode, Verdict

if TYPE_CHECKING:
    from ..compare import Comparison
    from ..golden import GoldenStore

#: How many of the first Hypothesis inputs the live model also runs twice: a model that disagrees
#: with itself is NONDETERMINISTIC, not a lossy round-trip or a regression.
NONDETERMINISM_PROBES = 3
REPR_LIMIT = 200
#: At most this many per-input error points per comparison stage travel in a report row.
POINTS_LIMIT = 200


@dataclasses.dataclass(frozen=True)
class CheckRequest:
    """One ``modelpack.check`` call: the live model, its golden, and how to check it."""

    model: Any
    name: str
    inputs: Any
    settings: Settings
    device: str
    golden_folder: Path
    project_root: Path
    #: The test, without its parameters: what fix lines tell the user to regenerate.
    nodeid: str
    apply: Callable[[Any, Any], Any] | None = None
    rtol: float | None = None
    atol: float | None = None
    examples: int | None = None
    #: True for the one device run that writes the golden at regen (the first configured device).
    writes_golden: bool = True
    #: The golden's store, its bundle's hash already started by the test's setup (gate only).
    prefetched: GoldenStore | None = None
    #: The golden's manifest as the session read it (file identity, bytes): read once, not again.
    manifest_seen: tuple[tuple[int, ...], bytes] | None = None
    #: The test item's full node id (with its parameters), for the report row.
    item: str | None = None
    #: The test without its device parameter: what owns the golden.
    claimant: str | None = None


@dataclasses.dataclass
class CheckResult:
    name: str
    device: str
    mode: Mode
    nodeid: str
    golden: str
    claimant: str | None = None
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
    #: Seconds spent per stage (round_trip, verify_scan, sha256_wait, load, compare, regen ...).
    stages: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, request: CheckRequest) -> CheckResult:
        return cls(
            name=request.name,
            device=request.device,
            mode=request.settings.mode,
            nodeid=request.item or request.nodeid,
            golden=str(request.golden_folder),
            claimant=request.claimant,
        )

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds the block takes to :attr:`stages` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stages[stage] = round(self.stages.get(stage, 0.0) + elapsed, 6)

    def record(self, stage: str, exact: bool, comparison: Comparison) -> None:
        """Note how close one input of comparison ``stage`` came (the report's plots)."""
        entry = next((c for c in self.comparisons if c["stage"] == stage), None)
        if entry is None:
            entry = {"stage": stage, "exact": exact, "rtol": None, "atol": None, "inputs": 0}
            entry["points"] = []
            self.comparisons.append(entry)
        entry["inputs"] += 1
        m = comparison.metrics
        if len(entry["points"]) < POINTS_LIMIT:
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
    text = safe_repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."
