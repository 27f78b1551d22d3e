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
from pytest_modelpack.fixes import regen_command, restore_or_regen, trust_line
from pytest_modelpack.safety.refs import GlobalRef, Role

#: Refusals that run nothing by themselves (pickle.load fails on them): with a stream that then
#: turns out malformed, the file is corrupt rather than an attack.
_INERT = frozenset({"<persistent id>", "<out-of-band buffer>"})


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
    #: Where tensor storages' bytes lie in the file, ``(offset, length)`` sorted; None when
    #: unknown (a storage pickled as text, a malformed stream).
    storages: list[tuple[int, int]] | None = None

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
        lines.append(f"{ref.name} ({_ROLE_WORDS[ref.role]}{where}): {reason}")
    return lines


_ROLE_WORDS = {
    Role.REFERENCE: "referenced",
    Role.NEWOBJ: "instantiated",
    Role.REDUCE: "called",
    Role.BUILD: "state set by BUILD",
}


def corrupt_error(
    what: str, error: str, *, name: str | None = None, nodeid: str | None = None
) -> errors.CorruptGolden:
    return errors.CorruptGolden(
        f"{Path(what).name} is not a readable pickle",
        name=name,
        detail=[f"file: {what}", error],
        fix=restore_or_regen(nodeid),
    )


def verdict_error(
    verdict: Any,
    *,
    name: str | None = None,
    nodeid: str | None = None,
    making: bool = False,
    missing_error: Any = None,
    shown: str | None = None,
) -> errors.ModelpackError | None:
    """The error for ``verdict`` (None when safe).

    ``making``: the verdict is of the live model's own pickle at regen. ``missing_error``: called
    with the missing refs to build a LOAD ERROR when every refused global is renamed project code
    (the gate passes :func:`pytest_modelpack.diagnose.loading.load_error` through it).
    """
    running = [(r, why) for r, why in verdict.refused if r.module not in _INERT]
    if verdict.error is not None and not running:
        # Garbage that happens to hold a PERSID byte is corrupt; a payload before garbage is not.
        return corrupt_error(verdict.path, verdict.error, name=name, nodeid=nodeid)
    if not verdict.refused:
        return None
    if not making and verdict.error is None and len(verdict.missing) == len(verdict.refused):
        if missing_error is not None:
            return missing_error(verdict.missing)
        count = len(verdict.missing)
        return errors.LoadError(
            f"{verdict.path} references {count} global{'s' if count > 1 else ''} that no "
            "longer exist",
            name=name,
            detail=refusal_lines(verdict.refused),
            fix="restore the module or class, keep an alias under the old name, or "
            f"regenerate the golden with {regen_command(nodeid)}",
        )
    lines = refusal_lines(verdict.refused)
    if verdict.error is not None:  # a payload followed by garbage: pickle.load runs it first
        lines.append(f"(the scan then stopped: {verdict.error})")
    refs = [ref for ref, _ in verdict.refused]
    return refusal_error(lines, refs, verdict.path, name, making, nodeid, shown)


def refusal_error(
    lines: list[str],
    refs: list[GlobalRef],
    path: str | Path,
    name: str | None = None,
    making: bool = False,
    nodeid: str | None = None,
    shown: str | None = None,
) -> errors.UnsafeGolden:
    """UNSAFE GOLDEN for refused uses (a scan's, or the one the loader stopped at).

    At regen (``making``) the pickle is the author's own live model: say so, and offer the one
    line that trusts the names (never for a problem no configuration can lift). At the gate the
    golden is untrusted input: never advise trusting what it asks for.
    """
    count = len(lines)
    uses = f"{count} global use{'s' if count != 1 else ''}"
    if making:
        trustable = sorted(
            {ref.name for ref in refs if ref.problem is None and "<" not in ref.name}
        )
        fix = (
            trust_line(trustable)
            if trustable
            else "change how the model pickles (its __reduce__/__getstate__): the gate only "
            "loads what a plain pickle.dump of ordinary objects and tensors writes"
        )
        return errors.UnsafeGolden(
            f"the live model pickles into {uses} the gate would refuse to load",
            name=name,
            detail=[
                f"file: {path}",
                *lines,
                "this is your own model's pickle, not a tampered golden; nothing was written",
            ],
            fix=fix,
        )
    return errors.UnsafeGolden(
        f"{uses} refused; nothing from the golden was run",
        name=name,
        detail=[f"file: {path}", *lines],
        fix="do not trust this file: " + restore_or_regen(nodeid, shown),
    )
