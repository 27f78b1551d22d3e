"""The states a check moves through, as Enums: a branch on a state nothing produces can't hide.

Members are also ``str`` (their value), so report rows stay plain JSON for pytest-xdist and the
JSON report, and compare equal to the words users read in the summary.
"""

from __future__ import annotations

from enum import Enum


class Word(str, Enum):
    """A ``str`` Enum that prints as its value."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__  # type: ignore[assignment]


class Mode(Word):
    """What a run does: the command line picks one for the whole session."""

    ROUNDTRIP = "roundtrip"  # plain ``pytest``: dump -> load in memory, writes nothing
    GOLDEN = "golden"  # ``--modelpack-golden``: the CI gate, writes nothing
    REGEN = "regen"  # ``--modelpack-regen``: (re)write goldens


class Verdict(Word):
    """How one check (a golden on a device) ended."""

    PASSED = "passed"
    FAILED = "failed"
    CREATED = "created"  # regen wrote a new golden
    CHANGED = "changed"  # regen replaced a golden that differed
    UNCHANGED = "unchanged"  # regen found the golden on disk verified and equal
    CHECKED = "checked"  # regen on a second device: checked, the first device's run writes
