"""Every payload of tests/serializer_payloads.py is live: loaded by its format's own loader
(``dill.load``, ``cloudpickle.load``, ``torch.load(path, weights_only=False)``) in a fresh,
isolated process of its own, it creates its canary. Building it runs nothing, and the file needs
nothing from this test suite. The benign files load cleanly the same way (all in one process:
they cannot disturb one another)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .serializer_payloads import (
    BENIGN,
    BUNDLE_NAME,
    FORMAT,
    LOAD_RAISES,
    LOADERS,
    PAYLOADS,
    REQUIRES,
)

BUILDER_MODULE = b"serializer_payloads"

BENIGN_LOADER = """\
import json, sys
results = {}
for name, fmt, path, loader in json.loads(sys.argv[1]):
    space = {"path": path}
    try:
        exec(loader, space)
    except BaseException as exc:
        results[name] = f"raised {exc!r}"
    else:
        results[name] = "loaded " + type(space["obj"]).__name__
print(json.dumps(results))
"""


def _missing(name: str) -> list[str]:
    """The modules ``name`` needs that are not installed."""
    missing = []
    for module in REQUIRES[name]:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def _require(name: str) -> None:
    for module in REQUIRES[name]:
        if module in ("dill", "cloudpickle"):
            pytest.importorskip(module)


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process, ``-I`` (no cwd, PYTHONPATH or user site on the path), run from an empty
    folder: the files it loads can rely on nothing but installed packages."""
    cwd.mkdir()
    return subprocess.run(
        [sys.executable, "-I", "-c", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _check_built(path: Path, folder: Path, fmt: str) -> None:
    assert path == folder / BUNDLE_NAME[fmt]
    assert sorted(folder.iterdir()) == [path]
    assert BUILDER_MODULE not in path.read_bytes(), "the file refers to the module that built it"


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_payload_is_live(name: str, tmp_path: Path) -> None:
    _require(name)
    fmt = FORMAT[name]
    folder = tmp_path / "golden"
    folder.mkdir()
    canary = tmp_path / "canary"
    path = PAYLOADS[name](folder, canary)
    _check_built(path, folder, fmt)
    assert not canary.exists(), "building the payload ran it"

    done = _python(["import sys\npath = sys.argv[1]\n" + LOADERS[fmt], str(path)], tmp_path / "cwd")
    output = f"rc={done.returncode}\n{done.stdout}\n{done.stderr}"
    assert canary.exists(), f"{name} did not run its code when loaded:\n{output}"
    if name in LOAD_RAISES:
        assert done.returncode != 0, output
    else:
        assert done.returncode == 0, output


@pytest.fixture(scope="module")
def benign_loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every benign file (whose modules are installed) built, then loaded in one process."""
    root = tmp_path_factory.mktemp("benign")
    cases = []
    built = {}
    for name, make in BENIGN.items():
        if _missing(name):
            continue
        folder = root / name
        folder.mkdir()
        path = make(folder)
        built[name] = (folder, path)
        cases.append([name, FORMAT[name], str(path), LOADERS[FORMAT[name]]])
    done = _python([BENIGN_LOADER, json.dumps(cases)], root / "cwd")
    assert done.returncode == 0, done.stderr
    return {"built": built, "results": json.loads(done.stdout), "cwd": root / "cwd"}


@pytest.mark.parametrize("name", list(BENIGN))
def test_benign_loads(name: str, benign_loaded: dict[str, Any]) -> None:
    _require(name)
    folder, path = benign_loaded["built"][name]
    _check_built(path, folder, FORMAT[name])
    assert benign_loaded["results"][name].startswith("loaded "), benign_loaded["results"][name]
    assert list(benign_loaded["cwd"].iterdir()) == []


def test_registries_agree() -> None:
    assert len(PAYLOADS) >= 14
    assert not set(PAYLOADS) & set(BENIGN)
    assert set(FORMAT) == set(PAYLOADS) | set(BENIGN) == set(REQUIRES)
    assert set(FORMAT.values()) == set(LOADERS) == set(BUNDLE_NAME)
    for fmt in LOADERS:
        assert sum(FORMAT[name] == fmt for name in BENIGN) >= 3
    assert LOAD_RAISES <= set(PAYLOADS)
