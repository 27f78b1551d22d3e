"""Load a golden bundle with a restricted unpickler.

The static scan (scan.py) runs first; this is the second wall. Every global the stream asks for is
checked against the same :class:`~pytest_modelpack.allowlist.Allowlist` before it is imported,
persistent ids are refused (``pickle.dump`` never writes them), and torch storages are loaded with
``torch.load(weights_only=True, map_location=...)`` instead of torch's own
``_load_from_bytes`` (which uses ``weights_only=False``), so a golden pickled on CUDA loads on a
CPU-only machine and a nested payload cannot run code.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import sys
import warnings
from typing import IO, TYPE_CHECKING, Any

from pytest_modelpack.errors import CorruptGolden, UnsafeGolden
from pytest_modelpack.scan import (
    _LOAD_FROM_BYTES,
    ScanError,
    _compat_name,
    _fix_imports,
    _iter_payload_globals,
)

if TYPE_CHECKING:
    from pytest_modelpack.allowlist import Allowlist

__all__ = ["load_bundle", "loads_bundle"]

_FIX = (
    "do not load this file; regenerate it from trusted code with pytest --modelpack-regen, "
    "or list a trusted global in the extra safe globals"
)


def load_bundle(
    path: str | os.PathLike[str], allowlist: Allowlist, map_location: Any = "cpu"
) -> Any:
    """Unpickle the bundle at ``path``, importing only globals ``allowlist`` allows.

    The file is streamed, never read into one bytes object first. ``map_location`` is passed to
    ``torch.load`` for every nested torch storage (``"cpu"``, a ``torch.device``, a dict or a
    callable, as torch accepts). Raises :class:`UnsafeGolden` for a refused global or persistent
    id, :class:`CorruptGolden` for a truncated or malformed pickle, and ``ModuleNotFoundError`` /
    ``AttributeError`` (as ``pickle.load`` would) for a project class that no longer exists.
    """
    with open(path, "rb", buffering=256 * 1024) as f:
        return _load(f, allowlist, map_location, os.fspath(path))


def loads_bundle(data: bytes, allowlist: Allowlist, map_location: Any = "cpu") -> Any:
    """Like :func:`load_bundle`, for a bundle already in memory."""
    return _load(io.BytesIO(data), allowlist, map_location, "<bytes>")


def _load(f: IO[bytes], allowlist: Allowlist, map_location: Any, label: str) -> Any:
    start = f.tell()
    head = f.read(2)
    f.seek(start)
    unpickler = _RestrictedUnpickler(f, allowlist, map_location, _fix_imports(head))
    try:
        return unpickler.load()
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CorruptGolden(
            f"{label} is truncated or not a valid pickle: {exc}",
            fix="restore the file from version control, or regenerate it with "
            "pytest --modelpack-regen",
        ) from exc


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` enforces the allowlist."""

    def __init__(
        self, f: IO[bytes], allowlist: Allowlist, map_location: Any, fix_imports: bool
    ) -> None:
        super().__init__(f)
        self._allowlist = allowlist
        self._map_location = map_location
        # Decided from the leading PROTO opcode, exactly as the scanner decides it, so both
        # judge the same names (pickle's own find_class, which we replace, would map them).
        self._fix = fix_imports

    def find_class(self, module: str, name: str) -> Any:
        sys.audit("pickle.find_class", module, name)
        if self._fix:
            module, name = _compat_name(module, name)
        decision = self._allowlist.check(module, name)
        if not decision.allowed:
            if decision.missing:
                # A renamed or moved class: fail as pickle.load would, for a LOAD ERROR report.
                if "has no attribute" in decision.reason:
                    raise AttributeError(f"Can't get attribute {name!r} on module {module!r}")
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
            raise UnsafeGolden(
                f"refused to load global {module}.{name}",
                detail=[decision.reason],
                fix=_FIX,
            )
        if (module, name) == _LOAD_FROM_BYTES:
            allowlist, map_location = self._allowlist, self._map_location

            def load_storage(data: Any) -> Any:
                return _load_storage(data, allowlist, map_location)

            return load_storage
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeGolden(
            f"refused persistent id {repr(pid)[:80]}: pickle.dump never writes one",
            fix=_FIX,
        )


def _load_storage(data: Any, allowlist: Allowlist, map_location: Any) -> Any:
    """Safe stand-in for ``torch.storage._load_from_bytes``."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafeGolden(
            f"torch.storage._load_from_bytes called on a {type(data).__name__}, not bytes",
            fix=_FIX,
        )
    buf = io.BytesIO(data)
    # Scan the nested stream against our allowlist too: torch's weights_only unpickler has its
    # own (different) list, and the golden's top-level scan may have been skipped by a caller.
    refused = []
    error = None
    try:
        for ref in _iter_payload_globals(buf, "nested storage"):
            if ref.problem is not None:
                refused.append(f"{ref.name}: {ref.problem}")
                continue
            decision = allowlist.check(ref.module, ref.qualname)
            if not decision.allowed:
                refused.append(f"{ref.name}: {decision.reason}")
    except ScanError as exc:
        error = str(exc)
    # Refused globals win over a scan error: a bare payload is both, and unsafe is the news.
    if refused:
        raise UnsafeGolden("refused to load a nested torch storage", detail=refused, fix=_FIX)
    if error is not None:
        raise CorruptGolden(
            f"a nested torch storage cannot be scanned: {error}",
            fix="restore the file from version control, or regenerate it with "
            "pytest --modelpack-regen",
        )
    buf.seek(0)
    import torch

    with warnings.catch_warnings():
        # torch rebuilds legacy typed storages and warns about it; the user cannot act on that.
        warnings.filterwarnings(
            "ignore", message="TypedStorage is deprecated", category=UserWarning
        )
        return torch.load(buf, weights_only=True, map_location=map_location)
