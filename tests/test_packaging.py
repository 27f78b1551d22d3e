"""The package as users install it: the wheel holds every module, the sdist builds the same wheel,
and the plugin follows pytest's conventions for plugins (markers, -p, autoload off).

The fresh-venv checks (the wheel alone in a new venv, outside the source tree, on two Pythons,
goldens across Pythons) run in CI: ``scripts/check_installed.py``, called by ``.ci/run``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pytest_modelpack

from .conftest import QUIET

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "pytest_modelpack"


def _build(out: Path, *args: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "-o", str(out), *args, str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel built straight from the tree, the wheel built from the sdist)."""
    pytest.importorskip("build")
    direct = _build(tmp_path_factory.mktemp("direct"), "--wheel")
    from_sdist = _build(tmp_path_factory.mktemp("sdist"))  # sdist first, then its wheel
    return direct, from_sdist


def _contents(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as z:
        return {
            name: hashlib.sha256(z.read(name)).hexdigest()
            for name in z.namelist()
            if not name.endswith("/RECORD")
        }


def test_the_wheel_holds_every_module_of_the_source_tree(wheels: tuple[Path, Path]) -> None:
    names = set(_contents(wheels[0]))
    shipped = [p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")]
    shipped.append("pytest_modelpack/py.typed")
    missing = sorted(set(shipped) - names)
    assert not missing, f"the wheel lacks {missing}"
    assert len(shipped) > 40  # the sub-packages are there: engine/, safety/, golden/ ...


def test_the_sdist_builds_the_same_wheel(wheels: tuple[Path, Path]) -> None:
    direct, from_sdist = (_contents(w) for w in wheels)
    assert direct == from_sdist


def test_the_wheel_declares_the_plugin_and_the_command(wheels: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(wheels[0]) as z:
        (entry,) = [n for n in z.namelist() if n.endswith("entry_points.txt")]
        text = z.read(entry).decode()
        (meta,) = [n for n in z.namelist() if n.endswith("METADATA")]
        metadata = z.read(meta).decode()
    assert "[pytest11]\nmodelpack = pytest_modelpack.plugin" in text
    assert "modelpack = pytest_modelpack.cli:main" in text
    assert "Provides-Extra: dill" in metadata and "Provides-Extra: cloudpickle" in metadata


PROJECT_TEST = """\
import pytest
from hypothesis import strategies as st


@pytest.mark.modelpack(examples=3, recorded=2)
def test_model(modelpack):
    modelpack.check(abs, name="absolute", inputs=st.integers(-3, 3))


def test_plain():
    pass
"""


@pytest.fixture
def marked_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_project=PROJECT_TEST)
    pytester.makeini("[pytest]\nmodelpack_devices = cpu\n")
    return pytester


def test_strict_markers_accept_the_modelpack_marker(marked_project: pytest.Pytester) -> None:
    result = marked_project.runpytest_subprocess(*QUIET, "--strict-markers", "--strict-config")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*2 passed*"])


def test_plugin_off_leaves_the_project_collectable(marked_project: pytest.Pytester) -> None:
    result = marked_project.runpytest_subprocess(*QUIET, "-p", "no:modelpack", "--collect-only")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_model*", "*test_plain*"])
    assert "[cpu]" not in result.stdout.str()  # not parametrized: the plugin is off


def test_autoload_off_then_p_modelpack_turns_it_on(
    marked_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    off = marked_project.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only")
    assert off.ret == 0, off.stdout.str()
    assert "[cpu]" not in off.stdout.str()
    on = marked_project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "modelpack")
    assert on.ret == 0, on.stdout.str()
    on.stdout.fnmatch_lines(["absolute *cpu*roundtrip*passed*", "*2 passed*"])


def _package_files() -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in Path(pytest_modelpack.__file__).parent.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_plugin_writes_nothing_under_its_own_package(marked_project: pytest.Pytester) -> None:
    before = _package_files()
    for mode in ((), ("--modelpack-regen",), ("--modelpack-golden",)):
        result = marked_project.runpytest_subprocess(*QUIET, *mode)
        assert result.ret == 0, result.stdout.str()
    assert _package_files() == before
    assert (marked_project.path / "goldens" / "absolute" / "bundle.pkl").is_file()
