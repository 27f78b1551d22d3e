"""LOAD ERROR for renamed and moved code, and classes that pickle here but load nowhere else."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import errors, walk
from ..fixes import listed
from ..project import is_library_module
from ..safety.byvalue import GETATTR_FOUND
from ..safety.classes import BY_VALUE

if TYPE_CHECKING:
    from ..golden.manifest import Manifest


def _test_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf == "conftest" or leaf.startswith("test_") or leaf.endswith("_test")


def not_importable_reason(module: str, qualname: str) -> str | None:
    """Why a class/function referenced as ``module.qualname`` will not load in another process."""
    if module == "__main__":
        return (
            "it is defined in __main__: another process (the CI gate, production) has a different "
            "__main__, so loading fails with \"AttributeError: Can't get attribute "
            f"'{qualname}' on <module '__main__'>\""
        )
    if "<locals>" in qualname:
        return "it is defined inside a function: pickle cannot import it by name"
    if _test_module(module):
        return (
            f"it is defined in the test module {module!r}: test modules are importable only "
            "while pytest runs them (from the tests' folder, under the name pytest gave them), "
            "so production or any other process fails with ModuleNotFoundError"
        )
    target = sys.modules.get(module)  # qualname <module>: a module itself (cloudpickle's subimport)
    if target is not None and qualname != "<module>" and _lookup(target, qualname) is None:
        return (
            f"{module}.{qualname} cannot be found by that name: it was renamed, deleted or "
            "created dynamically"
        )
    return None


def _lookup(target: Any, qualname: str) -> Any:
    """``target.<qualname>`` by attribute lookup, or None."""
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def locate_globals(
    obj: Any, names: Iterable[str], root: str = "model", limit: int = 3
) -> dict[str, list[str]]:
    """Where in ``obj`` each ``module.qualname`` in ``names`` is used: an instance of such a
    class, or a function or class stored as a value, by its path (at most ``limit`` per name)."""
    wanted = set(names)
    found: dict[str, list[str]] = {}
    for path, value, _depth in walk.pickled_nodes(obj, root):
        named = value if isinstance(value, (type, types.FunctionType)) else type(value)
        key = f"{named.__module__}.{named.__qualname__}"
        if key in wanted and len(found.setdefault(key, [])) < limit:
            found[key].append(path)
    return found


# -- renamed and moved classes -----------------------------------------------------------------


def _normalised(source: str, name: str) -> str:
    """Source without indentation, blank lines and the unit's own name: equal for a pure rename."""
    lines = (line.strip() for line in source.splitlines())
    return re.sub(rf"\b{re.escape(name)}\b", "_", "\n".join(line for line in lines if line))


def recorded_source(code: dict[str, Any], name: str) -> str | None:
    """The source of ``name`` in a manifest's ``code`` section, with its methods' source added
    where they are recorded as units of their own."""
    unit = code.get(name)
    if not isinstance(unit, dict) or not isinstance(unit.get("source"), str):
        return None
    parts = [unit]
    if not re.search(r"^\s+def ", unit["source"], re.MULTILINE):
        parts += sorted(
            (u for key, u in code.items() if key.startswith(name + ".") and isinstance(u, dict)),
            key=lambda u: u.get("line") or 0,
        )
    return "\n".join(str(u.get("source", "")) for u in parts)


def rename_hints(
    module: str,
    qualname: str,
    recorded_source: str | None,
    project_root: Any = None,
) -> list[str]:
    """Where the missing ``module.qualname`` may have gone: same name in another project module
    (moved/renamed module), or a class of similar source in the same module (renamed class)."""
    hints: list[str] = []
    root = os.path.realpath(project_root) + os.sep if project_root is not None else None
    leaf = qualname.rsplit(".", 1)[-1]
    current_exists = not _module_gone(module)
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if name == module or not file or (root and not os.path.realpath(file).startswith(root)):
            continue
        if is_library_module(name) or _test_module(name):
            continue
        target = _lookup(mod, qualname)
        if target is not None and getattr(target, "__module__", None) == name:
            how = "class moved?" if current_exists else "module renamed or moved?"
            hints.append(f"{module}.{qualname} -> {name}.{qualname} ({how})")
    current = sys.modules.get(module)
    if current is not None and recorded_source:
        old = _normalised(recorded_source, leaf)
        best: tuple[float, str] | None = None
        for attr, value in vars(current).items():
            if not isinstance(value, (type, types.FunctionType)) or attr == leaf:
                continue
            if getattr(value, "__module__", None) != module:
                continue
            try:
                source = inspect.getsource(value)
            except (OSError, TypeError):
                continue
            ratio = difflib.SequenceMatcher(None, old, _normalised(source, attr)).ratio()
            if ratio >= 0.6 and (best is None or ratio > best[0]):
                best = (ratio, attr)
        if best is not None:
            how = "same code" if best[0] >= 0.999 else f"{best[0]:.0%} similar code"
            hints.append(f"{module}.{qualname} -> {module}.{best[1]} ({how}: class renamed?)")
    return hints


def _module_gone(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def explain_missing(
    missing: list[tuple[str, str]],
    manifest: Manifest | None,
    project_root: Any,
    regen: str,
    scanned: bool = False,
) -> tuple[str, list[str], str]:
    """(summary, detail, fix) for ``(module, qualname)`` globals that no longer resolve (qualname
    ``"*"``: the module is gone); the manifest's globals and source find where they went."""
    code = manifest.code if manifest is not None else {}
    recorded = [(g.module, g.qualname) for g in manifest.globals] if manifest is not None else []
    gone = sorted({m for m, q in missing if q == "*" or _module_gone(m)})
    pairs = [(m, q) for m, q in missing if q != "*"]
    pairs += [(m, q) for m, q in recorded if m in gone and (m, q) not in pairs]
    names = [f"{m}.{q}" for m, q in pairs] or [f"{m} (module)" for m in gone]
    moved: dict[str, str] = {}
    renamed: dict[tuple[str, str], str] = {}
    hints: list[str] = []
    for module, qualname in pairs:
        source = recorded_source(code, f"{module}.{qualname}")
        for hint in rename_hints(module, qualname, source, project_root):
            hints.append(hint)
            target = hint.split(" -> ", 1)[1].split(" ", 1)[0]
            if "module renamed" in hint:
                moved.setdefault(module, target[: -len(qualname) - 1])
            else:
                renamed.setdefault((module, qualname), target)
    detail = [f"module {m!r} no longer exists" for m in gone]
    detail.append(
        f"the golden references {len(names)} name{'s' if len(names) != 1 else ''} that "
        f"no longer resolve{'s' if len(names) == 1 else ''}: {', '.join(names)}"
    )
    for module, new in moved.items():  # a whole module moved: one line, not one per name
        inside = [q for m, q in pairs if m == module]
        found = [h for h in hints if h.startswith(f"{module}.") and f" -> {new}." in h]
        if len(inside) > 1 and len(found) == len(inside):
            hints = [h for h in hints if h not in found]
            hints.append(
                f"{module} -> {new}: all {len(inside)} names are defined there (module renamed "
                "or moved?)"
            )
    if hints:
        detail.append("where they may have gone:")
        detail.extend(f"  {h}" for h in dict.fromkeys(hints))
    if scanned:
        detail.append("nothing was unpickled: the safety scan found these names first")
    restore: list[str] = []
    alias: list[str] = []
    for module in gone:
        old_file = module.replace(".", "/") + ".py"
        moved_to = moved.get(module)
        if moved_to:
            restore.append(f"rename {moved_to.replace('.', '/')}.py back to {old_file}")
            alias.append(f'a {old_file} containing "from {moved_to} import *"')
        else:
            restore.append(f"restore {old_file}")
            alias.append(f"a module {module} that re-exports the names from their new home")
    for (module, qualname), target in renamed.items():
        new_module, _, new = target.rpartition(".")
        file = module.replace(".", "/") + ".py"
        if new_module == module:
            restore.append(f"rename {target} back to {qualname}")
            alias.append(f'"{qualname} = {new}" in {file}')
        else:
            restore.append(f"move {target} back to {file}")
            alias.append(f'"from {new_module} import {new}" in {file}')
    for module, qualname in pairs:
        if module not in gone and (module, qualname) not in renamed:
            restore.append(f"restore {module}.{qualname}")
            alias.append(f"{qualname} = <its new name> in {module.replace('.', '/')}.py")
    few = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    fix = (
        f"restore the old name: {'; '.join(dict.fromkeys(restore))}\n"
        f"or keep an alias: {'; '.join(dict.fromkeys(alias))}, and list {few} in "
        "modelpack_safe_globals (an alias is not defined under the old name)\n"
        f"or accept the change and regenerate the golden: {regen}"
    )
    serializer = manifest.serializer_name if manifest is not None else "pickle"
    fix += f"\n({serializer} stores classes and functions by reference, under their names; " + (
        "cloudpickle pins by value the functions of the modules in modelpack_by_value, "
        "which then survive a rename; classes stay by reference)"
        if serializer != "dill"
        else "dill pins by value only lambdas and local functions; classes stay by reference)"
    )
    if len(gone) == 1 and all(m == gone[0] for m, _ in pairs):
        who = f"the module {gone[0]!r}, which no longer exists"
    else:
        who = f"{listed(names, 3)}, which no longer {'exists' if len(names) == 1 else 'exist'}"
    return f"the golden references {who} (renamed or moved?)", detail, fix


def refuse_unimportable(model: Any, refs: Iterable[Any]) -> None:
    """UNPICKLABLE when the global uses ``refs`` of ``model``'s pickle reference classes or
    functions another process could not import (defined in __main__, a test module or
    conftest.py)."""
    reasons: dict[str, str] = {}
    for ref in refs:
        if ref.shape == GETATTR_FOUND or ref.module == BY_VALUE:
            continue  # getattr's default stands in where the name does not exist; a class
            # built by value is named by no module
        name = f"{ref.module}.{ref.qualname}"
        if name not in reasons:
            reason = not_importable_reason(ref.module, ref.qualname)
            if reason:
                reasons[name] = reason
    if not reasons:
        return
    used_at = locate_globals(model, reasons)
    detail: list[str] = []
    for name, reason in reasons.items():
        paths = used_at.get(name)
        detail.append(f"{name}: used at {', '.join(paths)}" if paths else name)
        detail.append(f"  why: {reason}")
    one = len(reasons) == 1
    raise errors.Unpicklable(
        f"{', '.join(reasons)} pickle{'s' if one else ''} here but will not load in another "
        "process",
        detail=detail,
        fix=f"define {'it' if one else 'them'} at module level in a module of your project that "
        "production imports too (like package.py), not in __main__, a test module or conftest.py",
    )
