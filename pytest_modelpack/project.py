"""Project code: the one definition of which files, modules and classes are the user's own.

A file is project code when it lies under the project root (symlinks resolved), not inside a
folder that holds installed or generated code (a virtualenv, site-packages, ``.eggs``, ``build``
...), and not in the interpreter's own library folders (a project root of ``~`` holding a pyenv,
say). Modules are located without importing or executing anything: every dotted level must itself
be project code before its ``__path__`` is searched, so a lookup never wanders into (or imports)
another distribution.

Everything that asks "is this the user's code?" — the safety policy, code-drift fingerprints, the
diagnoses, the CLI — calls this module.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import sys
from enum import Enum
from pathlib import Path

from .states import Word

#: Folders whose files are never project code, wherever they sit under the project root.
NOT_PROJECT_DIRS = frozenset(
    {"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "build", ".eggs"}
    | {"__pypackages__", "node_modules", ".git"}
)


class Location(Enum):
    """Where a module was found (without importing it)."""

    PROJECT = "project"
    OUTSIDE = "outside"
    MISSING = "missing"


class ModuleKind(Word):
    """What a module is to the user: their code, the standard library, or an installed package."""

    BUILTIN = "builtin"
    PROJECT = "project"
    THIRD_PARTY = "third-party"


@functools.lru_cache(maxsize=1)
def installed_dirs() -> tuple[Path, ...]:
    """Where the interpreter keeps the stdlib and installed packages: never project code."""
    import sysconfig

    paths = sysconfig.get_paths()
    found = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(Path(os.path.realpath(p)) for p in found if p)


def is_stdlib_module(module: str) -> bool:
    top = module.partition(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def _installed(real: Path) -> bool:
    return any(real.is_relative_to(installed) for installed in installed_dirs())


def is_library_module(module: str) -> bool:
    """Is ``module`` standard library or installed code (not anybody's project)? Imports nothing:
    a module not imported yet counts as library code only when found in a library folder."""
    if is_stdlib_module(module):
        return True
    loaded = sys.modules.get(module)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
    else:
        try:
            spec = importlib.machinery.PathFinder.find_spec(module.partition(".")[0])
        except (ImportError, ValueError, OSError):
            spec = None
        file = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
    if not isinstance(file, str):
        return False
    real = Path(os.path.realpath(file))
    return any(part in NOT_PROJECT_DIRS for part in real.parts) or _installed(real)


def _valid_dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


class Project:
    """The user's project under ``root`` (None: no project, nothing is project code)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(os.path.realpath(root)) if root is not None else None

    def contains_file(self, path: str | os.PathLike[str] | None) -> bool:
        """Is ``path`` a file of the project (not in a virtualenv, site-packages, ...)?"""
        if not path or self.root is None:
            return False
        real = Path(os.path.realpath(path))
        try:
            rel = real.relative_to(self.root)
        except (ValueError, OSError):
            return False
        return not any(part in NOT_PROJECT_DIRS for part in rel.parts) and not _installed(real)

    def locate_module(self, module: str) -> tuple[Location, str]:
        """Where ``module`` is, and why (for messages), executing no module code."""
        if self.root is None or not _valid_dotted(module):
            return Location.OUTSIDE, "no project root"
        parts = module.split(".")
        search: list[str] | None = None  # None: sys.path
        for i in range(len(parts)):
            name = ".".join(parts[: i + 1])
            loaded = sys.modules.get(name)
            if loaded is not None:
                origin = getattr(loaded, "__file__", None)
                locations = getattr(loaded, "__path__", None)
            else:
                try:
                    spec = importlib.machinery.PathFinder.find_spec(name, search)
                except (ImportError, ValueError, OSError):
                    spec = None
                if spec is None:
                    return Location.MISSING, f"module {name} not found in the project"
                origin = spec.origin if spec.has_location else None
                locations = spec.submodule_search_locations
            if origin is not None:
                if not self.contains_file(origin):
                    return Location.OUTSIDE, f"module file outside the project: {origin}"
            elif not locations or not all(self.contains_file(p) for p in locations):
                return Location.OUTSIDE, f"module {name} is not in the project"
            if i < len(parts) - 1:
                if locations is None:
                    return Location.MISSING, f"module {name} is not a package"
                search = list(locations)
        return Location.PROJECT, ""

    def module_kind(self, module: str) -> ModuleKind:
        """Standard library, project, or third-party; imports nothing."""
        if is_stdlib_module(module):
            return ModuleKind.BUILTIN
        if self.locate_module(module)[0] is Location.PROJECT:
            return ModuleKind.PROJECT
        return ModuleKind.THIRD_PARTY

    def is_project_module(self, module: str) -> bool:
        return self.module_kind(module) is ModuleKind.PROJECT
