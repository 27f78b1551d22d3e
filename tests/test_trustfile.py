"""Issue 22 §4: ``modelpack scan --root`` (the pre-commit hook) trusts what the gate trusts.

The gate trusts, per golden, the global uses its live model's own pickle makes. The scan has no
live model: regen writes those uses to ``goldens.trust`` beside ``goldens/`` (reviewable text,
outside the goldens, so a change to the goldens alone never widens it). Before, the scan refused
goldens the gate accepts: a spectral_norm Linear, a project Enum with standard-library values,
``str.lower`` / ``operator.itemgetter`` / ``functools.partial`` / bound-method attributes, a
``uuid.UUID`` and ``array.array`` config.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MODELS = textwrap.dedent(
    """
    import array, collections, datetime, decimal, enum, fractions, functools, operator
    import pathlib, uuid
    import torch
    from torch import nn

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.utils.spectral_norm(nn.Linear(3, 1))
            self.color = Color.RED
            self.lower = str.lower
            self.first = operator.itemgetter(0)
            self.clip = functools.partial(max, 0)
            self.shout = "abc".upper
            self.config = {
                "id": uuid.UUID(int=12345),
                "weights": array.array("f", [1.0, 2.0]),
                "when": datetime.date(2020, 1, 1),
                "scale": decimal.Decimal("1.5"),
                "ratio": fractions.Fraction(1, 3),
                "path": pathlib.PurePosixPath("/data/x"),
                "counts": collections.Counter("aab"),
                "queue": collections.deque([1, 2], maxlen=5),
            }
            self.eval()

        def forward(self, x):
            return self.lin(torch.full((3,), float(x)))
    """
)

TEST = textwrap.dedent(
    """
    from hypothesis import strategies as st
    import models

    def test_mixed(modelpack):
        modelpack.check(models.Mixed(), name="mixed", inputs=st.floats(-2, 2), examples=4)
    """
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    pytester.makepyprojecttoml(
        '[tool.pytest.ini_options]\nmodelpack_recorded = 3\nmodelpack_devices = "cpu"\n'
    )
    pytester.makepyfile(models=MODELS, test_models=TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    return pytester.path


def scan(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelpack", "scan", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_scan_accepts_what_the_gate_accepts_with_no_line_by_hand(
    project: Path, pytester: pytest.Pytester
) -> None:
    gate = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-golden")
    assert gate.ret == 0, gate.stdout.str()
    trust = (project / "goldens.trust").read_text()
    assert "[mixed]" in trust
    for line in ("reference uuid:UUID", "called operator:itemgetter (int)", "built functools:"):
        assert line in trust, trust
    done = scan(project, "--root", ".", "goldens/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "goldens/mixed/bundle.pkl: safe" in done.stdout
    # Without the file (the scan as it was): the same golden is refused.
    (project / "goldens.trust").rename(project / "elsewhere.txt")
    before = scan(project, "--root", ".", "goldens/")
    assert before.returncode == 1, before.stdout
    assert "uuid.UUID" in before.stdout


def _plant(folder: Path, data: bytes) -> None:
    (folder / "bundle.pkl").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["size"] = len(data)
    manifest["bundle"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_one_unseen_global_in_an_edited_golden_is_still_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The golden re-pickled with one more attribute of a kind its live model never holds: the
    scan (and the gate) refuse it; editing the manifest's globals list changes nothing."""
    script = textwrap.dedent(
        """
        import ipaddress, pickle, sys
        import models
        m = models.Mixed()
        m.extra = ipaddress.IPv4Address("10.0.0.1")
        sys.stdout.buffer.write(pickle.dumps(m))
        """
    )
    data = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, check=True
    ).stdout
    monkeypatch.syspath_prepend(str(project))
    try:
        assert pickle.loads(data).extra.packed == b"\n\x00\x00\x01"  # a real, loadable pickle
    finally:
        sys.modules.pop("models", None)
    folder = project / "goldens" / "mixed"
    _plant(folder, data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["globals"].append(
        {"module": "ipaddress", "qualname": "IPv4Address", "kind": "builtin"}
    )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    done = scan(project, "--root", ".", "goldens/")
    assert done.returncode == 1, done.stdout
    assert "ipaddress.IPv4Address" in done.stdout
    assert "uuid.UUID" not in done.stdout  # what the live model uses stays trusted


def test_a_hand_edited_trust_file_is_a_usage_error_naming_the_line(project: Path) -> None:
    path = project / "goldens.trust"
    path.write_text(path.read_text() + "os.system\n")
    done = scan(project, "--root", ".", "goldens/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "goldens.trust" in done.stderr and "not a trust line: 'os.system'" in done.stderr
    assert "regenerate" in done.stderr


def test_regen_keeps_the_file_in_step_and_unchanged_when_nothing_changed(
    project: Path, pytester: pytest.Pytester
) -> None:
    path = project / "goldens.trust"
    before = path.read_bytes()
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-regen")
    assert again.ret == 0
    assert path.read_bytes() == before
    # The model stops using uuid: its lines go at the next regen.
    models = project / "models.py"
    models.write_text(models.read_text().replace('"id": uuid.UUID(int=12345),', ""))
    changed = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--modelpack-regen")
    assert changed.ret == 0, changed.stdout.str()
    assert "uuid" not in path.read_text()
    assert "array:array" in path.read_text()
