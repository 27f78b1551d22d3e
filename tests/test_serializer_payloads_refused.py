"""Every payload of tests/serializer_payloads.py (each proven live under its format's own loader
by tests/test_serializer_payloads_live.py) is refused by the scan and by the loader, with nothing
run — judged with the trust of everyday by-value models of the same serializer, which use the
same globals as the payloads (a lambda, a closure with defaults, a by-value class, a plain
model), and again with ``--modelpack-trust-golden-code``, which lets a golden build its own code
(never its own classes) but never run it while loading. The benign files pass the scan and load with their own live trust."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_modelpack.errors import ModelpackError
from pytest_modelpack.safety import Allowlist, scan_file
from pytest_modelpack.safety.load import load_bundle
from pytest_modelpack.safety.trust import scan_live, trust_from_refs

from .serializer_payloads import BENIGN, FORMAT, PAYLOADS, REQUIRES


def _installed(name: str) -> bool:
    for module in REQUIRES[name]:
        try:
            __import__(module)
        except ImportError:
            return False
    return True


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each benign file, and per format the live trust of all its benign models together."""
    root = tmp_path_factory.mktemp("benign")
    files, refs = {}, {"dill": [], "cloudpickle": [], "torch": []}  # type: ignore[var-annotated]
    for name, make in BENIGN.items():
        if not _installed(name):
            continue
        folder = root / name
        folder.mkdir()
        files[name] = path = make(folder)
        if FORMAT[name] != "torch":
            refs[FORMAT[name]].extend(scan_live(path.read_bytes()))
    return {"files": files, "refs": refs}


@pytest.mark.parametrize("golden_code", [False, True], ids=["default", "trust-golden-code"])
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_payload_is_refused_and_nothing_runs(
    name: str, golden_code: bool, benign: dict[str, Any], tmp_path: Path
) -> None:
    if not _installed(name):
        pytest.skip(f"needs {', '.join(REQUIRES[name])}")
    fmt = FORMAT[name]
    trust = trust_from_refs(benign["refs"].get(fmt, []))
    allowlist = Allowlist(None, trust=trust, trust_golden_code=golden_code)
    folder = tmp_path / "golden"
    folder.mkdir()
    canary = tmp_path / "canary"
    path = PAYLOADS[name](folder, canary)
    verdict = scan_file(path, allowlist)
    assert not verdict.safe, f"{name}: the scan accepted it"
    with pytest.raises(ModelpackError) as caught:
        load_bundle(path, allowlist)
    assert caught.value.kind in ("UNSAFE GOLDEN", "CORRUPT GOLDEN"), caught.value
    assert not canary.exists(), f"{name} ran while being judged or loaded"


@pytest.mark.parametrize("name", [n for n in BENIGN if FORMAT[n] != "torch"])
def test_benign_by_value_file_passes_with_its_own_trust(name: str, benign: dict[str, Any]) -> None:
    if name not in benign["files"]:
        pytest.skip(f"needs {', '.join(REQUIRES[name])}")
    path = benign["files"][name]
    allowlist = Allowlist(None, trust=trust_from_refs(scan_live(path.read_bytes())))
    verdict = scan_file(path, allowlist)
    assert verdict.safe, verdict.refused
    loaded = load_bundle(path, allowlist)
    assert loaded is not None
