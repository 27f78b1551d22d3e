"""Comparing recorded code fingerprints with today's, and wording the difference."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any

#: Environment keys whose change is reported as ENV DRIFT (platform/pytest-modelpack are noise).
ENV_KEYS = ("python", "torch", "sentencepiece", "numpy")
#: Diff lines shown per unit before the rest is elided (the manifest keeps the full source).
DIFF_LINE_LIMIT = 40
_KIND_NOUNS = {
    "class": ("class", "classes"),
    "method": ("method", "methods"),
    "function": ("function", "functions"),
    "global": ("module global", "module globals"),
}


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    # Identical source text is identical code, whatever normaliser wrote the old fingerprint.
    return old.get("sha256") != new.get("sha256") and old.get("source") != new.get("source")


def compare_code(
    old: dict[str, Any], new: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(changed, removed, added) unit names between two ``code`` sections; a unit only moved to
    another module (an alias keeps old pickles loading) is neither: the same code runs."""
    changed = [name for name in old if name in new and _differs(old[name], new[name])]
    pairs = moves(old, new)
    gone, came = {a for a, _ in pairs}, {b for _, b in pairs}
    removed = [name for name in old if name not in new and name not in gone]
    added = [name for name in new if name not in old and name not in came]
    return changed, removed, added


def moves(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(old name, new name) of each unit whose module changed and whose source did not."""
    candidates: dict[Any, list[str]] = {}
    for name in new:
        if name not in old:
            candidates.setdefault(new[name].get("qualname"), []).append(name)
    pairs: list[tuple[str, str]] = []
    taken: set[str] = set()
    for name in old:
        if name in new:
            continue
        for target in candidates.get(old[name].get("qualname"), []):
            if target not in taken and not _differs(old[name], new[target]):
                taken.add(target)
                pairs.append((name, target))
                break
    return pairs


def describe_code_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the units that changed, then ``name (removed)`` and ``name (added)``."""
    changed, removed, added = compare_code(old, new)
    return changed + [f"{n} (removed)" for n in removed] + [f"{n} (added)" for n in added]


def env_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``torch 2.1.0 -> 2.2.0`` for each tracked version that differs."""
    return [
        f"{key} {old.get(key)} -> {new.get(key)}"
        for key in ENV_KEYS
        if key in old and old.get(key) != new.get(key)
    ]


def _kind(name: str, unit: dict[str, Any], units: dict[str, Any]) -> str:
    kind = unit.get("kind")
    if kind in _KIND_NOUNS:
        return str(kind)
    parent = name.rpartition(".")[0]  # goldens written before units had a kind
    return "method" if parent in units else "function"


def _count(names: list[str], units: dict[str, Any]) -> str:
    counts = Counter(_kind(name, units[name], units) for name in names)
    parts = [
        f"{counts[kind]} {nouns[0 if counts[kind] == 1 else 1]}"
        for kind, nouns in _KIND_NOUNS.items()
        if counts[kind]
    ]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def drift_summary(
    old: dict[str, Any],
    new: dict[str, Any],
    changed: list[str],
    removed: list[str],
    added: list[str],
) -> str:
    """``1 method changed, 1 function removed`` — what the headline counts."""
    counted = ((changed, new, "changed"), (removed, old, "removed"), (added, new, "added"))
    return ", ".join(f"{_count(names, units)} {what}" for names, units, what in counted if names)


_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@$")


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """A unified diff (--- golden / +++ current) with hunk lines numbered as in the files."""
    lines = difflib.unified_diff(
        str(old.get("source") or "").splitlines(),
        str(new.get("source") or "").splitlines(),
        "golden",
        "current",
        lineterm="",
        n=1,
    )
    old_offset = int(old.get("line") or 1) - 1
    new_offset = int(new.get("line") or 1) - 1
    out = []
    for line in lines:
        hunk = _HUNK.match(line)
        if hunk:
            a, a_len, b, b_len = hunk.groups()
            line = f"@@ -{int(a) + old_offset}{a_len or ''} +{int(b) + new_offset}{b_len or ''} @@"
        out.append(line)
    return _elide(out)


def _elide(lines: list[str]) -> list[str]:
    if len(lines) <= DIFF_LINE_LIMIT:
        return lines
    more = len(lines) - DIFF_LINE_LIMIT
    return [*lines[:DIFF_LINE_LIMIT], f"... {more} more line(s): see the manifest's code section"]


def _where(unit: dict[str, Any]) -> str:
    return f"{unit.get('file')}:{unit.get('line')}"


def drift_detail(
    old: dict[str, Any],
    new: dict[str, Any],
    changed: list[str],
    removed: list[str],
    added: list[str],
) -> list[str]:
    """The changed names, each with its diff; then removed and added names with their source."""
    detail: list[str] = []
    for name in changed:
        what = " (class statement: decorators, bases, class attributes)"
        what = what if _kind(name, new[name], new) == "class" else ""
        detail.append(f"{name}  ({_where(new[name])}){what}")
        detail.extend(_diff(old[name], new[name]))
    for names, units, sign, said in (
        (removed, old, "-", "no longer exists (was {})"),
        (added, new, "+", "is new ({})"),
    ):
        for name in names:
            detail.append(f"{name}  {said.format(_where(units[name]))}")
            source = str(units[name].get("source") or "").splitlines()
            detail.extend(_elide([sign + line for line in source]))
    return detail
