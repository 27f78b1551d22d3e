"""Device handling that can be proven on a CPU-only machine (issue 6).

A real GPU run of the CUDA paths is in tests/test_cuda.py (marked ``cuda``, run by
scripts/gpu-check); everything here runs everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pytest_modelpack.engine.gate import recorded_tolerance as _recorded_tolerance
from pytest_modelpack.options import DEFAULT_DEVICE_ATOL, DEFAULT_DEVICE_RTOL, Settings

from .conftest import SeedProject

CUDA = torch.cuda.is_available()


@contextlib.contextmanager
def storages_tagged_cuda() -> Iterator[None]:
    """Make torch tag every storage it pickles as living on ``cuda:0``.

    This is exactly what pickling a model whose tensors are on a GPU writes into the nested
    ``torch.storage._load_from_bytes`` streams, without needing a GPU.
    """
    import torch.serialization as serialization

    def tagger(storage):  # noqa: ANN001, ANN202 - torch's callback signature
        return "cuda:0"

    def deserializer(storage, location):  # noqa: ANN001, ANN202
        return None

    serialization.register_package(-1000, tagger, deserializer)
    try:
        yield
    finally:
        serialization._package_registry[:] = [
            entry for entry in serialization._package_registry if entry[1] is not tagger
        ]


def make_golden_cuda_made(project: SeedProject, name: str = "sentiment") -> bytes:
    """Rewrite a golden's bundle as if it had been pickled from a GPU; update its manifest."""
    folder = project.golden(name)
    sys.path.insert(0, str(project.path))
    try:
        with open(folder / "bundle.pkl", "rb") as f:
            model = pickle.load(f)  # our own freshly written golden: trusted here
        with storages_tagged_cuda():
            data = pickle.dumps(model, protocol=4)
    finally:
        sys.path.remove(str(project.path))
        for module in ("package", "strategies"):
            sys.modules.pop(module, None)
    (folder / "bundle.pkl").write_bytes(data)
    manifest = project.manifest(name)
    manifest["bundle"]["size"] = len(data)
    manifest["bundle"]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["created_by"]["device"] = "cuda"
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return data


@pytest.mark.skipif(CUDA, reason="proves the CPU-only behaviour of a CUDA-made golden")
def test_cuda_made_golden_passes_the_gate_on_cpu(regenerated: SeedProject) -> None:
    data = make_golden_cuda_made(regenerated)
    assert b"cuda:0" in data
    # The file really is CUDA-made: a plain pickle.load on this machine cannot load it.
    sys.path.insert(0, str(regenerated.path))
    try:
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(data)
    finally:
        sys.path.remove(str(regenerated.path))
        sys.modules.pop("package", None)
    result = regenerated.run("--modelpack-golden", "-rs")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "sentiment*cpu*golden*passed*",
            "skipped: 1 check(s) — cuda: torch.cuda.is_available() is False",
        ]
    )


def test_device_flag_selects_devices(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-device", "cpu", "-v")
    assert result.ret == 0
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_sentiment?cpu? PASSED*"])
    assert "[cuda]" not in result.stdout.str()


@pytest.mark.skipif(CUDA, reason="checks the skip on a machine without CUDA")
def test_device_flag_cuda_only_skips_visibly_without_a_gpu(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-device", "cuda", "-rs")
    assert result.ret == 0
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*test_models.py*cuda: torch.cuda.is_available() is False"])


def test_device_flag_rejects_unknown_devices(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-device", "cpu,gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--modelpack-device: unknown device(s) gpu; accepted: cpu, cuda, cuda:N, mps*"]
    )


def test_the_first_device_writes_the_golden(seed_project: SeedProject) -> None:
    """With devices "cpu cuda", only the [cpu] run writes; the golden records its device."""
    result = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu,cuda")
    assert result.ret == 0
    assert seed_project.manifest()["created_by"]["device"] == "cpu"


class _Request:
    def __init__(self, device: str, **kw: float | None) -> None:
        self.device = device
        self.settings = Settings(rtol=kw.get("ini_rtol"), atol=kw.get("ini_atol"))
        self.rtol = kw.get("rtol")
        self.atol = kw.get("atol")


@pytest.mark.parametrize(
    ("device", "recorded", "kw", "expected"),
    [
        ("cpu", "cpu", {}, (None, None)),  # same device: torch.testing defaults per dtype
        ("cuda", "cpu", {}, (DEFAULT_DEVICE_RTOL, DEFAULT_DEVICE_ATOL)),  # across devices
        ("cpu", "cuda", {}, (DEFAULT_DEVICE_RTOL, DEFAULT_DEVICE_ATOL)),  # CUDA-made golden
        ("cpu", "cpu", {"ini_rtol": 1e-3, "ini_atol": 1e-4}, (1e-3, 1e-4)),  # ini option
        ("cuda", "cpu", {"rtol": 0.5, "atol": 0.0}, (0.5, 0.0)),  # check(rtol=, atol=) wins
    ],
)
def test_tolerance_choice(device: str, recorded: str, kw: dict, expected: tuple) -> None:
    assert _recorded_tolerance(_Request(device, **kw), recorded) == expected


def test_device_tolerance_ini_options(seed_project: SeedProject, tmp_path: Path) -> None:
    seed_project.ini(extra='modelpack_device_rtol = "abc"')
    result = seed_project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*modelpack_device_rtol: expected a number >= 0*"])
