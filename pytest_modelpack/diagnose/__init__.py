"""Diagnoses: turning what pickle, torch and the user's code did into a headline, detail and fix.

One module per diagnosis (UNPICKLABLE, LOSSY ROUND-TRIP, NONDETERMINISTIC, renamed or moved code,
LOAD ERROR), and :mod:`.frames` for the user's own frame in a traceback. Nothing here imports
pytest; torch is imported only when the object graph holds torch objects.
"""

from __future__ import annotations

from .frames import user_frame
from .lossy import explain_lossy, lost_private_state, setstate_pitfall
from .missing import (
    explain_missing,
    locate_globals,
    not_importable_reason,
    recorded_source,
    rename_hints,
)
from .nondeterminism import nondeterminism_hints
from .unpicklable import Finding, describe_object, find_unpicklable

__all__ = [
    "Finding",
    "describe_object",
    "explain_lossy",
    "explain_missing",
    "find_unpicklable",
    "locate_globals",
    "lost_private_state",
    "nondeterminism_hints",
    "not_importable_reason",
    "recorded_source",
    "rename_hints",
    "setstate_pitfall",
    "user_frame",
]
