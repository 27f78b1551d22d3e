"""Unused goldens: golden folders that no check claimed in a full, unfiltered gate run.

A golden nobody checks is dead weight that hides a renamed test (the new name's golden is missing,
the old one sits there unchecked). Only a run that selected every test can tell: a run narrowed by
``-k``, ``-m``, node ids, ``--lf`` or a deselection never judges. syrupy's unused-snapshot report is
the model. Pure: no pytest; the plugin gathers the facts and calls in here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import errors
from ..fixes import remove_or_claim

#: A folder holding one of these is a golden (complete or not: a half-written one counts too).
GOLDEN_FILES = ("manifest.json", "bundle.pkl", "bundle.pt")


@dataclasses.dataclass
class Collection:
    """What a run selected, as plain data (it travels from an xdist worker to the controller)."""

    #: Golden folders (``<module dir>/<modelpack_dir>``, marker ``dir=`` too), absolute.
    golden_dirs: set[str] = dataclasses.field(default_factory=set)
    #: ``nodeid -> default golden folder`` of each test that uses the modelpack fixture.
    tests: dict[str, str] = dataclasses.field(default_factory=dict)
    selected: int = 0
    deselected: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "golden_dirs": sorted(self.golden_dirs)}

    def merge(self, data: dict[str, Any]) -> None:
        """Merge a worker's collection (every worker collects the same tests)."""
        self.golden_dirs.update(data["golden_dirs"])
        self.tests.update(data["tests"])
        self.selected = max(self.selected, data["selected"])
        self.deselected = max(self.deselected, data["deselected"])


def _key(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def looks_like_golden(folder: Path) -> bool:
    try:
        return folder.is_dir() and any((folder / name).is_file() for name in GOLDEN_FILES)
    except OSError:  # unreadable: its check (if any) said GOLDEN I/O ERROR; not judged here
        return False


def find_unused(
    golden_dirs: Iterable[str], claimed: Iterable[str], excused: Iterable[str] = ()
) -> list[Path]:
    """Golden folders under ``golden_dirs`` that are neither claimed nor excused, sorted."""
    skip = {_key(p) for p in [*claimed, *excused]}
    found: list[Path] = []
    for directory in sorted(set(golden_dirs)):
        base = Path(directory)
        try:
            if not base.is_dir():
                continue
            entries = sorted(base.iterdir())
        except OSError:  # unreadable (mode 000): the checks in it said GOLDEN I/O ERROR
            continue
        # A golden's name never starts with a dot: ``.NAME.new-*``/``.NAME.old-*`` folders are a
        # killed regen's leftovers, which the store reports (and regen removes).
        found += [
            folder
            for folder in entries
            if not folder.name.startswith(".")
            and looks_like_golden(folder)
            and _key(folder) not in skip
        ]
    return found


def not_judged_reason(
    *,
    filters: list[str],
    args: list[str],
    roots: list[Path],
    invocation_dir: Path,
    selected: int,
    deselected: int,
    finished: int,
) -> str | None:
    """Why this run cannot judge unused goldens (None: it selected and ran every test).
    ``args``: the paths or node ids given; ``roots``: what a plain ``pytest`` would collect."""
    if filters:
        return f"filtered run ({', '.join(filters)})"
    if any("::" in arg for arg in args):
        return "filtered run (node ids)"
    given = [(invocation_dir / arg).resolve() for arg in args]
    narrower = [
        root
        for root in roots
        if not any(root.resolve() == g or g in root.resolve().parents for g in given)
    ]
    if narrower:
        return "filtered run (paths narrower than the rootdir/testpaths)"
    if deselected:
        return f"filtered run ({deselected} test(s) deselected)"
    if finished < selected:
        return f"not every test ran ({finished} of {selected}: stopped early or interrupted)"
    return None


def unused_error(folder: Path, root: Path, rows: list[dict[str, Any]]) -> errors.UnusedGolden:
    """UNUSED GOLDEN for ``folder``, with the checks whose golden is missing beside it."""
    shown = _shown(folder, root)
    beside = [row for row in rows if Path(row["golden"]).parent == folder.parent]
    renamed = list(
        dict.fromkeys(
            (row.get("claimant") or row["nodeid"], _shown(Path(row["golden"]), root))
            for row in beside
            if row.get("kind") == errors.MissingGolden.kind
        )
    )
    claimed = sorted({Path(row["golden"]).name for row in beside})
    detail = [
        f"folder: {shown} ({', '.join(n for n in GOLDEN_FILES if (folder / n).is_file())})",
        "checks in this run claimed: " + (", ".join(claimed) if claimed else "nothing here"),
    ]
    return errors.UnusedGolden(
        f"no check claimed {shown} in this full gate run",
        name=folder.name,
        detail=detail,
        fix=remove_or_claim(shown, folder.name, renamed),
    )


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.absolute().relative_to(root.absolute()))
    except ValueError:
        return str(path)
