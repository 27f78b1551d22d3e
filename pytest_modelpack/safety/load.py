"""Loading: the interpreter builds the golden, judging every use before it happens.

The same opcode walk as the scan (:mod:`.interpreter`), in load mode: a refused use stops the load
before anything of it runs, storages are built from the bytes present (with ``map_location``, so
a golden pickled on CUDA loads on a CPU-only machine), and nothing is handed to ``pickle`` or
``torch.load``.
"""

from __future__ import annotations

import io
import mmap
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from pytest_modelpack.safety.machine import Refused, Session
from pytest_modelpack.safety.policy import Missing
from pytest_modelpack.safety.refs import ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import interpret_file
from pytest_modelpack.safety.verdict import corrupt_error, refusal_error, refusal_lines

if TYPE_CHECKING:
    from pytest_modelpack.safety.policy import Allowlist


class MappedBundle(Protocol):
    """A golden already verified and mapped copy-on-write (``GoldenStore.open_verified_bundle``):
    the loader reads the same pages the hash read, so the file is read from disk once."""

    @property
    def path(self) -> Path: ...

    @property
    def mapping(self) -> mmap.mmap: ...

    # Optional: ``fd``, a descriptor of the file mapped. With it a storage copied out of the
    # golden (misaligned) is read from the file with ``os.preadv``, not through the mapping.


def load_bundle(
    source: str | os.PathLike[str] | MappedBundle,
    allowlist: Allowlist,
    map_location: Any = "cpu",
    making: bool = False,
) -> Any:
    """Load the bundle at ``source`` (a path, or a verified mapped bundle), allowing only the uses
    ``allowlist`` allows.

    Tensor storages are views of the file mapped copy-on-write (``mmap.ACCESS_COPY``): nothing is
    copied on CPU, tensors stay writable and the file is never modified; a storage whose bytes
    are misaligned for its dtype is copied once, read from the file (``os.preadv``, not through
    the mapping), and one for another device is copied there.

    Raises UNSAFE GOLDEN for a refused use, CORRUPT GOLDEN for a truncated or malformed pickle,
    and ``ModuleNotFoundError``/``AttributeError`` (as ``pickle.load`` would) for a project class
    that no longer exists. ``making``: the live model's own bundle at regen (a refusal says so).
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return _load(f, allowlist, map_location, path, whole_file=True, making=making)
            # Copy-on-write: writes to the mapping stay in this process.
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            return _load_mapped(mapping, allowlist, map_location, path, making, f.fileno())
    fd = getattr(source, "fd", None)
    return _load_mapped(source.mapping, allowlist, map_location, os.fspath(source.path), making, fd)


def _load_mapped(
    mapping: mmap.mmap,
    allowlist: Allowlist,
    map_location: Any,
    path: str,
    making: bool,
    golden_fd: int | None,
) -> Any:
    """:func:`_load` of a whole mapped file; ``golden_fd`` reads misaligned storages."""
    mapping.seek(0)
    return _load(
        mapping,
        allowlist,
        map_location,
        path,
        whole_file=True,
        mapping=mapping,
        making=making,
        golden_fd=golden_fd,
    )


def loads_bundle(data: bytes, allowlist: Allowlist, map_location: Any = "cpu") -> Any:
    """Like :func:`load_bundle`, for a bundle already in memory."""
    return _load(io.BytesIO(data), allowlist, map_location, "<bytes>")


def _judge(allowlist: Allowlist) -> Any:
    def judge(ref: Any) -> Any:
        decision = allowlist.judge(ref)
        if not decision.allowed and decision.missing is Missing.ATTRIBUTE:
            # A renamed or moved class: fail as pickle.load would, for a LOAD ERROR report.
            raise AttributeError(f"Can't get attribute {ref.qualname!r} on module {ref.module!r}")
        if not decision.allowed and decision.missing:  # Missing.MODULE
            raise ModuleNotFoundError(f"No module named {ref.module!r}", name=ref.module)
        return decision

    return judge


def _load(
    f: IO[bytes] | mmap.mmap,
    allowlist: Allowlist,
    map_location: Any,
    label: str,
    whole_file: bool = False,
    mapping: mmap.mmap | None = None,
    making: bool = False,
    golden_fd: int | None = None,
) -> Any:
    import warnings

    start = f.tell()
    f.seek(0, os.SEEK_END)
    end = f.tell()  # mmap.seek returns None before Python 3.13
    f.seek(start)
    session = Session(
        size=end - start, judge=_judge(allowlist), map_location=map_location, mapping=mapping
    )
    try:
        with warnings.catch_warnings():
            # torch rebuilds legacy typed storages and warns; the user cannot act on that.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return interpret_file(
                session, Window(f, start, end), "top level", whole_file, golden_fd
            )
    except Refused as exc:
        lines = refusal_lines([(exc.ref, exc.reason)])
        raise refusal_error(lines, [exc.ref], label, making=making) from None
    except ScanError as exc:
        raise corrupt_error(label, str(exc)) from None
    except (EOFError, MemoryError, RecursionError) as exc:
        raise corrupt_error(label, f"{type(exc).__name__}: {exc}") from None
