"""Fix texts: the one place that words the remedies a failure ends with (and short lists in them).

Every ``fix:`` line that tells a user to regenerate, restore or trust something is built here, so
the commands they are told to type are the same everywhere (and name the exact test when one is
known: a node id, since ``-k test_x`` also matches ``test_x_more``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from .options import FLAG_REGEN, INI_SAFE_GLOBALS

#: The bare regenerate command, when no test is known (the CLI, a store read outside a test).
REGEN = f"pytest {FLAG_REGEN}"


def listed(items: Iterable[str], limit: int) -> str:
    """``a, b, c ...``: the first ``limit`` items, `` ...`` when there are more."""
    items = list(items)
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def test_of(nodeid: str) -> str:
    """The test a node id names, without its parameters (``[cpu]``, ``[m1-cuda]``): only a
    ``[...]`` that ends the last ``::`` part, never a bracket in a folder's name."""
    head, sep, last = nodeid.rpartition("::")
    if last.endswith("]") and "[" in last:
        last = last[: last.index("[")]
    return f"{head}{sep}{last}"


def regen_command(nodeid: str | None = None) -> str:
    """The command that regenerates the golden of ``nodeid`` (all goldens when None)."""
    return f"{REGEN} {shlex.quote(nodeid)}" if nodeid else REGEN


def accept(nodeid: str | None = None) -> str:
    """An intended change: regenerate the golden."""
    return f"if the change is intended, accept it with: {regen_command(nodeid)}"


def revert_or_accept(nodeid: str | None = None) -> str:
    return f"revert the change, or accept it with: {regen_command(nodeid)}"


def restore_or_regen(nodeid: str | None = None, shown: str | None = None) -> str:
    """A damaged golden file: take it back from version control, or write it anew."""
    where = f" (git checkout -- {shown})" if shown else ""
    return (
        f"restore the golden from version control{where}, or regenerate it with "
        f"{regen_command(nodeid)}"
    )


def trust_line(names: list[str]) -> str:
    """How to trust globals for goldens checked without a live model (the CLI, the ini)."""
    listed = "\n".join(f"    {n}" for n in names)
    return (
        f"if you trust {'it' if len(names) == 1 else 'them'}, add to [tool.pytest.ini_options]:\n"
        f"{INI_SAFE_GLOBALS} =\n{listed}"
    )


def remove_or_claim(shown: str, name: str, renamed: list[tuple[str, str]]) -> str:
    """Delete an unused golden folder, or move it to ``renamed``: ``(nodeid, folder)`` of checks
    whose golden is missing beside it (a renamed test's likely new name)."""
    lines = [f"delete it: git rm -r {shlex.quote(shown)}"]
    for nodeid, folder in renamed[:3]:
        lines.append(
            f"or, if {nodeid} is the renamed test that should claim it: "
            f"git mv {shlex.quote(shown)} {shlex.quote(folder)}"
        )
    if not renamed:
        lines.append(
            f'or claim it: modelpack.check(..., name="{name}") in the test that should check it'
        )
    return "\n".join(lines)


def rebuild_reproducibly(nodeid: str | None = None) -> str:
    """The model the fixture builds differs from the golden's while code and environment do not:
    make the build reproducible first, since a regenerated golden would fail the next run again."""
    return (
        "make the fixture build the same model in every process: seed it (torch.manual_seed(0) "
        "before building; random.seed / numpy.random.seed if used), build the tokenizer from a "
        "committed file (Tokenizer.from_file, SentencePieceProcessor(model_file=...)) instead of "
        "training it in the fixture, and pin the data it reads (a committed file, sorted)\n"
        f"then, or if the fixture was meant to build a new model: {regen_command(nodeid)}"
    )
