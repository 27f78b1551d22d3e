"""Where an error came from: the user's own frame, and where an object was defined."""

from __future__ import annotations

import dataclasses
import inspect
import linecache
import os
import sys
from typing import Any


def relative(file: str, relative_to: str | os.PathLike[str] | None) -> str:
    base = os.fspath(relative_to) if relative_to is not None else os.getcwd()
    try:
        rel = os.path.relpath(file, base)
    except ValueError:  # another drive (Windows)
        return file
    return file if rel.startswith(".." + os.sep + "..") else rel.replace(os.sep, "/")


def where(obj: Any, relative_to: Any = None) -> str:
    try:
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)
        _, line = inspect.getsourcelines(obj)
    except (TypeError, OSError, ValueError):
        code = getattr(obj, "__code__", None)
        if code is not None:
            return f"{relative(code.co_filename, relative_to)}:{code.co_firstlineno}"
        return "an unknown location"
    return f"{relative(file, relative_to)}:{line}"


def source_line(obj: Any) -> str | None:
    try:
        lines, _ = inspect.getsourcelines(obj)
    except (TypeError, OSError, ValueError):
        return None
    return lines[0].strip() if lines else None


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame of the user's code: where an error came from."""

    file: str
    line: int
    function: str
    text: str
    #: The class of ``self`` in that frame, as ``module.qualname`` (None: not a method).
    owner: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line} in {self.function}"
        return f"{where}: {self.text}" if self.text else where


def _library_dirs() -> list[str]:
    names = ("torch", "hypothesis", "_pytest", "pluggy")
    files = [__file__, *(getattr(sys.modules.get(name), "__file__", None) for name in names)]
    return [os.path.dirname(os.path.abspath(file)) + os.sep for file in files if file]


_LIBRARY_FILES = ("pickle.py", "copyreg.py", "_compat_pickle.py")


def user_frame(exc: BaseException, relative_to: Any = None) -> Frame | None:
    """The last traceback frame of ``exc`` outside pytest-modelpack, torch, pickle and hypothesis:
    the user's code the error came from, even when torch raised it (``Module.__setattr__``)."""
    libraries = _library_dirs()
    stdlib = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
    chosen: Any = None
    tb = exc.__traceback__
    while tb is not None:
        file = os.path.abspath(tb.tb_frame.f_code.co_filename)
        library = any(file.startswith(d) for d in libraries) or (
            file.startswith(stdlib) and os.path.basename(file) in _LIBRARY_FILES
        )
        if not library and not file.startswith("<"):
            chosen = tb
        tb = tb.tb_next
    if chosen is None:
        return None
    code = chosen.tb_frame.f_code
    this = chosen.tb_frame.f_locals.get("self")
    return Frame(
        file=relative(code.co_filename, relative_to),
        line=chosen.tb_lineno,
        function=getattr(code, "co_qualname", code.co_name),  # co_qualname: Python 3.11
        text=linecache.getline(code.co_filename, chosen.tb_lineno).strip(),
        owner=None if this is None else f"{type(this).__module__}.{type(this).__qualname__}",
    )
