"""Code drift: fingerprint the project code a golden depends on, and show what changed.

Loading a pickle runs today's code for the classes it references. At regen we record, for every
project class and function the pickle references, and transitively the project code they depend
on, a fingerprint of the normalised source with its text, file and line; the gate recomputes the
fingerprints from today's code and reports every unit that changed, with a unified diff.

Units (the keys of the manifest's ``code`` section): ``module.Class`` (kind ``class``: the class
statement without its methods and nested classes); ``module.Class.method`` (``method``: one per
``def`` in the body, decorators included; a property's setter is ``module.Class.name.setter``);
``module.function`` (``function``); ``module.NAME`` (``global``: the module-level assignments
binding a global the code reads that is not a class or function: a table, a partial, a lambda).

Dependencies followed: MRO bases and a project metaclass; names read in the class body and in
decorators; every function stored on the class (methods, static/class methods, property accessors,
``functools.wraps`` chains, closures, defaults) and the module globals their bytecode loads, nested
code objects included, through ``module.attr`` chains and function-local ``from project import
name``. "Project code" is a module whose file lies under the project root (pytest's rootdir),
outside virtualenvs and site-packages. Nothing outside the project is ever imported here.

Normalisation is AST-based: comments, docstrings, layout, quotes and parentheses do not count.
:func:`canonical` serialises the AST rather than ``ast.dump`` so that a fingerprint does not depend
on how a Python version prints ASTs (3.13 omits empty fields, 3.12 added ``type_params``); and a
unit whose recorded source text is byte-identical to today's never counts as changed.

Third-party code (torch, sentencepiece, numpy, Python) is tracked by version instead: ENV DRIFT.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib
import importlib.util
import inspect
import linecache
import os
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..project import Project
from ..walk import attempt
from .source import (
    DEFS,
    MEMBER_DEFS,
    Source,
    binds,
    block_statements,
    code_objects,
    end,
    find_def,
    fingerprint_nodes,
    name_chains,
    start,
)

_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTRS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_MISSING = object()
_WRAPS_FUNC = (functools.partial, functools.partialmethod, functools.cached_property)


def is_project_file(path: str | os.PathLike[str] | None, root: Path | str) -> bool:
    """Is ``path`` a file of the project under ``root``? (see :mod:`pytest_modelpack.project`)"""
    return Project(root).contains_file(path)


class _Fingerprinter:
    """Walks from root globals through the project code they depend on, building units."""

    def __init__(self, root: Path) -> None:
        self._project = Project(root)
        self.root = self._project.root or Path(root)
        self.units: dict[str, dict[str, Any]] = {}
        self._modules: dict[str, types.ModuleType | None] = {}
        self._sources: dict[str, Source | None] = {}
        self._seen: set[int] = set()
        self._alive: list[Any] = []  # keeps visited objects alive, so their ids stay unique
        self._pending: list[Any] = []

    # -- modules ---------------------------------------------------------------------------

    def module(self, name: Any) -> types.ModuleType | None:
        """The already-imported project module ``name``, or None (never imports)."""
        if not isinstance(name, str):
            return None
        if name not in self._modules:
            module = sys.modules.get(name)
            in_project = self._project.contains_file(getattr(module, "__file__", None))
            self._modules[name] = module if in_project else None
        return self._modules[name]

    def import_project_module(self, name: str) -> types.ModuleType | None:
        """``name`` imported when it is project code (located first, executing nothing)."""
        if name in sys.modules or not self._project.is_project_module(name):
            return self.module(name)
        try:
            importlib.import_module(name)
        except Exception:  # a broken or vanished module: the loader reports it (LOAD ERROR)
            return None
        self._modules.pop(name, None)
        return self.module(name)

    def source(self, module: types.ModuleType) -> Source | None:
        name = module.__name__
        if name not in self._sources:
            self._sources[name] = self._read(module)
        return self._sources[name]

    def _read(self, module: types.ModuleType) -> Source | None:
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            return None
        # linecache is what inspect and tracebacks use; checkcache drops a copy edited on disk.
        linecache.checkcache(file)
        lines = linecache.getlines(file, module.__dict__)
        if not lines:
            return None
        try:
            tree = ast.parse("".join(lines), filename=file)
        except (SyntaxError, ValueError):
            return None
        rel = os.path.relpath(os.path.realpath(file), self.root).replace(os.sep, "/")
        return Source(rel=rel, lines=lines, tree=tree)

    # -- walking ---------------------------------------------------------------------------

    def add_root(self, module_name: str, qualname: str) -> bool:
        """Start from ``module_name.qualname``; False unless it resolves to project code."""
        module = self.import_project_module(module_name)
        target = _MISSING if module is None else self.resolve(module, qualname)
        if target is _MISSING:
            return False
        self.visit(target)
        return True

    def run(self) -> dict[str, dict[str, Any]]:
        while self._pending:
            obj = self._pending.pop()
            if isinstance(obj, type):
                self._class(obj)
            elif isinstance(obj, types.FunctionType):
                self._function(obj)
        return dict(sorted(self.units.items()))

    def visit(self, value: Any) -> None:
        """Follow ``value`` if it is, wraps or instantiates project code."""
        if value is None or isinstance(value, (int, float, complex, str, bytes, types.ModuleType)):
            return
        if isinstance(value, (type, types.FunctionType)):
            if id(value) not in self._seen:
                self._seen.add(id(value))
                self._alive.append(value)
                self._pending.append(value)
            return
        if isinstance(value, (staticmethod, classmethod, types.MethodType)):
            self.visit(value.__func__)
            return
        if isinstance(value, property):
            for accessor in (value.fget, value.fset, value.fdel):
                self.visit(accessor)
            return
        if isinstance(value, _WRAPS_FUNC):
            self.visit(value.func)
            return
        # static lookup: a project __getattr__/property must not run here
        wrapped = attempt(inspect.getattr_static, value, "__wrapped__", None)
        if wrapped is not None and not isinstance(wrapped, (property, types.MemberDescriptorType)):
            self.visit(wrapped)
        cls = type(value)
        if self.module(getattr(cls, "__module__", None)) is not None:
            self.visit(cls)

    def resolve(self, module: types.ModuleType, qualname: str) -> Any:
        """``module.<qualname>`` by attribute lookup, or ``_MISSING``."""
        target: Any = module
        for part in qualname.split("."):
            target = attempt(getattr, target, part, default=_MISSING)
            if target is _MISSING:
                break
        return target

    def visit_chain(self, module: types.ModuleType, chain: Sequence[str]) -> None:
        """Follow a global read ``name.attr...`` in ``module``'s namespace."""
        namespace = module.__dict__
        value = namespace.get(chain[0], _MISSING)
        if value is _MISSING:
            return  # a builtin, or a name that no longer exists (the unit that named it changed)
        owner, name = module, chain[0]
        for attr in chain[1:]:
            if not isinstance(value, types.ModuleType) or self.module(value.__name__) is not value:
                break
            owner, name = value, attr
            value = value.__dict__.get(attr, _MISSING)
            if value is _MISSING:
                return
        if isinstance(value, types.ModuleType):
            return
        self.visit(value)
        if not isinstance(value, (type, types.FunctionType)):
            self._global(owner, name)

    # -- units -----------------------------------------------------------------------------

    def _unit(
        self,
        kind: str,
        module: types.ModuleType,
        qualname: str,
        src: Source,
        nodes: Sequence[Any],
        text: str | None = None,
    ) -> None:
        if text is None:
            text = "".join(line for n in nodes for line in src.lines[start(n) - 1 : end(n)])
        self.units[f"{module.__name__}.{qualname}"] = {
            "kind": kind,
            "module": module.__name__,
            "qualname": qualname,
            "sha256": fingerprint_nodes(nodes, members=kind != "class"),
            "file": src.rel,
            "line": start(nodes[0]),
            "source": text,
        }

    def _home(self, obj: type | types.FunctionType) -> types.ModuleType | None:
        """The project module that defines ``obj`` (None: not project code, or a local class or
        function: that is part of the function that defines it, which is followed instead)."""
        module = self.module(obj.__module__)
        if module is not None and "<locals>" in obj.__qualname__.split("."):
            outer = self.resolve(module, obj.__qualname__.split(".<locals>", 1)[0])
            if outer is not _MISSING:
                self.visit(outer)
            return None
        return module

    def _class(self, cls: type) -> None:
        module = self._home(cls)
        if module is None:
            return
        qualname = cls.__qualname__
        for value in (*cls.__mro__[1:], type(cls), *vars(cls).values()):
            self.visit(value)
        src = self.source(module)
        firstlineno = getattr(cls, "__firstlineno__", None)
        node = None if src is None else find_def(src.tree, qualname, firstlineno)
        if src is None or not isinstance(node, ast.ClassDef):
            return  # defined without source (type(), exec): nothing to fingerprint
        self._unit("class", module, qualname, src, [node], self._header_text(src, node))
        names: dict[str, int] = {}
        references: list[ast.AST] = [*node.decorator_list, *node.bases, *node.keywords]
        for stmt in node.body:
            if isinstance(stmt, ast.ClassDef):
                references.extend(stmt.decorator_list)
                self.visit(vars(cls).get(stmt.name))
                continue
            if not isinstance(stmt, DEFS):
                references.append(stmt)
                continue
            references.extend(stmt.decorator_list)
            member = f"{qualname}.{self._member_name(stmt, names)}"
            self._unit("method", module, member, src, [stmt])
        for chain in name_chains(references):
            self.visit_chain(module, chain)

    @staticmethod
    def _member_name(stmt: ast.FunctionDef | ast.AsyncFunctionDef, seen: dict[str, int]) -> str:
        """``name``; a redefinition is ``name.setter``/``name.deleter`` or ``name[2]``."""
        count = seen.get(stmt.name, 0)
        seen[stmt.name] = count + 1
        if not count:
            return stmt.name
        for decorator in stmt.decorator_list:
            if (
                isinstance(decorator, ast.Attribute)
                and isinstance(decorator.value, ast.Name)
                and decorator.value.id == stmt.name
            ):
                return f"{stmt.name}.{decorator.attr}"
        return f"{stmt.name}[{count + 1}]"

    @staticmethod
    def _header_text(src: Source, node: ast.ClassDef) -> str:
        """The class's source lines without its methods and nested classes."""
        cut = {
            number
            for stmt in node.body
            if isinstance(stmt, MEMBER_DEFS)
            for number in range(start(stmt), end(stmt) + 1)
        }
        kept: list[str] = []
        for number in range(start(node), end(node) + 1):
            line = src.lines[number - 1]
            if number in cut or (not line.strip() and (not kept or not kept[-1].strip())):
                continue
            kept.append(line)
        while kept and not kept[-1].strip():
            kept.pop()
        return "".join(kept)

    def _function(self, func: types.FunctionType) -> None:
        for cell in func.__closure__ or ():
            try:
                self.visit(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        for value in (*(func.__defaults__ or ()), *(func.__kwdefaults__ or {}).values()):
            self.visit(value)
        self.visit(func.__dict__.get("__wrapped__"))
        # The namespace the bytecode reads is __globals__, which may belong to another module than
        # __module__ says (functools.wraps copies __module__ from the wrapped function).
        home = self.module(func.__globals__.get("__name__"))
        if home is not None and home.__dict__ is func.__globals__:
            for code in code_objects(func.__code__):
                self._scan_bytecode(home, code)
        module = self._home(func)
        if module is None:
            return
        qualname = func.__qualname__
        parts = qualname.split(".")
        if len(parts) > 1:
            owner = self.resolve(module, ".".join(parts[:-1]))
            if isinstance(owner, type):
                self.visit(owner)  # a method: fingerprinted with its class
                return
        key = f"{module.__name__}.{qualname}"
        src = self.source(module)
        if key in self.units or src is None:
            return
        node = find_def(src.tree, qualname, func.__code__.co_firstlineno)
        if not isinstance(node, DEFS):
            return
        self._unit("function", module, qualname, src, [node])
        for chain in name_chains(node.decorator_list):
            self.visit_chain(module, chain)

    def _global(self, module: types.ModuleType, name: str) -> None:
        key = f"{module.__name__}.{name}"
        src = self.source(module)
        if key in self.units or src is None:
            return
        stmts: list[Any] = [s for s in block_statements(src.tree.body) if binds(s, name)]
        if not stmts:
            return  # bound by an import or a loop: nothing of ours to fingerprint
        self._unit("global", module, name, src, stmts)
        for chain in name_chains(stmts):
            if chain[0] != name:
                self.visit_chain(module, chain)

    def _scan_bytecode(self, module: types.ModuleType, code: types.CodeType) -> None:
        """Follow the globals (and ``module.attr`` chains) one code object loads."""
        chain: list[str] | None = None
        consts: list[Any] = []
        imported: types.ModuleType | None = None
        for ins in dis.get_instructions(code):
            op = ins.opname
            if op in _ATTRS and chain is not None:
                chain.append(ins.argval)
                continue
            if chain is not None:
                self.visit_chain(module, chain)
                chain = None
            if op in _LOADS:
                chain = [ins.argval]
            elif op == "LOAD_CONST":
                consts.append(ins.argval)
            elif op == "IMPORT_NAME":
                imported = self._imported(module, ins.argval, consts, code)
            elif op == "IMPORT_FROM" and imported is not None:
                value = imported.__dict__.get(ins.argval)
                if isinstance(value, types.ModuleType):
                    self._module_names(value, code)
                else:
                    self.visit_chain(imported, [ins.argval])
        if chain is not None:
            self.visit_chain(module, chain)

    def _imported(
        self, module: types.ModuleType, name: str, consts: list[Any], code: types.CodeType
    ) -> types.ModuleType | None:
        """A function-local ``import``/``from ... import`` of an already-imported project module."""
        level = consts[-2] if len(consts) >= 2 and isinstance(consts[-2], int) else 0
        fromlist = consts[-1] if consts else None
        if level:
            package = module.__dict__.get("__package__") or ""
            try:
                name = importlib.util.resolve_name("." * level + name, package)
            except (ImportError, ValueError):
                return None
        target = self.module(name)
        if target is not None and not fromlist:
            self._module_names(target, code)
        return target

    def _module_names(self, module: types.ModuleType, code: types.CodeType) -> None:
        """A project module bound to a local (``import pkg.helpers``, ``from . import helpers``):
        any class or function of it whose name the code loads is followed (over-approximates)."""
        if self.module(module.__name__) is not module:
            return
        for attr in code.co_names:
            value = module.__dict__.get(attr, _MISSING)
            if isinstance(value, (type, types.FunctionType)):
                self.visit(value)


def code_units(roots: Iterable[tuple[str, str]], project_root: Path) -> dict[str, dict[str, Any]]:
    """The units of the project code reachable from ``roots`` ((module, qualname) pairs; the
    others are skipped): the manifest's ``code`` section."""
    fingerprinter = _Fingerprinter(project_root)
    for module, qualname in roots:
        fingerprinter.add_root(module, qualname)
    return fingerprinter.run()
