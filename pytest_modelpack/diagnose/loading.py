"""LOAD ERROR: a pickle that does not load back, and what to do about it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors
from ..fixes import regen_command
from .frames import user_frame
from .lossy import setstate_pitfall
from .missing import explain_missing

if TYPE_CHECKING:
    from ..golden.manifest import Manifest


def load_error(
    exc: BaseException | None,
    what: str,
    *,
    nodeid: str | None,
    project_root: Path,
    manifest: Manifest | None = None,
    missing: list[tuple[str, str]] | None = None,
) -> errors.ModelpackError:
    """LOAD ERROR for ``what`` (the golden, or the freshly dumped model): ``missing`` names that
    no longer resolve (:func:`explain_missing`), or ``exc`` raised while unpickling."""
    regen = regen_command(nodeid)
    golden = "golden" in what
    if missing is None and exc is not None and golden:
        got = re.match(r"Can't get attribute '([^']+)' on (?:module '|<module ')([^']+)'", str(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            missing = [(exc.name, "*")]
        elif isinstance(exc, AttributeError) and got:
            missing = [(got.group(2), got.group(1))]
    if missing:
        summary, detail, fix = explain_missing(
            missing, manifest, project_root, regen, scanned="scan" in what
        )
        return errors.LoadError(summary, detail=detail, fix=fix)
    assert exc is not None
    message = f"{type(exc).__name__}: {exc}"
    frame = user_frame(exc, project_root)
    detail = [f"{what} raised {message}"]
    if frame is not None:
        detail.append(f"where: {frame}")
    pitfall = setstate_pitfall(exc)
    method = frame.function.rsplit(".", 1)[-1] if frame is not None else "__setstate__"
    owner = frame.owner if frame is not None and frame.owner else None
    if pitfall is not None:
        detail.append(pitfall[0])
        fix = pitfall[1] + (f"; then regenerate the golden: {regen}" if golden else "")
    elif isinstance(exc, ImportError):
        detail.append(f"importing {exc.name or 'a module'} failed while unpickling")
        fix = f"make the module importable again, or accept the change with: {regen}"
    elif golden:
        detail.append(
            "the golden was pickled by older code, and today's code cannot rebuild the object "
            "from the state it saved"
        )
        fix = (
            f"make {owner or 'the class'}.{method} accept the old state (e.g. "
            f"state.get(key, default)), or accept the change with: {regen}"
        )
    else:
        fix = f"make {owner or 'the class'}.__setstate__ restore exactly what __getstate__ saves"
    summary = (
        f"bundle.pkl cannot be loaded: {message}"
        if golden
        else f"the model cannot be loaded back from its own pickle: {message}"
    )
    return errors.LoadError(summary, detail=detail, fix=fix)
