"""Scanning: the interpreter walks a file without building anything and the policy judges it.

Public API: :func:`iter_globals`, :func:`scan_stream`, :func:`scan_file`, :func:`pickle_protocol`.
Scanning never imports torch and never reads tensor payloads (they are skipped with ``seek``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from pytest_modelpack.safety.interpreter import Session
from pytest_modelpack.safety.refs import GlobalRef, ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import interpret_file
from pytest_modelpack.safety.verdict import Verdict

if TYPE_CHECKING:
    from pytest_modelpack.safety.policy import Allowlist

_LFS_MAGIC = b"version https://git-lfs"
_CHUNK = 1 << 20


def scan_refs(f: IO[bytes], where: str = "top level", whole_file: bool = False) -> list[GlobalRef]:
    """Every use of a global the stream in ``f`` (from its position to its end) would make.

    Raises :class:`ScanError` for an empty, truncated or malformed stream, with the uses found
    before that point on ``exc.refs``.
    """
    return _scan(f, where, whole_file).refs


def _scan(f: IO[bytes], where: str, whole_file: bool) -> Session:
    """The scan session of the stream in ``f``: its uses (``refs``) and storage spans."""
    # A mapping (the gate scans the verified one) is seekable, but has no seekable() before
    # Python 3.13: spooling it would read every page of it (its file pages resident) and write
    # the whole file out again.
    seekable = isinstance(f, mmap.mmap)
    try:
        seekable = seekable or f.seekable()
    except (AttributeError, OSError, ValueError):
        pass
    if not seekable:
        import shutil
        import tempfile

        # A pipe or socket: spool it (to disk beyond 16 MiB) so payloads can still be skipped.
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
            shutil.copyfileobj(f, spool, _CHUNK)
            spool.seek(0)
            return _scan(spool, where, whole_file)  # type: ignore[arg-type]
    start = f.tell()
    f.seek(0, os.SEEK_END)
    end = f.tell()  # mmap.seek returns None before Python 3.13
    f.seek(start)
    session = Session(size=end - start)
    try:
        interpret_file(session, Window(f, start, end), where, whole_file)
    except ScanError as exc:
        exc.refs = session.refs  # type: ignore[attr-defined]
        raise
    except RecursionError:  # pragma: no cover - the interpreter does not recurse
        raise ScanError("too deeply nested") from None
    if start and session.spans:  # offsets in the stream, not the file
        session.spans = [(at - start, n) for at, n in session.spans]
    return session


def iter_globals(f: IO[bytes], where: str = "top level") -> Iterator[GlobalRef]:
    """Yield every use of a global the pickle in binary file ``f`` would make.

    A pickle (protocols 0-5), a legacy ``torch.save`` stream or a torch zip file; pickles nested
    in torch storages are followed. Raises :class:`ScanError` when the stream is empty, truncated
    or not a pickle; the uses found before that point are yielded first.
    """
    try:
        refs = scan_refs(f, where)
    except ScanError as exc:
        yield from getattr(exc, "refs", [])
        raise
    yield from refs


def scan_stream(
    f: IO[bytes], allowlist: Allowlist, label: str = "<stream>", whole_file: bool = False
) -> Verdict:
    """Scan binary file ``f`` and judge every use against ``allowlist``. Never raises for bad
    data: an unreadable, empty, truncated or non-pickle stream gives ``error``."""
    verdict = Verdict(path=label)
    try:
        session = _scan(f, "top level", whole_file)
        refs = session.refs
        verdict.storages = sorted(session.spans) if session.spans is not None else None
    except ScanError as exc:
        refs = getattr(exc, "refs", [])
        verdict.error = str(exc)
    except OSError as exc:
        refs = []
        verdict.error = f"unreadable: {exc}"
    judge(verdict, refs, allowlist)
    return verdict


def judge(verdict: Verdict, refs: list[GlobalRef], allowlist: Allowlist) -> None:
    """Fill ``verdict`` from the uses ``refs``: each (name, role, problem) judged once."""
    names: set[tuple[str, str]] = set()
    seen: set[tuple[str, str, object, str | None, str | None]] = set()
    for ref in refs:
        key = (ref.module, ref.qualname, ref.role, ref.problem, ref.shape)
        if key in seen:
            continue
        seen.add(key)
        if (ref.module, ref.qualname) not in names:
            names.add((ref.module, ref.qualname))
            verdict.globals.append(ref)
        verdict.uses.append(ref)
        decision = allowlist.judge(ref)
        if not decision.allowed:
            if any(r.name == ref.name and r.problem is None for r, _ in verdict.refused) and (
                ref.problem is None
            ):
                continue  # one line per refused name is enough when nothing else is wrong
            verdict.refused.append((ref, decision.reason))
            if decision.missing:
                verdict.missing.append(ref)


def scan_file(path: str | os.PathLike[str], allowlist: Allowlist) -> Verdict:
    """Scan the pickle or torch file at ``path``; see :func:`scan_stream`."""
    label = os.fspath(path)
    try:
        with open(path, "rb", buffering=256 * 1024) as f:
            head = f.read(len(_LFS_MAGIC))
            if head == _LFS_MAGIC:
                return Verdict(
                    path=label,
                    error="a Git LFS pointer file, not the pickle itself (run `git lfs pull`)",
                )
            f.seek(0)
            return scan_stream(f, allowlist, label, whole_file=True)
    except OSError as exc:
        return Verdict(path=label, error=f"unreadable: {exc}")


def pickle_protocol(path: str | os.PathLike[str]) -> int:
    """The protocol of the pickle at ``path``: its leading PROTO opcode, 0 when it has none."""
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80:
        return head[1]
    return 0
