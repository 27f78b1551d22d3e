"""The golden store under faults (issue 11): kills, injected exceptions, full and read-only disks,
file-size limits, permissions, symlinks, invalid manifests, all-raising checks, the CLI.

Whatever happens, a golden folder is the old golden or the new one; an interrupted state is
detected in one line and repaired by regen; every OS error is a headline naming the path and the
fix. Store-level tests use the store directly (no torch, fast); the rest run pytest on the seed
project through pytester, as a user would.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_modelpack import cli, errors
from pytest_modelpack.golden import CreatedBy, GoldenStore, fileio
from pytest_modelpack.golden.examples import examples_bytes
from pytest_modelpack.golden.manifest import (
    FileEntry,
    GlobalEntry,
    InvalidManifest,
    Manifest,
    manifest_bytes,
    parse_manifest,
)

from .conftest import EXAMPLE, SeedProject

REPO = Path(__file__).resolve().parents[1]
REGEN = "pytest --modelpack-regen test_models.py::test_sentiment"
RESTORE_FIX = (
    "  fix: restore the golden from version control (git checkout -- goldens/sentiment), "
    "or regenerate it with pytest --modelpack-regen test_models.py::test_sentiment"
)


def write_golden(store: GoldenStore, obj: object) -> list[Path]:
    """One regen's worth of store calls, without torch: what regenerate() does."""
    pending = store.prepare(obj)
    pending.add_examples(examples_bytes([("x", 1)]), 1)
    manifest = pending.manifest(
        created_by=CreatedBy("t.py::t", "cpu"), globals_=[], code={}, structure={}
    )
    return pending.commit(manifest)


def bundle_sha(obj: object) -> str:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.DEFAULT_PROTOCOL)).hexdigest()


def strays(goldens: Path) -> list[str]:
    """Anything in goldens/ that is not a golden folder, or in a golden that is not its files."""
    out = [p.name for p in goldens.iterdir() if p.name.startswith(".")]
    for folder in goldens.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            out += [
                f"{folder.name}/{p.name}"
                for p in folder.iterdir()
                if p.name not in ("bundle.pkl", "manifest.json", "examples.json")
            ]
    return sorted(out)


# ------------------------------------------------------------------------ kill at random points

KILLED_WRITER = """\
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from pytest_modelpack.golden import CreatedBy, GoldenStore
from pytest_modelpack.golden.examples import examples_bytes

root = Path(sys.argv[1])
store = GoldenStore(root / "goldens" / "g", "g", project_root=root)
payloads = [b"A" * 3_000_000, b"B" * 3_000_000]
i = int(sys.argv[2])
while True:
    pending = store.prepare(payloads[i % 2])
    pending.add_examples(examples_bytes([("x", i % 2)]), 1)
    manifest = pending.manifest(created_by=CreatedBy("t", "cpu"), globals_=[], code={{}}, structure={{}}
    )
    pending.commit(manifest)
    print(i, flush=True)
    i += 1
    if sys.argv[3] == "once":
        break
"""


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_killed_writer_leaves_old_or_new_and_next_write_cleans_up(
    tmp_path: Path, swap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "writer.py"
    source = KILLED_WRITER.format(repo=str(REPO))
    if swap == "two renames":  # the fallback where renameat2(RENAME_EXCHANGE) is not available
        source = source.replace(
            "from pytest_modelpack.golden.examples",
            "import pytest_modelpack.golden.fileio as f; f._RENAMEAT2 = None\n"
            "from pytest_modelpack.golden.examples",
        )
    script.write_text(source)
    run = [sys.executable, str(script), str(tmp_path)]
    subprocess.run([*run, "0", "once"], check=True, capture_output=True)
    folder = tmp_path / "goldens" / "g"
    store = GoldenStore(folder, "g", project_root=tmp_path)
    expected = {bundle_sha(b"A" * 3_000_000), bundle_sha(b"B" * 3_000_000)}
    rng = random.Random(11)
    seen_leftovers = 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for _ in range(3):
            proc = subprocess.Popen([*run, "1", "loop"], stdout=subprocess.PIPE)
            time.sleep(rng.uniform(0.15, 0.6))
            proc.send_signal(sig)
            proc.communicate(timeout=30)
            interrupted = store.interrupted()
            if interrupted is not None:  # only possible with two renames, killed between them
                assert swap == "two renames"
                fileio.remove_leftovers(folder)
            manifest, _ = store.read_verified()  # old or new: verifies either way
            assert manifest.bundle.sha256 in expected
            seen_leftovers += bool(store.leftovers())
            subprocess.run([*run, "0", "once"], check=True, capture_output=True)
            assert store.leftovers() == [], "the next write removes an interrupted one's leftovers"
            assert strays(tmp_path / "goldens") == []


# ------------------------------------------------------------- exceptions injected between steps


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


INJECTIONS = {
    "while dumping the bundle": ("HashingWriter.write", "pickle"),
    # the disk fills while the bundle is flushed behind the pickler: the final fsync may not
    # see that error again (the kernel reports it once), so the writer must raise it itself
    "flushing the bundle in the background": ("_datasync", "pickle"),
    "writing examples.json": ("write_atomic", "examples"),
    "writing manifest.json": ("write_atomic", "manifest"),
    "swapping the folder in": ("_exchange", "swap"),
    "between the two renames": ("second rename", "swap"),
}


@pytest.mark.parametrize("step", list(INJECTIONS))
def test_error_at_any_commit_step_keeps_the_old_golden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    folder = tmp_path / "goldens" / "g"
    store = GoldenStore(folder, "g", project_root=tmp_path)
    write_golden(store, "old")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    what, _ = INJECTIONS[step]
    calls = {"n": 0}
    if what == "HashingWriter.write":
        monkeypatch.setattr(fileio.HashingWriter, "write", _fail)
    elif what == "_datasync":
        monkeypatch.setattr(fileio, "_SYNC_EVERY", 0)  # a small bundle is flushed too
        monkeypatch.setattr(fileio, "_datasync", _fail)
    elif what == "write_atomic":
        real = fileio.write_atomic
        target = "examples.json" if "examples" in step else "manifest.json"

        def write_atomic(path: Path, data: bytes) -> None:
            if Path(path).name == target:
                real(path, data[: len(data) // 2])  # half written, then the disk fills
                _fail()
            real(path, data)

        monkeypatch.setattr(fileio, "write_atomic", write_atomic)
    elif what == "_exchange":
        monkeypatch.setattr(fileio, "_exchange", _fail)
    else:
        monkeypatch.setattr(fileio, "_RENAMEAT2", None)
        real_rename = os.rename

        def rename(a: object, b: object) -> None:
            calls["n"] += 1
            if calls["n"] == 2:  # the first rename moved the old golden aside
                _fail()
            real_rename(a, b)  # type: ignore[arg-type]

        monkeypatch.setattr(fileio.os, "rename", rename)
    with pytest.raises(errors.GoldenIOError) as info:
        write_golden(store, "new")
    monkeypatch.undo()
    assert info.value.headline.startswith("modelpack: g: GOLDEN I/O ERROR — cannot ")
    assert "the disk (or your quota) is full" in info.value.summary
    assert "free space on the file system" in (info.value.fix or "")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert strays(tmp_path / "goldens") == []
    manifest, _ = store.read_verified()
    assert manifest.bundle.sha256 == bundle_sha("old")


def test_two_rename_swap_writes_the_new_golden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fileio, "_RENAMEAT2", None)
    store = GoldenStore(tmp_path / "goldens" / "g", "g", project_root=tmp_path)
    write_golden(store, "old")
    write_golden(store, "new")
    assert store.read_verified()[0].bundle.sha256 == bundle_sha("new")
    assert strays(tmp_path / "goldens") == []


# ---------------------------------------------------------------- regen verifies "unchanged"


def _truncate(folder: Path) -> None:
    data = (folder / "bundle.pkl").read_bytes()
    (folder / "bundle.pkl").write_bytes(data[:1000])


def _delete(folder: Path) -> None:
    (folder / "bundle.pkl").unlink()


def _bit_flip(folder: Path) -> None:
    data = bytearray((folder / "bundle.pkl").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "bundle.pkl").write_bytes(bytes(data))


def _lfs(folder: Path) -> None:
    (folder / "bundle.pkl").write_bytes(fileio.LFS_MAGIC + b"\noid sha256:00\nsize 1\n")


def _directory(folder: Path) -> None:
    (folder / "bundle.pkl").unlink()
    (folder / "bundle.pkl").mkdir()


def _rehash(folder: Path, payload: bytes) -> None:
    """Write ``payload`` as bundle.pkl with the manifest's size and sha256 updated to match, as
    an attacker (or a careless hand edit) would: the hashes alone then see nothing wrong."""
    (folder / "bundle.pkl").write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["size"] = len(payload)
    manifest["bundle"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _edited_weights(folder: Path) -> None:
    import torch

    sys.path.insert(0, str(folder.parent.parent))  # the project's package.py (trusted here)
    try:
        model = pickle.loads((folder / "bundle.pkl").read_bytes())
    finally:
        sys.path.pop(0)
    with torch.no_grad():
        for value in vars(model).values():
            if isinstance(value, torch.nn.Module):
                for param in value.parameters():
                    param.add_(0.5)
    _rehash(folder, pickle.dumps(model))


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def _unsafe_call(folder: Path) -> None:
    _rehash(folder, pickle.dumps(_System(f"touch {folder.parent.parent / 'canary'}")))


#: Damage the hashes cannot see (the manifest updated to match): regen must still not call the
#: golden "unchanged", since the gate would refuse it and tell the user to regenerate.
TAMPERS = {
    "edited weights, hashes updated": (
        _edited_weights,
        "OUTPUT MISMATCH: bundle.pkl does not reproduce recorded example #0 of examples.json",
    ),
    "unsafe call, hashes updated": (_unsafe_call, "UNSAFE GOLDEN: 1 global use refused*"),
}

DAMAGES = {
    "truncated": (_truncate, "bundle.pkl is truncated"),
    "deleted": (_delete, "bundle.pkl is missing"),
    "bit flip": (_bit_flip, "bundle.pkl does not match its sha256"),
    "lfs pointer": (_lfs, "Git LFS pointer instead of the file"),
    "a directory": (_directory, "bundle.pkl is not a file"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_reading_a_damaged_golden_says_what_is_wrong(tmp_path: Path, damage: str) -> None:
    store = GoldenStore(tmp_path / "goldens" / "g", "g", project_root=tmp_path)
    write_golden(store, b"x" * 5000)
    tamper, summary = DAMAGES[damage]
    tamper(store.folder)
    with pytest.raises(errors.CorruptGolden) as info:
        store.read_verified()
    assert info.value.summary == summary


@pytest.mark.parametrize("damage", ["truncated", "a directory", *TAMPERS])
def test_regen_repairs_a_damaged_golden(regenerated: SeedProject, damage: str) -> None:
    tamper, summary = {**DAMAGES, **TAMPERS}[damage]
    tamper(regenerated.golden())
    result = regenerated.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"sentiment*cpu*regen*changed*repaired: {summary}*"])
    assert regenerated.run("--modelpack-golden").ret == 0
    assert not (regenerated.path / "canary").exists()  # nothing in the golden ever ran


# --------------------------------------------------------- interrupted regens and their leftovers


def test_leftovers_are_reported_by_the_gate_and_removed_by_regen(
    regenerated: SeedProject,
) -> None:
    goldens = regenerated.path / "goldens"
    (goldens / ".sentiment.new-k1ll3d").mkdir()
    (goldens / ".sentiment.new-k1ll3d" / "bundle.pkl").write_bytes(b"half")
    (goldens / "sentiment" / ".bundle.pkl.x1y2.tmp").write_bytes(b"half")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "warning: sentiment [[]cpu]: 2 leftover(s) of an interrupted regen: "
            "goldens/.sentiment.new-k1ll3d, goldens/sentiment/.bundle.pkl.x1y2.tmp — not part of "
            f"the golden, do not commit them; {REGEN} removes them"
        ]
    )
    result = regenerated.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["sentiment*regen*changed*removed 2 leftover(s) of an interrupted regen*"]
    )
    assert strays(goldens) == []


def test_a_swap_interrupted_between_renames_is_detected_and_repaired(
    regenerated: SeedProject,
) -> None:
    goldens = regenerated.path / "goldens"
    (goldens / "sentiment").rename(goldens / ".sentiment.old-abc123")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: CORRUPT GOLDEN — a regen was interrupted: goldens/sentiment is "
            "missing, the previous golden is in goldens/.sentiment.old-abc123",
            "  the process was stopped between the two renames that swap a golden in",
            f"  fix: repair it with: {REGEN}  (or rename the folder back)",
        ]
    )
    result = regenerated.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["sentiment*changed*repaired an interrupted regen*"])
    assert strays(goldens) == []
    assert regenerated.run("--modelpack-golden").ret == 0


# ------------------------------------------------------------------------------ OS errors


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_at_regen(seed_project: SeedProject) -> None:
    goldens = seed_project.path / "goldens"
    with tmpfs(goldens, "size=64k"):
        result = seed_project.run("--modelpack-regen")
        assert result.ret == 1
        result.stdout.fnmatch_lines(
            [
                "modelpack: sentiment: GOLDEN I/O ERROR — cannot write "
                "goldens/sentiment/bundle.pkl: the disk (or your quota) is full",
                "  path: */goldens/sentiment/bundle.pkl",
                "  ENOSPC: No space left on device",
                "  nothing was half-written: the golden on disk is unchanged",
                "  fix: free space on the file system holding goldens/sentiment/bundle.pkl, then "
                f"regenerate: {REGEN}",
            ]
        )
        assert list(goldens.iterdir()) == []


def test_read_only_file_system(seed_project: SeedProject) -> None:
    goldens = seed_project.path / "goldens"
    with tmpfs(goldens, "size=8m"):
        assert seed_project.run("--modelpack-regen").ret == 0
        before = seed_project.snapshot()
        if subprocess.run(["mount", "-o", "remount,ro", str(goldens)]).returncode:
            pytest.skip("cannot remount the tmpfs read-only")
        seed_project.edit("conftest.py", "SEED = 0", "SEED = 1")
        result = seed_project.run("--modelpack-regen")
        assert result.ret == 1
        result.stdout.fnmatch_lines(
            [
                "modelpack: sentiment: GOLDEN I/O ERROR — cannot write goldens/sentiment: "
                "the file system is read-only",
                "  EROFS: Read-only file system",
                "  fix: regenerate goldens on a writable checkout "
                f"({REGEN}) and commit them; the gate (--modelpack-golden) only reads",
            ]
        )
        seed_project.edit("conftest.py", "SEED = 1", "SEED = 0")
        assert seed_project.run("--modelpack-golden").ret == 0  # the gate only reads
        after = seed_project.snapshot()
        assert {k: v for k, v in after.items() if k.startswith("goldens")} == {
            k: v for k, v in before.items() if k.startswith("goldens")
        }


def test_file_size_limit(regenerated: SeedProject) -> None:
    """``ulimit -f``: the bundle outgrows the limit mid-write (EFBIG; Python ignores SIGXFSZ)."""
    before = regenerated.snapshot()
    regenerated.edit("conftest.py", "SEED = 0", "SEED = 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        result = regenerated.run("--modelpack-regen")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: GOLDEN I/O ERROR — cannot write goldens/sentiment/bundle.pkl: "
            "the file is "
            "larger than the process's file-size limit (ulimit -f)",
            "  EFBIG: File too large",
            f"  fix: raise the limit (ulimit -f unlimited), then regenerate: {REGEN}",
        ]
    )
    after = regenerated.snapshot()
    assert {k: v for k, v in after.items() if k.startswith("goldens")} == {
        k: v for k, v in before.items() if k.startswith("goldens")
    }


def without_dac_override() -> list[str]:
    """A command prefix under which permission bits apply to this process: as root, the
    capabilities that bypass them are dropped (root with them reads and writes anything, so a
    mode 000 proves nothing); as another user, nothing (the modes already apply)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's DAC capabilities (util-linux)")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_permission_denied_without_the_right_to_write(seed_project: SeedProject) -> None:
    """Regen on a project whose goldens/ may be read but not written (real modes)."""
    prefix = without_dac_override()
    assert seed_project.run("--modelpack-regen").ret == 0
    seed_project.edit("conftest.py", "SEED = 0", "SEED = 1")
    goldens = seed_project.path / "goldens"
    folders = [goldens, *(p for p in goldens.rglob("*") if p.is_dir())]
    try:
        for folder in folders:
            os.chmod(folder, 0o555)
        done = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--modelpack-regen",
            ],
            cwd=seed_project.path,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for folder in folders:
            os.chmod(folder, 0o755)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "modelpack: sentiment: GOLDEN I/O ERROR — cannot " in out
    assert "permission denied" in out
    assert "fix: give your user write permission on goldens" in out
    assert "Traceback" not in out
    assert strays(goldens) == []


def test_unreadable_goldens_are_io_errors_not_missing_or_corrupt(
    seed_project: SeedProject,
) -> None:
    """Issue 22: goldens/ at mode 000 read as MISSING GOLDEN, a golden folder at 000 as CORRUPT
    GOLDEN "manifest.json is missing". Both are GOLDEN I/O ERROR naming the path and errno."""
    prefix = without_dac_override()
    assert seed_project.run("--modelpack-regen").ret == 0
    goldens = seed_project.path / "goldens"
    for target in (goldens, goldens / "sentiment", goldens / "sentiment" / "bundle.pkl"):
        mode = target.stat().st_mode & 0o777
        os.chmod(target, 0)
        try:
            done = subprocess.run(
                [*prefix, sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
                + ["--modelpack-golden"],
                cwd=seed_project.path,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            os.chmod(target, mode)
        out = done.stdout
        assert done.returncode == 1, out + done.stderr
        assert "modelpack: sentiment: GOLDEN I/O ERROR — cannot read goldens/sentiment" in out, out
        assert "EACCES: Permission denied" in out
        assert "give your user read permission" in out
        assert "MISSING GOLDEN" not in out and "CORRUPT GOLDEN" not in out
        assert "Traceback" not in out and "error during collection" not in out


def test_golden_folder_that_is_a_file(seed_project: SeedProject) -> None:
    (seed_project.path / "goldens").mkdir()
    (seed_project.path / "goldens" / "sentiment").write_text("not a folder")
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: CORRUPT GOLDEN — the golden folder is a file",
            "  file: */goldens/sentiment",
            f"  fix: remove the file goldens/sentiment, then run: {REGEN}",
        ]
    )
    result = seed_project.run("--modelpack-regen")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: GOLDEN I/O ERROR — goldens/sentiment is a file, not a golden "
            "folder",
            f"  fix: move or remove the file, then run: {REGEN}",
        ]
    )
    assert (seed_project.path / "goldens" / "sentiment").read_text() == "not a folder"


def test_bundle_that_is_a_directory_fails_the_gate(regenerated: SeedProject) -> None:
    _directory(regenerated.golden())
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["modelpack: sentiment: CORRUPT GOLDEN — bundle.pkl is not a file", "*", RESTORE_FIX]
    )


# ------------------------------------------------------------------------------ symlinks


@pytest.mark.parametrize("link", ["golden folder", "bundle.pkl"])
def test_symlinks_out_of_the_project_are_refused(
    regenerated: SeedProject, tmp_path_factory: pytest.TempPathFactory, link: str
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    folder = regenerated.golden()
    if link == "golden folder":
        shutil.move(folder, outside / "sentiment")
        folder.symlink_to(outside / "sentiment", target_is_directory=True)
        shown = "sentiment"
    else:
        shutil.move(folder / "bundle.pkl", outside / "bundle.pkl")
        (folder / "bundle.pkl").symlink_to(outside / "bundle.pkl")
        shown = "bundle.pkl"
    before = {p.name: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    for mode in ("--modelpack-golden", "--modelpack-regen"):
        result = regenerated.run(mode)
        assert result.ret == 1, result.stdout.str()
        result.stdout.fnmatch_lines(
            [
                f"modelpack: sentiment: UNSAFE GOLDEN — {shown} is a symlink leading outside "
                "the project",
                f"  path: */goldens/sentiment{'' if shown == 'sentiment' else '/bundle.pkl'}",
                f"  leads to: {outside}*",
                f"  fix: replace the symlink with the real files (or remove it and run: {REGEN})",
            ]
        )
    regenerated.edit("conftest.py", "SEED = 0", "SEED = 1")
    assert regenerated.run("--modelpack-regen").ret == 1
    after = {p.name: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    assert after == before, "regen wrote through the symlink"


# ------------------------------------------------------------------------ manifest faults


def _set(manifest: dict, path: str, value: object) -> None:
    *parents, last = path.split(".")
    for part in parents:
        manifest = manifest[part]
    if value is KeyError:
        del manifest[last]
    else:
        manifest[last] = value


def test_manifest_faults_are_corrupt_never_silent(regenerated: SeedProject) -> None:
    path = regenerated.golden() / "manifest.json"
    original = path.read_text()
    cases = [
        ("bundle.size", "big", "bundle.size", 'expected an integer, got "big"'),
        ("code", KeyError, "code", "missing (the gate needs it)"),
        ("globals", KeyError, "globals", "missing (the gate needs it)"),
        ("environment", [], "environment", "expected an object, got list"),
    ]
    for key, value, field, why in cases:
        manifest = json.loads(original)
        _set(manifest, key, value)
        path.write_text(json.dumps(manifest))
        result = regenerated.run("--modelpack-golden")
        assert result.ret == 1, result.stdout.str()
        result.stdout.fnmatch_lines(
            [
                f"modelpack: sentiment: CORRUPT GOLDEN — manifest.json field '{field}' is invalid",
                "  file: */goldens/sentiment/manifest.json",
                f"  {field}: {why}",
                RESTORE_FIX,
            ]
        )
    # An empty code section for a bundle that runs project code: drift detection would be off.
    manifest = json.loads(original)
    manifest["code"] = {}
    path.write_text(json.dumps(manifest))
    regenerated.edit("package.py", "[:, -1, :]", "[:, 0, :]")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: CORRUPT GOLDEN — manifest.json records no project code, but "
            "the bundle references some",
            "  project globals in bundle.pkl: package.*",
            "  without the recorded code, code drift cannot be checked",
            "  fix: restore the golden from version control, or regenerate it with " + REGEN,
        ]
    )


def test_manifest_type_faults_name_the_field() -> None:
    good = json.loads((EXAMPLE / "goldens" / "sentiment" / "manifest.json").read_text())
    faults = {
        "bundle.size": ("big", 'bundle.size: expected an integer, got "big"'),
        "bundle.sha256": ("abc", 'bundle.sha256: expected 64 hex digits, got "abc"'),
        "examples.count": (True, "examples.count: expected an integer, got true"),
        "created_by": (KeyError, "created_by: missing (the gate needs it)"),
        "name": (3, "name: expected a string, got 3"),
        "structure": ({"model": 1}, "structure.model: expected a string, got 1"),
    }
    for key, (value, message) in faults.items():
        manifest = json.loads(json.dumps(good))
        _set(manifest, key, value)
        with pytest.raises(InvalidManifest) as info:
            parse_manifest(json.dumps(manifest).encode())
        assert f"{info.value.field}: {info.value.why}" == message
    globals_ = json.loads(json.dumps(good))
    globals_["globals"][0]["module"] = None
    with pytest.raises(InvalidManifest, match="globals\\[0\\].module"):
        parse_manifest(json.dumps(globals_).encode())
    code = json.loads(json.dumps(good))
    next(iter(code["code"].values()))["source"] = 1
    with pytest.raises(InvalidManifest, match="code\\..*\\.source"):
        parse_manifest(json.dumps(code).encode())


text = st.text(max_size=12)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
sizes = st.integers(0, 2**63 - 1)  # (what a file size can be: off_t)
entries = st.builds(FileEntry, st.just("bundle.pkl"), sizes, hexes, st.none() | st.integers(0, 5))
units = st.fixed_dictionaries(
    {
        "kind": text,
        "module": text,
        "qualname": text,
        "sha256": text,
        "source": text,
        "file": st.none() | text,
        "line": st.none() | st.integers(0, 10**6),
    }
)
manifests = st.builds(
    Manifest,
    name=text,
    bundle=entries,
    examples=st.builds(FileEntry, st.just("e"), sizes, hexes, st.none(), st.integers(0, 99)),
    created_by=st.builds(CreatedBy, st.none() | text, st.none() | text),
    environment=st.dictionaries(text, st.none() | text, max_size=4),
    globals=st.lists(st.builds(GlobalEntry, text, text, text), max_size=4),
    code=st.dictionaries(text, units, max_size=3),
    structure=st.dictionaries(text, text, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(manifests)
def test_manifest_write_read_round_trip(manifest: Manifest) -> None:
    assert parse_manifest(manifest_bytes(manifest)) == manifest


# ------------------------------------------------------------------------- all inputs raise

RAISING = """\
from strategies import sentences


def refuse(model, x):
    raise ValueError("no thanks")


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences(), apply=refuse)
"""


@pytest.mark.parametrize("mode", ["", "--modelpack-regen", "--modelpack-golden"])
def test_an_apply_that_raises_on_every_input_fails(seed_project: SeedProject, mode: str) -> None:
    seed_project.write("test_models.py", RAISING)
    result = seed_project.run(*([mode] if mode else []))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: EVERY INPUT RAISED — all * of * inputs raised; at least one "
            "must run normally",
            "  *x ValueError: no thanks",
            "  apply= raised on every input, so live and reloaded were compared on exceptions "
            "only: nothing about the outputs was checked",
            "  fix: fix apply= (or narrow inputs=) so that at least one input runs normally; "
            "inputs that raise are still recorded and compared",
        ]
    )
    assert not (seed_project.path / "goldens").exists()


NONE_APPLY = "from pytest_modelpack import apply_model\n" + RAISING.replace(
    'def refuse(model, x):\n    raise ValueError("no thanks")',
    "def refuse(model, x):\n    apply_model(model, x)  # forgot to return it",
)


@pytest.mark.parametrize("mode", ["", "--modelpack-regen"])
def test_an_apply_that_returns_none_on_every_input_fails(
    seed_project: SeedProject, mode: str
) -> None:
    """None == None on every input would pass and prove nothing (and record a golden of Nones)."""
    seed_project.write("test_models.py", NONE_APPLY)
    result = seed_project.run(*([mode] if mode else []))
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: EVERY OUTPUT NONE — every output of the live model was None "
            "(* of * calls)",
            "  live and reloaded were compared on None only: nothing about the outputs was "
            "checked, and a golden would record nothing",
            "  fix: make apply= return the model's output (a tensor, a number, a structure of "
            "them); if None is a real answer (nothing found), give inputs= a strategy on which "
            "the model answers at least once, e.g. st.sampled_from(real samples); an input "
            "answered with None is still compared",
        ]
    )
    assert not (seed_project.path / "goldens").exists()


SOME_INPUTS = {
    # Hypothesis tries the simplest input (one word) first: at least one runs normally.
    "raises": (
        RAISING,
        '    raise ValueError("no thanks")',
        '    if " " in x:\n        raise ValueError("two words")\n    return len(x)',
    ),
    "returns-none": (
        NONE_APPLY,
        "    apply_model(model, x)  # forgot to return it",
        '    return None if " " in x else apply_model(model, x)',
    ),
}


@pytest.mark.parametrize("case", list(SOME_INPUTS))
def test_an_apply_that_raises_or_returns_none_on_some_inputs_passes(
    seed_project: SeedProject, case: str
) -> None:
    template, old, new = SOME_INPUTS[case]
    seed_project.write("test_models.py", template.replace(old, new))
    result = seed_project.run()
    assert result.ret == 0, result.stdout.str()


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture
def example_goldens(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE / "goldens", tmp_path / "goldens")
    return tmp_path / "goldens"


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_cli_diff_verifies_both_goldens(
    example_goldens: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    bundle = example_goldens / "sentiment_any_text" / "bundle.pkl"
    if damage == "empty":
        bundle.write_bytes(b"")
    else:
        bundle.unlink()
    code = cli.main(["diff", str(example_goldens / "sentiment"), str(bundle.parent)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_UNREADABLE, out
    assert "no differences" not in out
    summary = "bundle.pkl is empty" if damage == "empty" else "bundle.pkl is missing"
    assert f"modelpack: sentiment_any_text: CORRUPT GOLDEN — {summary}" in err


def test_cli_missing_path_is_no_golden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (["inspect", "nope"], ["diff", "nope", "nope2"]):
        code = cli.main(argv)
        _, err = capsys.readouterr()
        assert code == cli.EXIT_UNREADABLE
        assert err.splitlines()[0] == "modelpack: MISSING GOLDEN — no golden at nope"
        assert "git checkout" not in err
        assert "fix: check the path: a golden is a folder holding bundle.pkl" in err


def test_cli_inspect_reports_undecodable_examples(
    example_goldens: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = example_goldens / "sentiment"
    data = b'{"format_version": 1, "examples": [{"input": {"$tuple": 1}, "output": 1}]}'
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["examples"]["size"] = len(data)
    manifest["examples"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "examples.json").write_bytes(data)
    code = cli.main(["inspect", str(folder)])
    out, _ = capsys.readouterr()
    assert code != cli.EXIT_OK  # unsafe (no --root: project classes) wins over unreadable
    assert "(CORRUPT: examples.json cannot be decoded)" in out


def test_cli_inspect_invalid_manifest_field(
    example_goldens: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = example_goldens / "sentiment"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["size"] = "big"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code = cli.main(["inspect", str(folder)])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_UNREADABLE
    assert "CORRUPT GOLDEN — manifest.json field 'bundle.size' is invalid" in err
    assert "Traceback" not in err


def test_report_is_written_through_the_one_atomic_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modelpack.report import Report

    target = tmp_path / "report.json"
    target.write_text("old")
    monkeypatch.setattr(fileio.os, "replace", _fail)
    with pytest.raises(OSError):
        Report().write(target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize(
    ("err", "why", "fix"),
    [
        (errno.EACCES, "permission denied", "give your user write permission on goldens"),
        (errno.EROFS, "the file system is read-only", "regenerate goldens on a writable"),
        (errno.EFBIG, "file-size limit (ulimit -f)", "raise the limit (ulimit -f unlimited)"),
        (errno.EDQUOT, "the disk (or your quota) is full", "free space on the file system"),
    ],
)
def test_os_errors_creating_the_new_folder_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, why: str, fix: str
) -> None:
    """The same OS errors as the tmpfs / ulimit / nobody tests, where those cannot be staged."""
    monkeypatch.chdir(tmp_path)
    store = GoldenStore(Path("goldens") / "g", "g", nodeid="t.py::t", project_root=tmp_path)
    write_golden(store, "old")

    def refuse(*args: object, **kwargs: object) -> str:
        raise OSError(err, os.strerror(err), "whatever")

    monkeypatch.setattr(fileio.tempfile, "mkdtemp", refuse)
    with pytest.raises(errors.GoldenIOError) as info:
        write_golden(store, "new")
    assert info.value.headline.startswith(
        "modelpack: g: GOLDEN I/O ERROR — cannot write goldens/g: "
    )
    assert info.value.headline.endswith(why)
    assert (info.value.fix or "").startswith(fix)
    assert (info.value.fix or "").endswith("pytest --modelpack-regen t.py::t") or err == errno.EROFS
    assert store.read_verified()[0].bundle.sha256 == bundle_sha("old")


def test_gate_says_the_golden_files_disagree_when_nothing_else_changed(
    regenerated: SeedProject,
) -> None:
    _edited_weights(regenerated.golden())
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: OUTPUT MISMATCH — the golden no longer reproduces recorded "
            "example #0",
            "  neither the code nor the environment changed since the golden was made, so its "
            "files disagree: bundle.pkl or examples.json was edited or mixed up after regen",
            "  fix: restore the golden from version control (git checkout -- goldens/sentiment), "
            "or regenerate it with pytest --modelpack-regen test_models.py::test_sentiment",
        ]
    )


@pytest.mark.parametrize("fault", ["integer past the digit limit", "2 GiB manifest"])
def test_an_undecodable_manifest_is_corrupt_and_regen_repairs_it(
    regenerated: SeedProject, fault: str
) -> None:
    path = regenerated.golden() / "manifest.json"
    if fault == "2 GiB manifest":
        with open(path, "r+b") as f:
            f.truncate(2 << 30)  # sparse: no disk used, and the gate must not read it
        headline, why = "manifest.json is too large", "  * bytes; regen never writes a manifest*"
    else:
        text = path.read_text().replace('"format_version": 1', '"format_version": ' + "1" * 5000)
        path.write_text(text)
        headline, why = "manifest.json is not decodable", "  Exceeds the limit*"
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"modelpack: sentiment: CORRUPT GOLDEN — {headline}", "*", why])
    assert "Traceback" not in result.stdout.str()
    result = regenerated.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"sentiment*cpu*regen*changed*repaired: {headline}*"])
    assert regenerated.run("--modelpack-golden").ret == 0


def test_leftovers_of_a_killed_first_regen_are_named_with_the_missing_golden(
    seed_project: SeedProject,
) -> None:
    leftover = seed_project.path / "goldens" / ".sentiment.new-k1ll3d"
    leftover.mkdir(parents=True)
    (leftover / "bundle.pkl").write_bytes(b"half")
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: MISSING GOLDEN — no golden at goldens/sentiment",
            "*",
            "  1 leftover(s) of an interrupted regen: goldens/.sentiment.new-k1ll3d — not part of "
            f"the golden, do not commit them; {REGEN} removes them",
        ]
    )


@pytest.mark.parametrize("target", ["/dev/zero", "corpus.txt"])
def test_cli_inspect_of_a_file_that_is_not_a_golden_says_so(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    path = target if target.startswith("/") else str(EXAMPLE / target)
    assert cli.main(["inspect", path]) == 2
    err = capsys.readouterr().err
    assert f"modelpack: MISSING GOLDEN — no golden at {path}" in err
    assert "is not a folder" in err
    assert "remove" not in err and "git checkout" not in err  # never a destructive fix


def test_a_golden_name_too_long_for_a_folder_is_a_usage_error(seed_project: SeedProject) -> None:
    seed_project.write(
        "test_models.py",
        "from strategies import sentences\n\n\n"
        "def test_sentiment(modelpack, sentiment_model):\n"
        f"    modelpack.check(sentiment_model, name={'n' * 250!r}, inputs=sentences())\n",
    )
    result = seed_project.run()
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*USAGE ERROR — golden name too long (250 characters, at most 100)"]
    )


def test_a_reader_beside_a_concurrent_regen_never_sees_two_goldens_mixed(tmp_path: Path) -> None:
    """Readers take the folder lock shared: a swap waits until a golden's files are all read, so
    no read reports CORRUPT for a golden that is fine."""
    import threading

    store = GoldenStore(tmp_path / "goldens" / "g", "g", project_root=tmp_path)
    write_golden(store, b"a" * 50_000)
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        while not stop.is_set():
            write_golden(store, bytes([97 + writes[0] % 2]) * (50_000 + writes[0] % 7))
            writes[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    problems = []
    reads = 0
    try:
        # At least 300 reads, and on until the writer swapped a few times (a loaded CI machine
        # may schedule it rarely), within a minute.
        deadline = time.monotonic() + 60
        while reads < 300 or (writes[0] <= 5 and time.monotonic() < deadline):
            reads += 1
            try:
                store.read_verified()
            except errors.ModelpackError as exc:
                problems.append(exc.summary)
    finally:
        stop.set()
        thread.join()
    assert writes[0] > 5, "the writer must have swapped while the reader read"
    assert problems == []


# ------------------------------------------------------- issue 22: the right verdict per errno


def test_a_symlink_loop_is_an_io_error_naming_the_loop(tmp_path: Path) -> None:
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    (goldens / "g").symlink_to("g")  # points to itself
    store = GoldenStore(goldens / "g", "g", project_root=tmp_path)
    with pytest.raises(errors.GoldenIOError) as info:
        store.read_verified()
    text = info.value.render()
    assert "GOLDEN I/O ERROR — cannot read " in text
    assert "a loop of symbolic links" in text and "ELOOP" in text
    assert "replace the symlinks" in text
    assert "MISSING" not in text


def test_a_dangling_golden_link_says_so(tmp_path: Path) -> None:
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    (goldens / "g").symlink_to("elsewhere")
    store = GoldenStore(goldens / "g", "g", project_root=tmp_path)
    with pytest.raises(errors.CorruptGolden) as info:
        store.read_verified()
    assert "the golden folder is a symlink to nothing" in info.value.render()
    assert "it points to elsewhere, which does not exist" in info.value.render()


def test_an_unsearchable_parent_is_not_a_missing_golden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lstat failing with EACCES (a goldens/ at mode 000 for a user without the right) must not
    read as "nothing there" (os.path.lexists says False for any error)."""
    goldens = tmp_path / "goldens"
    write_golden(GoldenStore(goldens / "g", "g", project_root=tmp_path), "x")
    real = os.lstat

    def denied(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith(str(goldens) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", denied)
    store = GoldenStore(goldens / "g", "g", project_root=tmp_path)
    with pytest.raises(errors.GoldenIOError) as info:
        store.exists()
    text = info.value.render()
    assert "permission denied" in text and "EACCES" in text
    assert "give your user read permission" in text


# ----------------------------------------- issue 22 round 3: what stands on the way, said as is


def _store(tmp_path: Path, name: str = "g") -> GoldenStore:
    return GoldenStore(tmp_path / "goldens" / name, name, project_root=tmp_path)


@pytest.mark.parametrize("thing", ["file", "fifo", "/dev/null"])
def test_goldens_that_is_not_a_folder_is_an_io_error_not_a_missing_golden(
    tmp_path: Path, thing: str
) -> None:
    """Before: goldens/ being a file, a FIFO or a link to /dev/null read as MISSING GOLDEN (its
    lstat fails with ENOTDIR, which counted as "nothing there")."""
    goldens = tmp_path / "goldens"
    if thing == "file":
        goldens.write_text("x")
    elif thing == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs os.mkfifo")
        os.mkfifo(goldens)
    else:
        goldens.symlink_to(thing)
    store = _store(tmp_path)
    assert not store.exists()
    error = store.missing_error("goldens/g")
    assert isinstance(error, errors.GoldenIOError), error.render()
    text = error.render()
    assert (
        "GOLDEN I/O ERROR — cannot read " in text and "a file stands where a folder belongs" in text
    )
    assert "ENOTDIR" in text
    assert "fix: remove or move the file in the way of " in text and "goldens" in text
    assert "MISSING" not in text


def test_goldens_that_is_a_symlink_to_nothing_says_so(tmp_path: Path) -> None:
    (tmp_path / "goldens").symlink_to(tmp_path / "gone")
    error = _store(tmp_path).missing_error("goldens/g")
    assert isinstance(error, errors.CorruptGolden), error.render()
    text = error.render()
    assert "is a symlink to nothing (it points to " in text
    assert "fix: remove the link " in text


def test_goldens_that_is_a_file_at_regen_names_what_stands_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "cannot create goldens: the operating system refused" (EEXIST had no remedy)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "goldens").write_text("x")
    with pytest.raises(errors.GoldenIOError) as info:
        _store(tmp_path).prepare({"a": 1})
    text = info.value.render()
    assert "cannot create goldens: something that is not a folder stands where a folder" in text
    assert "fix: remove or move goldens (a file), then run: " in text
    assert (tmp_path / "goldens").read_text() == "x"


def test_a_golden_folder_link_to_nothing_at_regen_is_named_as_such(tmp_path: Path) -> None:
    """Before: regen said "goldens/g is a file, not a golden folder" of a dangling symlink."""
    (tmp_path / "goldens").mkdir()
    (tmp_path / "goldens" / "g").symlink_to("gone")
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).prepare({"a": 1})
    text = info.value.render()
    assert "the golden folder is a symlink to nothing" in text
    assert "fix: remove the link " in text
    assert os.path.islink(tmp_path / "goldens" / "g")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_what_stands_in_place_of_a_golden_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A golden folder that is a FIFO, a bundle that is a symlink to nothing or a device: each
    named as what it is (before: "a file", "it is a directory or special")."""
    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path)
    write_golden(store, "x")
    bundle = store.bundle_path
    bundle.unlink()
    bundle.symlink_to("gone")
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).read_verified()
    assert "CORRUPT GOLDEN — bundle.pkl is a symlink to nothing" in info.value.render()
    bundle.unlink()
    os.mkfifo(bundle)
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).read_verified()
    assert "bundle.pkl is not a file" in info.value.render()
    assert "it is a FIFO (named pipe)" in info.value.render()
    shutil.rmtree(store.folder)
    os.mkfifo(store.folder)
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).read_verified()
    text = info.value.render()
    assert "the golden folder is a FIFO (named pipe)" in text
    assert "fix: remove goldens/g (a FIFO (named pipe)), then run: " in text


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["bundle"].__setitem__("size", 2**70), "bundle.size"),
        (lambda d: d["bundle"].__setitem__("protocol", 10**30), "bundle.protocol"),
        (lambda d: d["examples"].__setitem__("count", -3), "examples.count"),
    ],
    ids=["size past any file", "protocol 10**30", "negative count"],
)
def test_manifest_numbers_no_golden_can_hold_are_invalid(
    tmp_path: Path, edit: Any, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: they passed the gate (protocol, count), or made `modelpack inspect` crash with an
    OverflowError traceback formatting a size of 2**70."""
    store = _store(tmp_path)
    write_golden(store, "x")
    data = json.loads(store.manifest_path.read_bytes())
    edit(data)
    store.manifest_path.write_text(json.dumps(data))
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).read_verified()
    assert f"manifest.json field '{field}' is invalid" in info.value.render()
    assert cli.main(["inspect", str(store.folder)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_manifest_key_given_twice_is_corrupt(tmp_path: Path) -> None:
    """json.loads keeps the last of two equal keys: a reviewer reads one value, the gate the
    other. Before: the gate passed such a manifest."""
    store = _store(tmp_path)
    write_golden(store, "x")
    text = store.manifest_path.read_text().rstrip()
    store.manifest_path.write_text(text[:-1] + ', "format_version": 1}\n')
    with pytest.raises(errors.CorruptGolden) as info:
        _store(tmp_path).read_verified()
    assert "manifest.json gives the key 'format_version' twice" in info.value.render()
    assert "fix: restore the golden from version control" in info.value.render()


UNSEARCHABLE = """\
import sys
from pathlib import Path
from pytest_modelpack import errors
from pytest_modelpack.golden import GoldenStore
root = Path(sys.argv[1])
try:
    GoldenStore(root / "goldens" / "g", "g", project_root=root).read_verified()
except errors.ModelpackError as exc:
    print(exc.render())
"""


def test_a_folder_without_its_x_bit_is_the_path_the_fix_names(tmp_path: Path) -> None:
    """A golden folder at mode 444 (readable, not enterable): the OS refuses goldens/g/bundle.pkl,
    but what needs the permission is the folder. Before: the fix said to chmod bundle.pkl."""
    prefix = without_dac_override()
    store = _store(tmp_path)
    write_golden(store, "x")
    os.chmod(store.folder, 0o444)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", UNSEARCHABLE, str(tmp_path)],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.chmod(store.folder, 0o755)
    out = done.stdout
    assert "GOLDEN I/O ERROR — cannot read goldens/g" in out, out + done.stderr
    assert "EACCES" in out
    assert "fix: give your user read permission on goldens/g (chmod u+rx goldens/g: a folder" in out
    assert "bundle.pkl (chmod" not in out
