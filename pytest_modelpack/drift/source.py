"""Reading project source for fingerprints: normalised (AST) source, definitions, names read.

Why :func:`canonical` rather than ``ast.dump``: see :mod:`.fingerprint`.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
MEMBER_DEFS = (*DEFS, ast.ClassDef)
DOC_OWNERS = (ast.Module, *MEMBER_DEFS)
_BLOCK_NAMES = ("If", "Try", "TryStar", "With", "AsyncWith", "For", "AsyncFor", "While")
BLOCKS = tuple(getattr(ast, name) for name in _BLOCK_NAMES if hasattr(ast, name))  # TryStar: 3.11

# -- normalised source -------------------------------------------------------------------------


def canonical(node: Any, out: list[str], members: bool = True) -> None:
    """Serialise an AST deterministically, leaving out what is cosmetic.

    Positions, docstrings, ``type_comment``, the ``u`` prefix of strings and empty/None fields are
    dropped; with ``members=False`` the top node's body also loses its ``def``/``class`` members.
    """
    if isinstance(node, ast.AST):
        out += [type(node).__name__, "("]
        for name in node._fields:
            if name == "type_comment" or (name == "kind" and isinstance(node, ast.Constant)):
                continue
            value = getattr(node, name, None)
            if name == "body" and isinstance(node, DOC_OWNERS):
                value = list(value or [])
                value = value[1:] if ast.get_docstring(node, clean=False) is not None else value
                if not members:
                    value = [stmt for stmt in value if not isinstance(stmt, MEMBER_DEFS)]
            if value is None or (isinstance(value, list) and not value):
                continue
            out += [name, "="]
            canonical(value, out)
            out.append(",")
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            canonical(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(repr(node))


def fingerprint_nodes(nodes: Sequence[ast.AST], members: bool = True) -> str:
    out: list[str] = []
    for node in nodes:
        canonical(node, out, members)
    return hashlib.sha256("".join(out).encode()).hexdigest()


def normalized_source(source: str) -> str:
    """The canonical form of ``source``: equal for edits to comments, docstrings and layout."""
    out: list[str] = []
    canonical(ast.parse(textwrap.dedent(source)), out)
    return "".join(out)


# -- reading a module's source -----------------------------------------------------------------


@dataclass
class Source:
    rel: str
    lines: list[str]
    tree: ast.Module


def end(node: ast.AST) -> int:
    return node.end_lineno or node.lineno  # type: ignore[attr-defined]


def start(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([d.lineno for d in decorators] + [node.lineno])  # type: ignore[attr-defined]


def block_statements(body: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Statements of ``body``, descending into if/try/with/for/while blocks but not into defs."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, BLOCKS):
            for field in ("body", "orelse", "finalbody"):
                yield from block_statements(getattr(stmt, field, None) or [])
            for handler in getattr(stmt, "handlers", None) or []:
                yield from block_statements(handler.body)


def find_def(tree: ast.Module, qualname: str, firstlineno: int | None) -> ast.AST | None:
    """The ``def``/``class`` statement for ``qualname`` (no ``<locals>``) in ``tree``."""
    nodes: list[Any] = [tree]
    for part in qualname.split("."):
        nodes = [
            stmt
            for node in nodes
            for stmt in block_statements(node.body)
            if isinstance(stmt, MEMBER_DEFS) and stmt.name == part
        ]
        if not nodes:
            return None
    if firstlineno is not None:
        for node in nodes:
            if firstlineno in (node.lineno, start(node)):
                return node
    return nodes[-1]  # redefinitions: the last one is what a module import leaves bound


def binds(stmt: ast.AST, name: str) -> bool:
    if isinstance(stmt, ast.Assign):
        targets: list[ast.AST] = list(stmt.targets)
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    else:
        return False
    return any(
        isinstance(node, ast.Name) and node.id == name
        for target in targets
        for node in ast.walk(target)
    )


def name_chains(nodes: Iterable[ast.AST]) -> list[list[str]]:
    """``name`` and ``name.attr.attr`` chains loaded in ``nodes`` (maximal chains only)."""
    chains: list[list[str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Attribute):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name):
                chains.append([node.id, *reversed(parts)])
            else:
                visit(node)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            chains.append([node.id])
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)

    for node in nodes:
        visit(node)
    return chains


def code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)
