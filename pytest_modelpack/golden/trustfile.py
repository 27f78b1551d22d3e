"""The trust file: what each golden's live model does in its own pickle, in reviewable text.

The gate trusts, for a golden, the global uses the live model's own pickle makes (derived from the
live fixture in the same check). ``modelpack scan`` (the pre-commit hook) has no live model, so
regen writes those same uses beside the golden folder, in ``<golden dir>.trust`` (``goldens.trust``
for ``goldens/``), one section per golden::

    [sentiment]
    called collections.OrderedDict ()
    instantiated uuid:UUID
    built uuid:UUID

Only uses the built-in policy does not already allow are listed, sorted: a change to a model that
makes its pickle use something new shows as a line in review. The file is outside ``goldens/``:
a change to the goldens alone (a bundle or a manifest) can never widen what the scan trusts, and a
change to this file is a visible diff of plain names. The gate never reads it.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import GoldenIOError, UsageError
from ..safety import Allowlist, GlobalRef, Trust
from ..safety.refs import Role
from . import fileio

SUFFIX = ".trust"
_HEADER = (
    "# pytest-modelpack trust file, written by --modelpack-regen: for each golden, the global\n"
    "# uses its live model's own pickle makes that the built-in policy does not already allow.\n"
    "# `modelpack scan` trusts exactly these for that golden (the gate derives them from the\n"
    "# live model itself). Review every change; never edit by hand: regenerate.\n"
)
_LINE = re.compile(
    r"^(?P<role>[a-z]+) (?P<module>[\w.]+):(?P<qualname>[\w.<>]+)(?: \((?P<shape>.*)\))?$"
)
_SECTION = re.compile(r"^\[(?P<name>[^\[\]\s]+)\]$")
#: No trust file regen writes is larger (a line per use a live model's pickle makes).
LIMIT = 16 << 20


def trust_path(golden_dir: Path) -> Path:
    """``goldens.trust`` beside ``goldens/``."""
    return golden_dir.with_name(golden_dir.name + SUFFIX)


def lines_for(refs: Iterable[GlobalRef], base: Allowlist) -> list[str]:
    """The uses in ``refs`` (the live model's pickle) that ``base`` (no live trust) refuses."""
    out = set()
    for ref in refs:
        if ref.problem is not None or "<" in ref.module or base.judge(ref).allowed:
            continue
        line = f"{ref.role.value} {ref.module}:{ref.qualname}"
        if ref.role is Role.REDUCE or (ref.role in _SHAPED and ref.shape is not None):
            line += f" ({ref.shape or ''})"
        out.add(line)
    return sorted(out)


def parse(text: str, path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        section = _SECTION.match(line)
        if section:
            if section["name"] in sections:
                why = f"section [{section['name']}] appears twice (regen writes each once)"
                raise _broken(f"{path}:{number}", why, path)
            current = sections[section["name"]] = []
            continue
        match = _LINE.match(line)
        if current is None or match is None or match["role"] not in _ROLES:
            raise _broken(f"{path}:{number}", f"not a trust line: {line[:80]!r}", path)
        current.append(line)
    return sections


_ROLES = {role.value: role for role in Role}
_SHAPED = (Role.BUILD, Role.NEWOBJ)  # the roles whose trust line may pin an argument shape


def trust_of(lines: Iterable[str]) -> Trust:
    uses, shapes = set(), set()
    for line in lines:
        match = _LINE.match(line)
        assert match is not None  # parse() checked every line
        role = _ROLES[match["role"]]
        uses.add((match["module"], match["qualname"], role))
        if role is Role.REDUCE or (role in _SHAPED and match["shape"] is not None):
            shapes.add((match["module"], match["qualname"], match["shape"] or ""))
    return Trust(frozenset(uses), frozenset(shapes))


def _broken(where: str, why: str, path: Path) -> UsageError:
    return UsageError(
        f"{where}: {why}",
        fix=f"regenerate it: remove {path}, then run pytest --modelpack-regen (the whole suite: "
        "every golden's section is written anew from its live model; never edit it by hand)",
    )


def _unreadable(path: Path, exc: OSError) -> GoldenIOError:
    """GOLDEN I/O ERROR for a trust file the OS will not let us read: the path, errno, remedy."""
    from .oserrors import remedy

    name = errno.errorcode.get(exc.errno or 0, "OSError")
    why, fix = remedy(exc.errno, "read", str(path), "pytest --modelpack-regen")
    return GoldenIOError(
        f"cannot read {path}: {why}",
        detail=[f"path: {exc.filename or path}", f"{name}: {exc.strerror or exc}"],
        fix=fix,
    )


def _text(path: Path) -> str | None:
    """The trust file's text (None when there is none): a regular file only (a FIFO would block
    the pre-commit hook for good), at most :data:`LIMIT` bytes, UTF-8."""
    try:
        with fileio.open_regular(path) as opened:
            if opened is None:
                raise _broken(str(path), "not a regular file", path)
            if opened[1].st_size > LIMIT:
                why = f"too large ({opened[1].st_size} bytes; regen never writes one over {LIMIT})"
                raise _broken(str(path), why, path)
            data = opened[0].read(LIMIT + 1)
            if len(data) > LIMIT:  # it grew while read
                raise _broken(str(path), f"too large (over {LIMIT} bytes)", path)
    except FileNotFoundError:
        if os.path.islink(path):  # a link to nothing: not "no trust file", which trusts nothing
            raise _broken(str(path), f"a symlink to nothing ({os.readlink(path)})", path) from None
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise _broken(str(path), why, path) from None


def read(golden_dir: Path) -> dict[str, list[str]]:
    """The sections of the trust file beside ``golden_dir`` ({} when there is none; none lies
    beside the root, the golden folder of a file such as /tmp/model.pkl)."""
    if not golden_dir.name:
        return {}
    path = trust_path(golden_dir)
    text = _text(path)
    return {} if text is None else parse(text, path)


def render(sections: dict[str, list[str]]) -> str:
    body = "".join(
        f"\n[{name}]\n" + "".join(f"{line}\n" for line in lines)
        for name, lines in sorted(sections.items())
        if lines
    )
    return _HEADER + body


def update(golden_dir: Path, name: str, lines: list[str]) -> bool:
    """Set golden ``name``'s section (none when ``lines`` is empty); True when the file changed.
    Under the golden folder's lock (other regens of the same folder under xdist), atomically."""
    path = trust_path(golden_dir)
    with fileio.folder_lock(golden_dir, shared=False):
        old_text = _text(path)
        sections = parse(old_text, path) if old_text is not None else {}
        if sections.get(name, []) == lines:
            return False
        if lines:
            sections[name] = lines
        else:
            sections.pop(name, None)
        if not any(sections.values()):
            if old_text is not None:
                path.unlink()
            return old_text is not None
        fileio.write_atomic(path, render(sections).encode("utf-8"))
    return True
