"""What the plugin keeps for one pytest session, stored under a ``pytest.StashKey``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .options import Settings
from .report import Report

__all__ = ["SessionState"]


@dataclasses.dataclass
class SessionState:
    """What the plugin keeps for one pytest session (stored under a StashKey)."""

    settings: Settings
    root: Path
    report: Report
    claims: dict[str, str] = dataclasses.field(default_factory=dict)

    def claim(self, golden: Path, claimant: str) -> str | None:
        """Record that ``claimant`` owns ``golden``; return the other owner when there is one."""
        key = str(golden)
        owner = self.claims.setdefault(key, claimant)
        return None if owner == claimant else owner
