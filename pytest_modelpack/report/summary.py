"""The session report: one row per golden and device, the summary lines, the JSON report.

Rows are plain dicts (JSON-able) so pytest-xdist workers can send them to the controller through
``config.workeroutput``; the controller merges them here and builds one summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import errors
from ..fixes import test_of
from ..golden.fileio import write_atomic
from ..states import Verdict
from .unused import Collection, find_unused, unused_error

REPORT_FORMAT_VERSION = 1


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.problems: list[str] = []
        #: Device runs skipped because the device is not available: {nodeid, device, reason}.
        self.skips: list[dict[str, Any]] = []
        #: What the run selected (merged from xdist workers) and which tests finished.
        self.collection = Collection()
        self.finished: set[str] = set()
        #: Golden folders no check claimed (a full gate run), and the policy that applies.
        self.unused: list[errors.UnusedGolden] = []
        self.unused_policy = "fail"
        #: Why unused goldens were not judged (a filtered run), when they were not.
        self.unused_note: str | None = None

    def judge_unused(self, root: Path, policy: str, reason: str | None) -> None:
        """Find golden folders no check claimed; ``reason`` says why this run cannot judge."""
        self.unused_policy = policy
        if policy == "ignore":
            return
        if reason is not None:
            self.unused_note = f"not judged: {reason}"
            return
        ran = {row["nodeid"] for row in self.rows}
        # A test that never reached check() (skipped, failed in a fixture) keeps its default
        # golden: syrupy does the same for skipped tests' snapshots.
        excused = [folder for nodeid, folder in self.collection.tests.items() if nodeid not in ran]
        claimed = [row["golden"] for row in self.rows]
        folders = find_unused(self.collection.golden_dirs, claimed, excused)
        self.unused = [unused_error(folder, root, self.rows) for folder in folders]

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def merge(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def duplicate_names(self) -> list[str]:
        """Goldens claimed by more than one test (across xdist workers too)."""
        claims: dict[str, set[str]] = {}
        for row in self.rows:
            claimant = row.get("claimant") or test_of(row["nodeid"])
            claims.setdefault(row["golden"], set()).add(claimant)
        return [
            f"DUPLICATE GOLDEN — {golden} is claimed by {', '.join(sorted(tests))}; "
            "give each check its own name=..."
            for golden, tests in sorted(claims.items())
            if len(tests) > 1
        ]

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (r["name"], r["device"], r["nodeid"]))

    def lines(self) -> list[str]:
        """The terminal summary's lines (without the section header)."""
        if not self.rows and not self.skips and not self.unused and not self.unused_note:
            return []
        header = ("golden", "device", "mode", "verdict", "examples", "bundle", "time", "")
        table = [header] + [
            (
                row["name"],
                row["device"],
                row["mode"],
                row["verdict"],
                str(row.get("examples") or 0),
                format_size(row.get("bundle_size")),
                f"{row.get('seconds', 0.0):.2f}s",
                row.get("headline") or row.get("detail") or "",
            )
            for row in self.sorted_rows()
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
        out = ["  ".join([*map(str.ljust, r[:-1], widths), r[-1]]).rstrip() for r in table]
        out.append(self.totals())
        out.extend(
            f"warning: {row['name']} [{row['device']}]: {warning}"
            for row in self.sorted_rows()
            for warning in row.get("warnings") or []
        )
        reasons = Counter(skip["reason"] for skip in self.skips)
        out.extend(f"skipped: {n} check(s) — {reason}" for reason, n in sorted(reasons.items()))
        out.extend(f"error: {problem}" for problem in self.problems)
        out.extend(self.unused_lines())
        return out

    def totals(self, none: str = "") -> str:
        """``N golden(s), M check(s): 2 passed, 1 failed`` (``none`` for the verdicts of none)."""
        counts = Counter(str(row["verdict"]) for row in self.rows)
        verdicts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
        goldens = len({row["name"] for row in self.rows})
        return f"{goldens} golden(s), {len(self.rows)} check(s): {verdicts or none}"

    def unused_lines(self) -> list[str]:
        if self.unused_note:
            return [f"unused goldens: {self.unused_note}"]
        if not self.unused:
            return []
        out = [line for error in self.unused for line in error.render().splitlines()]
        effect = (
            "the run fails" if self.unused_policy == "fail" else "a warning, the run does not fail"
        )
        out.append(
            f"unused goldens: {len(self.unused)} — {effect} (modelpack_unused = "
            f"{self.unused_policy}; fail, warn or ignore)"
        )
        return out

    def unused_fails(self) -> bool:
        return bool(self.unused) and self.unused_policy == "fail"

    def failed(self) -> bool:
        return (
            bool(self.problems)
            or self.unused_fails()
            or any(r["verdict"] == Verdict.FAILED for r in self.rows)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "checks": self.sorted_rows(),
            "skipped": list(self.skips),
            "problems": list(self.problems),
            "unused": [
                {"name": e.name, "headline": e.headline, "detail": e.detail, "fix": e.fix}
                for e in self.unused
            ],
            "unused_policy": self.unused_policy,
            "unused_note": self.unused_note,
        }

    def write(self, path: Path) -> None:
        """Write the JSON report atomically (the one atomic write of :mod:`.golden.fileio`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())
