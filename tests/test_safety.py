"""Golden safety end to end (issue 5): ``pytest --modelpack-golden`` on a tampered golden.

Each malicious bundle is planted in a real golden of the seed project with its manifest's sha256
and size updated, so the static scan is the only thing in the way. Every payload would create a
canary file if unpickled (tests/test_scan.py proves the payloads are live), so "no canary" means
the gate refused it before loading. The gate must also never write: every test compares the
project's files before and after.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import SeedProject
from .test_scan import CORPUS

# A representative slice of the unit-level corpus in tests/test_scan.py (all of it runs there,
# and through `modelpack scan` in tests/test_cli.py), with where the scanner reports the global.
NESTED = "referenced in nested storage (torch.storage._load_from_bytes) at byte *"
GATE_CORPUS = {
    "os.system GLOBAL p0": "referenced",
    "os.system STACK_GLOBAL p4": "referenced",
    "__builtin__.eval p2 (mapped to builtins.eval)": "referenced",
    "memoized module string then BINGET": "referenced",
    "dotted name torch + serialization.os.system": "referenced",
    "module object torch + serialization": "referenced",
    "bare payload in _load_from_bytes bytes": NESTED,
    "payload after a valid legacy header": NESTED,
    # issue 10: torch never writes a zip into a pickled storage: refused as such
    "torch zip in _load_from_bytes with malicious data.pkl": NESTED,
}
CASES = [case for case in CORPUS if case[0] in GATE_CORPUS]
assert len(CASES) == len(GATE_CORPUS), "tests/test_scan.py renamed a corpus entry"

UNSAFE_FIX = (
    "  fix: do not trust this file: restore the golden from version control "
    "(git checkout -- goldens/sentiment), or regenerate it with pytest --modelpack-regen*"
)
RESTORE_FIX = (
    "  fix: restore the golden from version control (git checkout -- goldens/sentiment), "
    "or regenerate it with pytest --modelpack-regen test_models.py::test_sentiment"
)

_GOLDEN_CACHE: dict[str, Path] = {}


@pytest.fixture
def golden_project(
    seed_project: SeedProject, tmp_path_factory: pytest.TempPathFactory
) -> SeedProject:
    """The seed project with its golden: made by --modelpack-regen once, then copied.

    Every test gets a fresh copy, so tampering never leaks between tests; the regeneration itself
    is what tests/test_lifecycle.py checks.
    """
    seed_project.ini(examples=2, recorded=4)
    cached = _GOLDEN_CACHE.get("goldens")
    if cached is None:
        result = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu")
        assert result.ret == 0, result.stdout.str()
        cached = tmp_path_factory.mktemp("golden-cache") / "goldens"
        shutil.copytree(seed_project.path / "goldens", cached)
        _GOLDEN_CACHE["goldens"] = cached
    else:
        shutil.copytree(cached, seed_project.path / "goldens")
    return seed_project


def plant(project: SeedProject, data: bytes, name: str = "sentiment") -> None:
    """Replace the golden's bundle.pkl with ``data`` and make the manifest's hash agree."""
    folder = project.golden(name)
    (folder / "bundle.pkl").write_bytes(data)
    manifest = project.manifest(name)
    manifest["bundle"]["size"] = len(data)
    manifest["bundle"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def gate(project: SeedProject, *args: str) -> pytest.RunResult:
    """Run the gate (CPU only) and prove it wrote nothing."""
    before = project.snapshot()
    result = project.run("--modelpack-golden", "--modelpack-device", "cpu", *args)
    assert project.snapshot() == before, "the gate changed files on disk"
    return result


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


# --------------------------------------------------------------------------- UNSAFE GOLDEN


@pytest.mark.parametrize(
    ("label", "build", "refused"),
    [pytest.param(*case[:3], id=case[0]) for case in CASES],
)
def test_gate_refuses_malicious_golden(
    golden_project: SeedProject, canary: Path, label: str, build: Callable, refused: str
) -> None:
    plant(golden_project, build(canary))
    result = gate(golden_project)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: UNSAFE GOLDEN — * refused; nothing from the golden was run",
            "  file: */goldens/sentiment/bundle.pkl",
            f"  {refused} ({GATE_CORPUS[label]}): *",
            UNSAFE_FIX,
            "sentiment*cpu*golden*failed*UNSAFE GOLDEN*",
        ]
    )
    assert not canary.exists(), "the payload ran"


def test_gate_names_every_offending_global(golden_project: SeedProject, canary: Path) -> None:
    """Two refused names, one of them only reachable through the memo: both are listed."""
    from .test_scan import p4, sbu, stack_global, touch

    data = p4(
        stack_global("collections", "OrderedDict")  # allowed: must not widen anything
        + b"0"
        + stack_global("subprocess", "getoutput")
        + b"0"
        + sbu("os")
        + b"\x94"  # MEMOIZE "os"
        + b"0h\x00"  # ...then fetch it back with BINGET
        + sbu("system")
        + b"\x93"
        + sbu(touch(canary))
        + b"\x85R"
    )
    plant(golden_project, data)
    result = gate(golden_project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: UNSAFE GOLDEN — 2 global uses refused; nothing from the golden "
            "was run",
            "  subprocess.getoutput (referenced): not on the allowlist: standard library code",
            "  os.system (referenced): not on the allowlist: standard library code",
            UNSAFE_FIX,
        ]
    )
    assert "collections.OrderedDict" not in result.stdout.str()
    assert not canary.exists()


# --------------------------------------------------------------------------- no false positives


def test_safe_golden_passes(golden_project: SeedProject) -> None:
    result = gate(golden_project)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["sentiment*cpu*golden*passed*"])
    assert "UNSAFE" not in result.stdout.str()


def _repickle(project: SeedProject, protocol: int) -> bytes:
    """Our own freshly written golden (trusted here), pickled again with ``protocol``."""
    sys.path.insert(0, str(project.path))
    try:
        with open(project.golden() / "bundle.pkl", "rb") as f:
            model = pickle.load(f)
        return pickle.dumps(model, protocol=protocol)
    finally:
        sys.path.remove(str(project.path))
        for module in ("package", "strategies"):
            sys.modules.pop(module, None)


@pytest.mark.parametrize("protocol", [2, 3, 5])  # protocols 0-1 cannot pickle BytesIO
def test_safe_golden_passes_at_every_protocol(golden_project: SeedProject, protocol: int) -> None:
    """The same model pickled with another protocol is still safe: the scanner must not trip over
    any encoding (bytes as _codecs.encode calls at 2, BINBYTES at 3, framing at 5)."""
    data = _repickle(golden_project, protocol)
    plant(golden_project, data)
    result = gate(golden_project)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["sentiment*cpu*golden*passed*"])


CONFTEST_WITH_TTL = """\
import datetime
from pathlib import Path

import pytest
import torch
from package import build_model

CORPUS = Path(__file__).with_name("corpus.txt")


@pytest.fixture(scope="session")
def sentiment_model():
    torch.manual_seed(0)
    model = build_model(CORPUS)
    model.ttl = datetime.timedelta(days=1)  # a benign global the built-in allowlist lacks
    return model
"""


def test_live_trust_needs_no_configuration(seed_project: SeedProject, canary: Path) -> None:
    """Issue 10: a global the live model's own pickle uses (datetime.timedelta, called by
    REDUCE) is trusted for its golden with zero configuration; the same golden calling a
    function the live pickle never calls is refused."""
    from .test_scan import os_system_p2

    seed_project.write("conftest.py", CONFTEST_WITH_TTL)
    seed_project.ini(examples=2)
    result = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu")
    assert result.ret == 0, result.stdout.str()
    assert "datetime.timedelta" in {g["global"] for g in seed_project.manifest()["globals"]}
    passed = gate(seed_project)
    assert passed.ret == 0, passed.stdout.str()
    passed.stdout.fnmatch_lines(["sentiment*cpu*golden*passed*"])
    plant(seed_project, os_system_p2(canary))
    refused = gate(seed_project)
    assert refused.ret == 1
    refused.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: UNSAFE GOLDEN — 1 global use refused; nothing from the golden "
            "was run",
            "  os.system (referenced): not on the allowlist: standard library code",
            UNSAFE_FIX,
        ]
    )
    assert not canary.exists()


def test_safe_globals_ini_allows_only_the_listed_name(
    golden_project: SeedProject, canary: Path
) -> None:
    """Listing one name widens nothing else: os.system stays refused beside it."""
    from .test_scan import os_system_p2

    golden_project.ini(
        examples=2, extra='modelpack_safe_globals = ["datetime.timedelta", "os.getcwd"]'
    )
    plant(golden_project, os_system_p2(canary))
    result = gate(golden_project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["  os.system (referenced): not on the allowlist*"])
    assert not canary.exists()


# --------------------------------------------------------------------------- CORRUPT GOLDEN


def _flip_a_byte(folder: Path) -> None:
    path = folder / "bundle.pkl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "bundle.pkl"
    path.write_bytes(path.read_bytes()[:1000])


def _lfs_pointer(folder: Path, name: str = "bundle.pkl") -> None:
    path = folder / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size
    path.write_text(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {size}\n"
    )


def _empty(folder: Path) -> None:
    (folder / "bundle.pkl").write_bytes(b"")


def _missing_bundle(folder: Path) -> None:
    (folder / "bundle.pkl").unlink()


def _format_version(folder: Path) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))


def _bad_json(folder: Path) -> None:
    path = folder / "manifest.json"
    path.write_text(path.read_text()[:-20])  # cut mid-object, as a bad merge might


def _tampered_examples(folder: Path) -> None:
    path = folder / "examples.json"
    path.write_text(path.read_text().replace('"decision"', '"Decision"', 1))


CORRUPTIONS = [
    # (id, tamper, headline summary, file named, detail line, fix line)
    (
        "sha256 mismatch",
        _flip_a_byte,
        "bundle.pkl does not match its sha256",
        "bundle.pkl",
        "  manifest sha256 *, file sha256 *",
        RESTORE_FIX,
    ),
    (
        "truncated",
        _truncate,
        "bundle.pkl is truncated",
        "bundle.pkl",
        "  manifest says * bytes, the file has 1000",
        RESTORE_FIX,
    ),
    (
        "git lfs pointer",
        _lfs_pointer,
        "Git LFS pointer instead of the file",
        "bundle.pkl",
        "  the file holds a Git LFS pointer: the real content was never fetched",
        "  fix: run `git lfs pull` (and install git-lfs in CI), or stop tracking goldens with LFS",
    ),
    (
        "git lfs pointer manifest",
        lambda folder: _lfs_pointer(folder, "manifest.json"),
        "Git LFS pointer instead of the file",
        "manifest.json",
        "  the file holds a Git LFS pointer: the real content was never fetched",
        "  fix: run `git lfs pull`*",
    ),
    ("empty", _empty, "bundle.pkl is empty", "bundle.pkl", "  0 bytes on disk", RESTORE_FIX),
    (
        "missing bundle",
        _missing_bundle,
        "bundle.pkl is missing",
        "bundle.pkl",
        "  the manifest lists it",
        RESTORE_FIX,
    ),
    (
        "unknown format version",
        _format_version,
        "unknown format version 99",
        "manifest.json",
        "  this pytest-modelpack reads golden format version 1",
        "  fix: upgrade pytest-modelpack to the version that wrote this golden, or regenerate it "
        "with pytest --modelpack-regen test_models.py::test_sentiment",
    ),
    (
        "invalid manifest json",
        _bad_json,
        "manifest.json is not valid JSON",
        "manifest.json",
        "  *line * column *",
        RESTORE_FIX,
    ),
    (
        "examples sha256 mismatch",
        _tampered_examples,
        "examples.json does not match its sha256",
        "examples.json",
        "  manifest sha256 *",
        RESTORE_FIX,
    ),
]


@pytest.mark.parametrize(
    ("tamper", "summary", "file", "detail", "fix"),
    [case[1:] for case in CORRUPTIONS],
    ids=[case[0] for case in CORRUPTIONS],
)
def test_gate_reports_corrupt_golden(
    golden_project: SeedProject,
    tamper: Callable[[Path], None],
    summary: str,
    file: str,
    detail: str,
    fix: str,
) -> None:
    tamper(golden_project.golden())
    result = gate(golden_project)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"modelpack: sentiment: CORRUPT GOLDEN — {summary}",
            f"  file: */goldens/sentiment/{file}",
            detail,
            fix,
            f"sentiment*cpu*golden*failed*CORRUPT GOLDEN — {summary}*",
        ]
    )


def test_truncated_bundle_with_matching_hash_is_corrupt_not_loaded(
    golden_project: SeedProject,
) -> None:
    """The hash agrees (someone updated the manifest), but the pickle stops mid-stream: the scan
    reports it as unreadable, and the half pickle is never handed to the unpickler."""
    data = (golden_project.golden() / "bundle.pkl").read_bytes()
    plant(golden_project, data[: len(data) // 2])
    result = gate(golden_project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: CORRUPT GOLDEN — bundle.pkl is not a readable pickle",
            "  file: */goldens/sentiment/bundle.pkl",
            "  *truncated*",
            "  fix: restore the golden from version control, or regenerate it with "
            "pytest --modelpack-regen test_models.py::test_sentiment",
        ]
    )


def test_hash_is_checked_before_the_scan(golden_project: SeedProject, canary: Path) -> None:
    """A malicious bundle whose manifest was NOT updated is reported as a hash problem: the
    manifest check comes first, and nothing is scanned or loaded."""
    from .test_scan import os_system_p2

    data = os_system_p2(canary)
    (golden_project.golden() / "bundle.pkl").write_bytes(data)
    result = gate(golden_project)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["modelpack: sentiment: CORRUPT GOLDEN — bundle.pkl is truncated"])
    assert "UNSAFE" not in result.stdout.str()
    assert not canary.exists()


def test_refused_globals_outrank_a_scan_error(canary: Path) -> None:
    """Verdict.raise_if_unsafe: a payload followed by garbage is UNSAFE (pickle.loads would run
    it before reaching the garbage), not merely CORRUPT."""
    from pytest_modelpack.errors import UnsafeGolden
    from pytest_modelpack.safety import Allowlist, scan_stream

    from .test_scan import os_system_p2

    data = os_system_p2(canary)[:-1] + b"\xff"
    verdict = scan_stream(io.BytesIO(data), Allowlist(None), "bundle.pkl")
    assert verdict.error is not None and verdict.refused
    with pytest.raises(UnsafeGolden) as info:
        verdict.raise_if_unsafe("sentiment")
    assert "  os.system (referenced): not on the allowlist" in str(info.value)
    assert "(the scan then stopped: " in str(info.value)
