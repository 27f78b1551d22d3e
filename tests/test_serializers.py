"""Serializers (issue 20): goldens written as ``torch.save`` writes them, judged by the same
interpreter; the choice is recorded and a golden of another serializer is a USAGE ERROR."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import QUIET

MODELS = """\
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.emb = torch.nn.Embedding(10, 4).half()
        self.register_buffer("steps", torch.arange(5))
        self.tied = self.lin.weight  # a second reference to one storage

    def forward(self, x):
        return self.lin(x) * 2 + self.steps.sum()
"""

TESTS = """\
import torch
from hypothesis import strategies as st
from models import Net

X = st.integers(0, 1000).map(
    lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
)


def test_net(modelpack):
    torch.manual_seed(0)
    modelpack.check(Net(), inputs=X{kwargs})
"""


def _project(pytester: pytest.Pytester, serializer: str = "torch", kwargs: str = "") -> Path:
    pytester.makepyfile(models=MODELS, test_models=TESTS.format(kwargs=kwargs))
    pytester.makeini(
        "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 4\n"
        f"modelpack_serializer = {serializer}\n"
    )
    return pytester.path / "goldens" / "test_net"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args)


def _rehash(folder: Path) -> None:
    """What an attacker does after editing the bundle: make the manifest match it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "bundle.pt").read_bytes()
    manifest["bundle"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest["bundle"].pop("storages", None)
    manifest["bundle"].pop("pickle_sha256", None)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_torch_golden_is_what_torch_save_writes(pytester: pytest.Pytester) -> None:
    golden = _project(pytester)
    assert _run(pytester).ret == 0
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_net*regen*created*"])
    assert sorted(p.name for p in golden.iterdir()) == [
        "bundle.pt",
        "examples.json",
        "manifest.json",
    ]
    manifest = json.loads((golden / "manifest.json").read_text())
    assert manifest["serializer"]["name"] == "torch"
    assert manifest["bundle"]["file"] == "bundle.pt"
    assert zipfile.is_zipfile(golden / "bundle.pt")
    # production loads it with torch.load, in a fresh process: the same model comes back
    check = (
        "import sys, torch; sys.path.insert(0, '.'); "
        "m = torch.load('goldens/test_net/bundle.pt', weights_only=False); "
        "print(type(m).__name__, m.lin.weight is m.tied)"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=pytester.path, capture_output=True, text=True
    )
    assert out.stdout.split() == ["Net", "True"], out.stderr
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_net*golden*passed*"])
    result = _run(pytester, "--modelpack-regen")
    result.stdout.fnmatch_lines(["*test_net*regen*unchanged*"])


def test_golden_of_another_serializer_is_a_usage_error(pytester: pytest.Pytester) -> None:
    golden = _project(pytester, "torch")
    assert _run(pytester, "--modelpack-regen").ret == 0
    pytester.makeini(
        "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 4\n"
    )
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*USAGE ERROR — the golden goldens/test_net was written with torch, this check asks "
            "for pickle*",
            "*fix: to switch to pickle, regenerate it: pytest --modelpack-regen*",
        ]
    )
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*changed*serializer torch -> pickle*"])
    assert sorted(p.name for p in golden.iterdir()) == [
        "bundle.pkl",
        "examples.json",
        "manifest.json",
    ]
    assert _run(pytester, "--modelpack-golden").ret == 0


def test_check_argument_overrides_the_ini(pytester: pytest.Pytester) -> None:
    golden = _project(pytester, "pickle", kwargs=', serializer="torch"')
    assert _run(pytester, "--modelpack-regen").ret == 0
    assert (golden / "bundle.pt").is_file() and not (golden / "bundle.pkl").exists()
    assert _run(pytester, "--modelpack-golden").ret == 0


@pytest.mark.parametrize(
    ("value", "headline"),
    [
        ("json", "*modelpack_serializer: expected one of pickle, torch, dill, cloudpickle*"),
    ],
)
def test_unknown_serializer_is_a_usage_error(
    pytester: pytest.Pytester, value: str, headline: str
) -> None:
    _project(pytester, value)
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([headline])


def test_code_drift_in_a_torch_golden(pytester: pytest.Pytester) -> None:
    _project(pytester)
    assert _run(pytester, "--modelpack-regen").ret == 0
    (pytester.path / "models.py").write_text(MODELS.replace("* 2", "* 3"))
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*CODE DRIFT*", "*-        return self.lin(x) * 2*"])


def test_unpicklable_under_torch_names_the_part(pytester: pytest.Pytester) -> None:
    _project(pytester)
    (pytester.path / "models.py").write_text(
        MODELS.replace("self.tied = ", "self.act = lambda t: t\n        self.tied = ")
    )
    result = _run(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*UNPICKLABLE — model.act cannot be pickled*", "*fix: define it at module level*"]
    )


def _planted(canary: Path) -> bytes:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {canary}",))

    buffer = io.BytesIO()
    pickle.Pickler(buffer, protocol=2).dump(Boom())
    return buffer.getvalue()


def test_planted_code_in_a_torch_golden_is_refused(pytester: pytest.Pytester) -> None:
    golden = _project(pytester)
    assert _run(pytester, "--modelpack-regen").ret == 0
    canary = pytester.path / "canary"
    bundle = golden / "bundle.pt"
    original = zipfile.ZipFile(bundle)
    tampered = io.BytesIO()
    with zipfile.ZipFile(tampered, "w", zipfile.ZIP_STORED) as out:
        for info in original.infolist():
            data = original.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = _planted(canary)
            out.writestr(info.filename, data)
    original.close()
    bundle.write_bytes(tampered.getvalue())
    _rehash(golden)
    # proven live: torch.load runs it
    live = pytester.path / "live"
    live.mkdir()
    copy = live / "bundle.pt"
    copy.write_bytes(bundle.read_bytes())
    probe = f"import torch; torch.load({str(copy)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", probe], cwd=pytester.path, capture_output=True)
    assert canary.exists(), "the payload must run under plain torch.load"
    canary.unlink()
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*UNSAFE GOLDEN*", "*posix.system*"])
    assert not canary.exists()
    scan = subprocess.run(
        [sys.executable, "-m", "pytest_modelpack.cli", "scan", str(golden)],
        capture_output=True,
        text=True,
    )
    assert scan.returncode == 1, scan.stdout + scan.stderr
    assert "UNSAFE" in scan.stdout and "posix.system" in scan.stdout
    assert not canary.exists()
