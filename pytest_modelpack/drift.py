"""Code drift: fingerprint the project code a golden depends on, and show what changed.

A pickle stores data and *references* to classes: loading an old pickle runs today's code. At regen
we record, for every project-code class and function the pickle references — and transitively the
project code they depend on (base classes, and functions/classes reached through module globals
named in their bytecode) — a fingerprint of the normalised source (AST-based: comments, docstrings,
blank lines and formatting do not count), the source text, file and line. The gate recomputes the
fingerprints from today's code and reports every unit that changed, with a unified diff.

Third-party code (torch, sentencepiece, numpy, Python) is tracked by version instead: ENV DRIFT.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import inspect
import os
import sys
import textwrap
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import errors
from .warnings import CodeDriftWarning, EnvDriftWarning

__all__ = [
    "fingerprint_model",
    "code_units",
    "describe_code_change",
    "check_drift",
    "normalized_source",
]

_EXCLUDED_DIRS = {"site-packages", "dist-packages", ".venv", "venv", ".tox", "build", ".eggs"}
#: Environment keys whose change is reported as ENV DRIFT (platform/pytest-modelpack are noise).
ENV_KEYS = ("python", "torch", "sentencepiece", "numpy")


def is_project_file(path: str | None, root: Path) -> bool:
    if not path:
        return False
    try:
        resolved = Path(path).resolve()
        rel = resolved.relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return not any(part in _EXCLUDED_DIRS for part in rel.parts)


def _project_module(name: str, root: Path) -> types.ModuleType | None:
    module = sys.modules.get(name)
    if module is None or not is_project_file(getattr(module, "__file__", None), root):
        return None
    return module


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalized_source(source: str) -> str:
    """The AST dump of ``source`` without docstrings: equal for cosmetic-only edits."""
    tree = _strip_docstrings(ast.parse(textwrap.dedent(source)))
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _class_header(source: str) -> str:
    """A class's source with its methods' bodies removed: bases, decorators, class attributes."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            node.body = [
                stmt
                for stmt in node.body
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            ] or [ast.Pass()]
            break
    return ast.unparse(_strip_docstrings(tree))


def _unit(
    obj: Any, module: str, qualname: str, root: Path, header: bool = False
) -> dict[str, Any] | None:
    try:
        source = inspect.getsource(obj)
        file = inspect.getsourcefile(obj) or ""
        _, line = inspect.getsourcelines(obj)
    except (OSError, TypeError):
        return None
    text = textwrap.dedent(source)
    normal = normalized_source(_class_header(text) if header else text)
    try:
        rel = os.path.relpath(file, root)
    except ValueError:
        rel = file
    return {
        "module": module,
        "qualname": qualname,
        "sha256": hashlib.sha256(normal.encode()).hexdigest(),
        "file": rel.replace(os.sep, "/"),
        "line": line,
        "source": text,
    }


def _function_of(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member


def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _referenced(func: Any, root: Path) -> Iterable[Any]:
    """Project classes/functions a function reaches through names in its (nested) bytecode."""
    code = getattr(func, "__code__", None)
    namespace = getattr(func, "__globals__", None)
    if code is None or namespace is None:
        return
    names: set[str] = set()
    for co in _code_objects(code):
        names.update(co.co_names)
    for name in sorted(names):
        value = namespace.get(name)
        if value is None:
            continue
        if isinstance(value, types.ModuleType):
            if is_project_file(getattr(value, "__file__", None), root):
                for attr in sorted(names):
                    target = getattr(value, attr, None)
                    if isinstance(target, (type, types.FunctionType)):
                        yield target
            continue
        if isinstance(value, (type, types.FunctionType)):
            yield value


def code_units(roots: Iterable[tuple[str, str]], project_root: Path) -> dict[str, dict[str, Any]]:
    """Fingerprint units for the project code reachable from ``roots`` ((module, qualname) pairs)."""
    units: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    pending: list[Any] = []
    for module_name, qualname in roots:
        module = _project_module(module_name, project_root)
        if module is None:
            continue
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is not None:
            pending.append(target)

    while pending:
        obj = pending.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        module_name = getattr(obj, "__module__", None)
        if not module_name or _project_module(module_name, project_root) is None:
            continue
        qualname = obj.__qualname__
        if isinstance(obj, type):
            unit = _unit(obj, module_name, qualname, project_root, header=True)
            if unit:
                units[f"{module_name}.{qualname}"] = unit
            pending.extend(base for base in obj.__mro__[1:] if base is not object)
            for attr, member in vars(obj).items():
                func = _function_of(member)
                if isinstance(func, types.FunctionType) and func.__qualname__.startswith(
                    qualname + "."
                ):
                    sub = _unit(func, module_name, f"{qualname}.{attr}", project_root)
                    if sub:
                        units[f"{module_name}.{qualname}.{attr}"] = sub
                    pending.extend(_referenced(func, project_root))
        elif isinstance(obj, types.FunctionType):
            unit = _unit(obj, module_name, qualname, project_root)
            if unit:
                units[f"{module_name}.{qualname}"] = unit
            pending.extend(_referenced(obj, project_root))
    return dict(sorted(units.items()))


def fingerprint_model(globals_: Iterable[tuple[str, str]], project_root: Path) -> dict[str, Any]:
    """The manifest's ``code`` section for a pickle referencing ``globals_``."""
    return code_units(globals_, project_root)


def _diff(old: str, new: str) -> list[str]:
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), "golden", "current", lineterm="", n=1
    )
    return list(lines)


def compare_code(
    old: dict[str, Any], new: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(changed, removed, added) unit names between two ``code`` sections."""
    changed = [
        name for name in old if name in new and old[name].get("sha256") != new[name]["sha256"]
    ]
    removed = [name for name in old if name not in new]
    added = [name for name in new if name not in old]
    return changed, removed, added


def describe_code_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changed, removed, added = compare_code(old, new)
    return changed + [f"{n} (removed)" for n in removed] + [f"{n} (added)" for n in added]


def env_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{key} {old.get(key)} -> {new.get(key)}"
        for key in ENV_KEYS
        if key in old and old.get(key) != new.get(key)
    ]


def check_drift(request: Any, manifest: dict[str, Any]) -> list[str]:
    """Compare the golden's recorded code and environment with today's.

    Raises :class:`~pytest_modelpack.errors.CodeDrift` (or warns, with ``modelpack_drift = warn``);
    returns warning lines for the summary (environment drift, tolerated code drift).
    """
    from .golden import environment
    from .lifecycle import regen_command

    notes: list[str] = []
    env = env_changes(manifest.get("environment") or {}, environment())
    if env:
        note = "environment changed since the golden was made: " + ", ".join(env)
        notes.append(note)
        warnings.warn(EnvDriftWarning(f"{request.name}: {note}"), stacklevel=2)

    recorded = manifest.get("code") or {}
    if not recorded:
        return notes
    current = code_units(_root_pairs(manifest), request.project_root)
    changed, removed, added = compare_code(recorded, current)
    if not (changed or removed or added):
        return notes
    total = len(changed) + len(removed) + len(added)
    detail: list[str] = []
    for name in changed:
        unit, now = recorded[name], current[name]
        detail.append(f"{name}  ({now['file']}:{now['line']})")
        detail.extend("  " + line for line in _diff(unit.get("source", ""), now["source"]))
    for name in removed:
        unit = recorded[name]
        detail.append(f"{name}  (no longer exists; was {unit.get('file')}:{unit.get('line')})")
    for name in added:
        detail.append(f"{name}  (new: {current[name]['file']}:{current[name]['line']})")
    if env:
        detail.append("also: environment changed: " + ", ".join(env))
    error = errors.CodeDrift(
        f"{total} unit{'s' if total != 1 else ''} of project code changed since the golden was made",
        name=request.name,
        detail=detail,
        fix=f"revert the change, or accept it with: {regen_command(request.nodeid)}",
    )
    if request.settings.drift == "warn":
        warnings.warn(CodeDriftWarning(error.headline), stacklevel=2)
        notes.append(
            "code drift tolerated (modelpack_drift = warn): " + ", ".join(changed + removed + added)
        )
        return notes
    raise error


def _root_pairs(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(module, qualname) of the project globals the bundle references, as recorded at regen."""
    pairs = []
    for entry in manifest.get("globals") or []:
        if entry.get("kind") != "project":
            continue
        module, qualname = entry.get("module"), entry.get("qualname")
        if isinstance(module, str) and isinstance(qualname, str):
            pairs.append((module, qualname))
    return pairs
