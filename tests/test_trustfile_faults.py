"""Issue 22: a broken ``goldens.trust`` never hangs or crashes the scan or regen.

The trust file is read by ``modelpack scan`` (the pre-commit hook) and rewritten by regen. In
its place: a FIFO (a read would block forever), bytes that are not UTF-8, a file too large to be
one regen wrote, a hand-edited line. Each is a one-paragraph error naming the file and the
remedy, exit 2 for the scan, and regen tells how to get out (it never asks to run itself).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_trustfile import project, scan  # noqa: F401  (the regenerated project fixture)


def _regen(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-regen", timeout=120)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_in_place_of_the_trust_file_is_refused_not_waited_on(
    project: Path,  # noqa: F811
    pytester: pytest.Pytester,
) -> None:
    path = project / "goldens.trust"
    _fifo(path)
    done = scan(project, "--root", ".", "goldens/")  # 120 s timeout: a hang fails the test
    assert done.returncode == 2, done.stdout + done.stderr
    assert "goldens.trust" in done.stderr and "not a regular file" in done.stderr
    result = _regen(pytester)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*goldens.trust*not a regular file*",
            "*fix: regenerate it: remove*goldens.trust*--modelpack-regen*",
        ]
    )
    assert path.is_fifo()  # nothing written through it


def test_a_trust_file_that_is_not_utf8_is_named_with_its_remedy(
    project: Path,  # noqa: F811
    pytester: pytest.Pytester,
) -> None:
    path = project / "goldens.trust"
    path.write_bytes(b"\xff\xfe not text\n")
    done = scan(project, "--root", ".", "goldens/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "goldens.trust" in done.stderr and "not UTF-8 text" in done.stderr
    result = _regen(pytester)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*goldens.trust*not UTF-8 text*",
            "*fix: regenerate it: remove*goldens.trust*--modelpack-regen*",
        ]
    )
    assert path.read_bytes() == b"\xff\xfe not text\n"  # left for the user to look at


def test_a_trust_file_too_large_to_be_one_regen_wrote_is_not_read(
    project: Path,  # noqa: F811
) -> None:
    path = project / "goldens.trust"
    with open(path, "r+b") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    done = scan(project, "--root", ".", "goldens/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "goldens.trust" in done.stderr and "too large" in done.stderr


def test_regen_over_a_hand_edited_trust_file_says_how_to_get_out(
    project: Path,  # noqa: F811
    pytester: pytest.Pytester,
) -> None:
    """The scan's fix says "regenerate"; regen itself must not say "run regen" again: it says to
    remove the file, which regen then writes anew (each golden's section, from its live model)."""
    path = project / "goldens.trust"
    path.write_text(path.read_text() + "os.system\n")
    result = _regen(pytester)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*goldens.trust:*not a trust line: 'os.system'*",
            "*fix: regenerate it: remove*goldens.trust*--modelpack-regen*",
        ]
    )
    path.unlink()
    again = _regen(pytester)
    assert again.ret == 0, again.stdout.str()
    assert scan(project, "--root", ".", "goldens/").returncode == 0
