"""Issue 22: a broken ``goldens.trust`` never hangs or crashes the scan or regen.

The trust file is read by ``modelpack scan`` (the pre-commit hook) and rewritten by regen. In
its place: a FIFO (a read would block forever), bytes that are not UTF-8, a file too large to be
one regen wrote, a hand-edited line. Each is a one-paragraph error naming the file and the
remedy, exit 2 for the scan, and regen tells how to get out (it never asks to run itself).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .test_trustfile import project, scan  # noqa: F401  (the regenerated project fixture)


def _regen(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-regen", timeout=120)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe not text\n")


@pytest.mark.parametrize(
    ("put", "why"),
    [
        pytest.param(
            _fifo,
            "not a regular file",
            id="fifo",  # a read would block for good
            marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo"),
        ),
        pytest.param(_not_utf8, "not UTF-8 text", id="not-utf8"),
    ],
)
def test_what_stands_in_place_of_the_trust_file_is_named_with_its_remedy(
    project: Path,  # noqa: F811
    pytester: pytest.Pytester,
    put: Any,
    why: str,
) -> None:
    path = project / "goldens.trust"
    put(path)
    before = path.stat()
    done = scan(project, "--root", ".", "goldens/")  # 120 s timeout: a hang fails the test
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "goldens.trust" in done.stderr and why in done.stderr
    result = _regen(pytester)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [f"*goldens.trust*{why}*", "*fix: regenerate it: remove*goldens.trust*--modelpack-regen*"]
    )
    after = path.stat()  # left as it was, for the user to look at: nothing written through it
    assert (after.st_ino, after.st_mode, after.st_size) == (
        before.st_ino,
        before.st_mode,
        before.st_size,
    )


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


# ------------------------------------------------ issue 22 round 3: unit-level, no regen


def _trust_dir(tmp_path: Path) -> Path:
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    return goldens


def test_a_trust_file_that_is_a_symlink_to_nothing_is_not_no_trust_file(tmp_path: Path) -> None:
    """Before: read as "there is no trust file" (FileNotFoundError), so the scan refused the
    golden's own trusted uses: UNSAFE, exit 1, with no word of the broken link."""
    from pytest_modelpack.errors import UsageError
    from pytest_modelpack.golden import trustfile

    goldens = _trust_dir(tmp_path)
    (tmp_path / "goldens.trust").symlink_to("elsewhere.trust")
    with pytest.raises(UsageError) as info:
        trustfile.read(goldens)
    text = info.value.render()
    assert "goldens.trust: a symlink to nothing (elsewhere.trust)" in text
    assert "fix: regenerate it: remove " in text


def test_a_trust_section_given_twice_is_refused(tmp_path: Path) -> None:
    """Two [name] sections were merged: a second section at the end of a long file widened
    the trust of the first without showing next to it."""
    from pytest_modelpack.errors import UsageError
    from pytest_modelpack.golden import trustfile

    goldens = _trust_dir(tmp_path)
    (tmp_path / "goldens.trust").write_text(
        "[g]\nreference uuid:UUID\n\n[h]\nreference uuid:UUID\n\n[g]\ncalled os:system ()\n"
    )
    with pytest.raises(UsageError) as info:
        trustfile.read(goldens)
    assert "goldens.trust:7: section [g] appears twice" in info.value.render()


@pytest.mark.parametrize("code", ["EACCES", "ELOOP", "EIO"])
def test_a_trust_file_the_os_refuses_is_an_io_error_with_errno_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """Before: an OSError escaped to the CLI's last resort: no errno, "check that it exists"."""
    import errno

    from pytest_modelpack.errors import GoldenIOError
    from pytest_modelpack.golden import trustfile

    goldens = _trust_dir(tmp_path)
    path = tmp_path / "goldens.trust"
    path.write_text("[g]\nreference uuid:UUID\n")
    number = getattr(errno, code)
    real = os.open

    def refusing(name: Any, *args: Any, **kwargs: Any) -> int:
        if str(name) == str(path):
            raise OSError(number, os.strerror(number), str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(GoldenIOError) as info:
        trustfile.read(goldens)
    text = info.value.render()
    assert f"GOLDEN I/O ERROR — cannot read {path}: " in text
    assert f"{code}: " in text and "fix: " in text
