"""THE verdict of a safety scan, and the one mapping from a verdict (or a refusal) to an error.

Used by the gate, regen, the loader and the CLI alike:

* refused anything (a global in a role the policy refuses, arguments a table call rejects, a
  persistent id, a nested payload refused) is UNSAFE GOLDEN naming the global, its role and why;
* every refused global merely missing (renamed or moved *project* code) is a LOAD ERROR;
* CORRUPT GOLDEN only for data that cannot be read (truncated, malformed, not a pickle);
* at regen, an unsafe *live* model gets its own message: the author's own code, not tampering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_modelpack import errors
from pytest_modelpack.fixes import restore_or_regen, trust_line
from pytest_modelpack.safety.refs import GlobalRef, Role

__all__ = ["Verdict", "refusal_lines", "verdict_error", "refusal_error", "corrupt_error"]


@dataclass
class Verdict:
    """The safety verdict for one file or stream.

    ``globals`` lists every global used (first-seen order, one entry per name), ``uses`` every
    (global, role) use once, ``refused`` the refused uses with the reason, ``missing`` those
    refused names that do not resolve at all (renamed project code), and ``error`` why the stream
    could not be read to its end (an unreadable stream is never safe).
    """

    path: str
    globals: list[GlobalRef] = field(default_factory=list)
    refused: list[tuple[GlobalRef, str]] = field(default_factory=list)
    error: str | None = None
    missing: list[GlobalRef] = field(default_factory=list)
    uses: list[GlobalRef] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """True when the stream was read completely and every use is allowed."""
        return self.error is None and not self.refused

    def raise_if_unsafe(self, name: str | None = None) -> None:
        """Raise the error :func:`verdict_error` maps this verdict to, if any."""
        error = verdict_error(self, name=name)
        if error is not None:
            raise error


def refusal_lines(refused: list[tuple[GlobalRef, str]]) -> list[str]:
    """One line per refused use: the global, its role, where, and why."""
    lines = []
    for ref, reason in refused:
        where = "" if ref.where == "top level" else f" in {ref.where}"
        lines.append(f"{ref.name} ({_role_words(ref.role)}{where}): {reason}")
    return lines


def _role_words(role: Role) -> str:
    return {
        Role.REFERENCE: "referenced",
        Role.NEWOBJ: "instantiated",
        Role.REDUCE: "called",
        Role.BUILD: "state set by BUILD",
    }[role]


def corrupt_error(
    what: str, error: str, *, name: str | None = None, nodeid: str | None = None
) -> errors.CorruptGolden:
    return errors.CorruptGolden(
        f"{what} is not a readable pickle",
        name=name,
        detail=[error],
        fix=restore_or_regen(nodeid),
    )


def verdict_error(
    verdict: Any,
    *,
    name: str | None = None,
    nodeid: str | None = None,
    making: bool = False,
    missing_error: Any = None,
) -> errors.ModelpackError | None:
    """The error for ``verdict`` (None when safe).

    ``making``: the verdict is of the live model's own pickle at regen. ``missing_error``: called
    with the missing refs to build a LOAD ERROR when every refused global is renamed project code
    (the gate passes :func:`pytest_modelpack.diagnose.loading.load_error` through it).
    """
    if verdict.error is not None and not verdict.refused:
        return corrupt_error(verdict.path, verdict.error, name=name, nodeid=nodeid)
    if not verdict.refused:
        return None
    if (
        not making
        and verdict.error is None
        and missing_error is not None
        and len(verdict.missing) == len(verdict.refused)
    ):
        return missing_error(verdict.missing)
    lines = refusal_lines(verdict.refused)
    if verdict.error is not None:  # a payload followed by garbage: pickle.load runs it first
        lines.append(f"(the scan then stopped: {verdict.error})")
    return refusal_error(lines, [ref for ref, _ in verdict.refused], verdict.path, name, making)


def refusal_error(
    lines: list[str],
    refs: list[GlobalRef],
    path: str | Path,
    name: str | None = None,
    making: bool = False,
) -> errors.UnsafeGolden:
    """UNSAFE GOLDEN for refused uses (a scan's, or the one the loader stopped at)."""
    count = len(lines)
    plural = "s" if count != 1 else ""
    trustable = sorted({ref.name for ref in refs if ref.problem is None and "<" not in ref.name})
    if making:
        fix = (
            trust_line(trustable)
            if trustable
            else "change how the model pickles (its __reduce__/__getstate__): the gate only "
            "loads what a plain pickle.dump of ordinary objects writes"
        )
        return errors.UnsafeGolden(
            f"the live model pickles into {count} use{plural} of globals the gate would refuse "
            "to load",
            name=name,
            detail=[f"file: {path}", *lines, "this is your own model's pickle, not a tampered "
                    "golden: nothing was written"],
            fix=fix,
        )
    return errors.UnsafeGolden(
        f"{count} use{plural} of globals in the golden refused; nothing from it was run",
        name=name,
        detail=[f"file: {path}", *lines],
        fix="do not load this file: restore the golden from version control or regenerate it "
        "from trusted code" + (
            f"; if you trust these names for every golden:\n{trust_line(trustable)}"
            if trustable
            else ""
        ),
    )
