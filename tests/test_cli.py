"""The ``modelpack`` command line (issue 5): scan, inspect and diff, never unpickling a golden.

Most tests call :func:`pytest_modelpack.cli.main` in process (fast); two run the real
``python -m pytest_modelpack`` in a subprocess, one of them with an audit hook proving that no
pickle global is ever looked up.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_modelpack import cli

from .conftest import EXAMPLE, SeedProject
from .test_scan import CORPUS, CORPUS_IDS, build_model, os_system_p2

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def forget_project_modules() -> Iterator[None]:
    """The allowlist imports project modules (``package``) to check them; a later in-process
    pytester run must import its own copy, not find ours in sys.modules."""
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.path[:] = path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


# --------------------------------------------------------------------------- scan: benign


def test_scan_benign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model()
    files = {
        "module.pkl": pickle.dumps(model, protocol=4),
        "module_p2.pkl": pickle.dumps(model, protocol=2),
        "state_dict.pkl": pickle.dumps(model.state_dict(), protocol=5),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(model.state_dict(), tmp_path / "checkpoint.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    paths = sorted(tmp_path.iterdir())
    code, out, _ = run(capsys, "scan", *paths)
    assert code == cli.EXIT_OK, out
    for path in paths:
        assert f"{path}: safe — " in out
    assert f"{len(paths)} file(s): {len(paths)} safe, 0 unsafe, 0 unreadable" in out


def test_scan_example_goldens(capsys: pytest.CaptureFixture[str]) -> None:
    goldens = sorted(EXAMPLE.glob("goldens/*/bundle.pkl"))
    assert len(goldens) >= 2
    code, out, _ = run(capsys, "scan", "--root", EXAMPLE, *goldens)
    assert code == cli.EXIT_OK, out
    assert len(re.findall(r": safe — \d+ global\(s\), all allowed", out)) == len(goldens)


def test_scan_golden_folder_means_its_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    folder = EXAMPLE / "goldens" / "sentiment"
    code, out, _ = run(capsys, "scan", "--root", EXAMPLE, folder)
    assert code == cli.EXIT_OK
    assert out.startswith(f"{folder / 'bundle.pkl'}: safe")


def test_scan_project_classes_need_the_root(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --root the example's own classes are not project code: refused, with a hint."""
    bundle = EXAMPLE / "goldens/sentiment/bundle.pkl"
    code, out, _ = run(capsys, "scan", bundle)
    assert code == cli.EXIT_UNSAFE
    assert (
        "  package.MyCompoundClass (referenced): not on the allowlist: neither installed nor project code"
        in out
    )
    assert "hint: classes and functions of your own project are allowed only with --root" in out
    code, out, _ = run(capsys, "scan", "--root", ROOT / "benchmarks", bundle)
    assert code == cli.EXIT_UNSAFE
    assert "  package.MyCompoundClass (referenced): module package not found in the project" in out
    assert "hint: a global that is not found may be project code of another folder" in out


def test_scan_runs_no_code_of_the_folder_it_looks_at(
    tmp_path: Path,
    canary: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A downloaded model folder may hold Python files beside the pickle. Scanning from inside
    it (cwd on sys.path, as with python -m) imports none of them unless --root says to."""
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "evilmod.py").write_text(f"open({str(canary)!r}, 'w').close()\nclass Net: pass\n")
    (folder / "model.pkl").write_bytes(b"\x80\x04\x8c\x07evilmod\x8c\x03Net\x93)\x81.")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    code, out, _ = run(capsys, "scan", "model.pkl")
    assert code == cli.EXIT_UNSAFE
    assert (
        "  evilmod.Net (referenced): not on the allowlist: neither installed nor project code"
        in out
    )
    assert not canary.exists()
    # --root is the user's statement of trust: then the module is imported to check the class.
    code, out, _ = run(capsys, "scan", "--root", folder, "model.pkl")
    assert code == cli.EXIT_OK, out
    assert canary.exists()


# --------------------------------------------------------------------------- scan: malicious


@pytest.mark.parametrize(("label", "build", "refused", "live"), CORPUS, ids=CORPUS_IDS)
def test_scan_malicious(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str], label, build, refused, live
) -> None:
    path = tmp_path / "bundle.pkl"
    path.write_bytes(build(canary))
    code, out, _ = run(capsys, "scan", "--root", tmp_path, path)
    assert code == cli.EXIT_UNSAFE, out
    assert out.startswith(f"{path}: UNSAFE — ")
    assert f"\n  {refused} (" in out
    assert not canary.exists()


def test_scan_unsafe_wins_over_unreadable_and_safe(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad, empty = tmp_path / "good.pkl", tmp_path / "bad.pkl", tmp_path / "empty.pkl"
    good.write_bytes(pickle.dumps({"a": 1}))
    bad.write_bytes(os_system_p2(canary))
    empty.write_bytes(b"")
    code, out, _ = run(capsys, "scan", good, bad, empty)
    assert code == cli.EXIT_UNSAFE
    assert "3 file(s): 1 safe, 1 unsafe, 1 unreadable" in out


def test_scan_payload_followed_by_garbage_is_unsafe(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pickle.loads runs os.system before it reaches the garbage: unsafe, not merely unreadable."""
    path = tmp_path / "bundle.pkl"
    path.write_bytes(os_system_p2(canary)[:-1] + b"\xff garbage")
    code, out, _ = run(capsys, "scan", path)
    assert code == cli.EXIT_UNSAFE, out
    assert "  os.system (referenced): not on the allowlist: standard library code" in out
    assert "  (the scan then stopped: " in out


# --------------------------------------------------------------------------- scan: unreadable


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (pickle.dumps(list(range(100)), protocol=4)[:-7], "truncated"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 3\n", "Git LFS pointer"),
        (b"just text\n", ""),
        (b"PK\x03\x04 not a zip", "zip"),
    ],
    ids=["empty", "truncated", "lfs-pointer", "text", "fake-zip"],
)
def test_scan_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "bundle.pkl"
    path.write_bytes(content)
    code, out, _ = run(capsys, "scan", path)
    assert code == cli.EXIT_UNREADABLE, out
    assert out.startswith(f"{path}: unreadable — ")
    assert message in out


def test_scan_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scan", tmp_path / "nope.pkl")
    assert code == cli.EXIT_UNREADABLE
    assert out.startswith(f"{tmp_path / 'nope.pkl'}: unreadable — no such file")


# --------------------------------------------------------------------------- scan: --allow


def test_scan_allow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import datetime

    path = tmp_path / "ttl.pkl"
    path.write_bytes(pickle.dumps({"ttl": datetime.timedelta(days=1)}, protocol=4))
    code, out, _ = run(capsys, "scan", path)
    assert code == cli.EXIT_UNSAFE
    assert "  datetime.timedelta (referenced): not on the allowlist: standard library code" in out
    code, out, _ = run(capsys, "scan", "--allow", "datetime.timedelta", path)
    assert code == cli.EXIT_OK, out
    assert f"{path}: safe — 1 global(s), all allowed" in out
    # An entry allows exactly its name.
    code, out, _ = run(capsys, "scan", "--allow", "datetime.datetime", path)
    assert code == cli.EXIT_UNSAFE


def test_scan_allow_never_widens_to_a_module(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(os_system_p2(canary))
    code, out, _ = run(capsys, "scan", "--allow", "os.getcwd", "--allow", "posix.system", path)
    assert code == cli.EXIT_UNSAFE
    assert "  os.system (referenced)" in out


def test_scan_bad_allow_entry_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps(1))
    code, out, err = run(capsys, "scan", "--allow", "not a name", path)
    assert code == cli.EXIT_UNREADABLE
    assert "modelpack: USAGE ERROR — invalid safe-global entry 'not a name'" in err
    assert "  fix: write it as module.qualname or module:qualname" in err


def test_scan_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["scan", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:\n  0  every file is safe\n  1  at least one file is unsafe" in out
    assert "  2  unreadable: missing, empty, truncated or corrupt file, Git LFS pointer" in out
    assert "--allow MODULE.QUALNAME" in out and "--root DIR" in out
    assert "never unpickled" in out
    for command in ("inspect", "diff"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "exit codes:" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["scan"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2


# --------------------------------------------------------------------------- goldens for inspect / diff

_GOLDENS: dict[str, Path] = {}


@pytest.fixture
def goldens(seed_project: SeedProject, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Goldens of the seed project, regenerated once for this module and copied out:

    ``a`` (seed 0), ``a_again`` (seed 0, regenerated in another project), ``seed1`` (seed 1: other
    weights, same structure), ``smaller`` (seed 1 and an edited MyLayer: n_embed 16).
    """
    if not _GOLDENS:
        store = tmp_path_factory.mktemp("cli-goldens")
        seed_project.ini(examples=2, recorded=4)

        def regen(name: str) -> None:
            result = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu")
            assert result.ret == 0, result.stdout.str()
            shutil.copytree(seed_project.golden(), store / name / "sentiment")

        regen("a")
        shutil.rmtree(seed_project.golden())
        regen("a_again")
        seed_project.edit("conftest.py", "SEED = 0", "SEED = 1")
        regen("seed1")
        seed_project.edit("package.py", "n_embed=32", "n_embed=16")
        regen("smaller")
        shutil.copytree(
            seed_project.path, store / "project", ignore=shutil.ignore_patterns("goldens")
        )
        _GOLDENS.update({p.name: p / "sentiment" for p in store.iterdir() if p.name != "project"})
        _GOLDENS["project"] = store / "project"
    return _GOLDENS


def plant(folder: Path, data: bytes) -> None:
    (folder / "bundle.pkl").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["size"] = len(data)
    manifest["bundle"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def copy_golden(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "goldens" / src.name
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- inspect


def test_inspect_example_golden(capsys: pytest.CaptureFixture[str]) -> None:
    folder = EXAMPLE / "goldens" / "sentiment"
    code, out, _ = run(capsys, "inspect", "--root", EXAMPLE, folder)
    assert code == cli.EXIT_OK, out
    lines = out.splitlines()
    assert lines[0] == f"golden: sentiment  ({folder})"
    assert "format version: 1" in lines
    assert any(
        re.match(r"bundle: [\d.]+ KiB, protocol 4, sha256 [0-9a-f]{64} ", ln) for ln in lines
    )
    assert any(ln.endswith("(sha256 verified)") for ln in lines)
    assert "created by: test_models.py::test_sentiment on cpu" in lines
    assert any(re.fullmatch(r"verdict: safe — \d+ global\(s\), all allowed", ln) for ln in lines)
    assert "  package.MyCompoundClass  [project]  safe" in lines
    assert "  torch._utils._rebuild_tensor_v2  [third-party]  safe" in lines
    assert any(
        ln.startswith(
            "  torch.FloatStorage  [third-party]  safe  in nested storage "
            "(torch.storage._load_from_bytes) at byte "
        )
        for ln in lines
    )
    assert any(ln.startswith("  package.MyLayer.forward  (package.py:") for ln in lines)
    assert any(re.fullmatch(r"examples: \d+ recorded", ln) for ln in lines)
    assert "  model.layer.rnn.weight_ih_l0: Parameter float32[192, 32]" in lines
    assert "  model.tokenizer.tokenizer: sentencepiece.SentencePieceProcessor (vocab 100)" in lines
    assert "not listed in the manifest" not in out


def test_inspect_never_unpickles_a_malicious_golden(
    goldens: dict[str, Path], tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_golden(goldens["a"], tmp_path)
    plant(folder, os_system_p2(canary))
    code, out, _ = run(capsys, "inspect", "--root", goldens["project"], folder)
    assert code == cli.EXIT_UNSAFE, out
    assert "(sha256 verified)" in out  # the manifest was updated: only the scan stands in the way
    assert "verdict: UNSAFE — 1 global(s) not on the allowlist" in out
    assert (
        "  os.system  [builtin]  REFUSED (not on the allowlist: standard library code)"
        "  (not listed in the manifest)" in out
    )
    # The manifest's own list is not trusted: what it claims and the bundle lacks is shown.
    assert "  package.MyCompoundClass  listed in the manifest, not in bundle.pkl" in out
    assert "structure:" in out
    assert not canary.exists()


def test_inspect_corrupt_golden(
    goldens: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_golden(goldens["a"], tmp_path)
    bundle = folder / "bundle.pkl"
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0xFF
    bundle.write_bytes(bytes(data))
    code, out, _ = run(capsys, "inspect", "--root", goldens["project"], folder)
    assert code == cli.EXIT_UNREADABLE
    assert "(CORRUPT: bundle.pkl does not match its sha256)" in out


def test_inspect_unreadable_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "goldens" / "g"
    folder.mkdir(parents=True)
    code, out, err = run(capsys, "inspect", folder)
    assert code == cli.EXIT_UNREADABLE
    assert "modelpack: g: CORRUPT GOLDEN — manifest.json is missing" in err
    (folder / "manifest.json").write_text('{"format_version": 7}')
    code, out, err = run(capsys, "inspect", folder)
    assert code == cli.EXIT_UNREADABLE
    assert "modelpack: g: CORRUPT GOLDEN — unknown format version 7" in err
    assert "  fix: upgrade pytest-modelpack" in err


def test_inspect_escapes_control_characters(
    goldens: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest is untrusted text: it must not be able to drive the terminal."""
    folder = copy_golden(goldens["a"], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["structure"] = {"model\x1b[2J": "int = 1\r\x07"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "inspect", "--root", goldens["project"], folder)
    assert code == cli.EXIT_OK, out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "  model\\x1b[2J: int = 1\\r\\x07" in out


# --------------------------------------------------------------------------- diff


def test_diff_identical_goldens(
    goldens: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "diff", goldens["a"], goldens["a_again"])
    assert code == cli.EXIT_OK, out
    assert "no differences in environment, code, globals, structure or examples" in out


def test_diff_other_weights(goldens: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diff", goldens["a"], goldens["seed1"])
    assert code == cli.EXIT_DIFFERENT, out
    lines = out.splitlines()
    assert lines[:2] == [f"a: {goldens['a']}", f"b: {goldens['seed1']}"]
    assert "examples: 4 of 4 shared input(s) give other outputs" in lines
    assert "  expected = a, got = b" in lines
    assert any(ln.startswith("example #0: input ") for ln in lines), out
    assert any(ln.startswith("  output['prediction']") for ln in lines), out
    assert not any(ln.startswith(("structure", "code changed")) for ln in lines), out


def test_diff_structure_and_code(
    goldens: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "diff", goldens["seed1"], goldens["smaller"])
    assert code == cli.EXIT_DIFFERENT, out
    assert "code changed: package.MyLayer.__init__" in out
    assert (
        "structure ~ model.layer.embedding.weight: Parameter float32[100, 32]  ->  "
        "Parameter float32[100, 16]" in out
    )
    assert "structure ~ model.layer.embedding.embedding_dim: int = 32  ->  int = 16" in out


def test_diff_unreadable_golden(
    goldens: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(capsys, "diff", goldens["a"], tmp_path)
    assert code == cli.EXIT_UNREADABLE
    assert "CORRUPT GOLDEN — manifest.json is missing" in err


# --------------------------------------------------------------------------- python -m, for real


def test_python_m_scan(tmp_path: Path, canary: Path) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(os_system_p2(canary))
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_modelpack", "scan", str(good), str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"{good}: safe — " in proc.stdout
    assert f"{bad}: UNSAFE — 1 global(s) not on the allowlist" in proc.stdout
    assert not canary.exists()


def test_scan_cli_never_imports_torch(tmp_path: Path) -> None:
    """``modelpack scan`` of torch pickles (plain, legacy torch.save, torch zip) judges them without
    importing torch: the whole process stays small and fast whatever the file's size."""
    files = [tmp_path / "plain.pkl", tmp_path / "legacy.pt", tmp_path / "zip.pt"]
    model = torch.nn.Linear(8, 4)
    files[0].write_bytes(pickle.dumps(model))
    torch.save(model.state_dict(), files[1], _use_new_zipfile_serialization=False)
    torch.save(model.state_dict(), files[2])
    script = textwrap.dedent(
        f"""
        import runpy, sys
        sys.argv = ["modelpack", "scan", *{[str(f) for f in files]!r}]
        try:
            runpy.run_module("pytest_modelpack", run_name="__main__")
        except SystemExit as exc:
            print("EXIT", exc.code)
        print("HEAVY", sorted(m for m in ("torch", "numpy", "hypothesis") if m in sys.modules))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": safe — ") == 3, proc.stdout
    assert proc.stdout.splitlines()[-2:] == ["EXIT 0", "HEAVY []"], proc.stdout


def test_cli_never_looks_up_a_pickle_global(
    goldens: dict[str, Path], tmp_path: Path, canary: Path
) -> None:
    """An audit hook sees every global any unpickler looks up (pickle.find_class): inspect,
    scan and diff of goldens, safe and malicious, trigger none."""
    evil = copy_golden(goldens["a"], tmp_path)
    plant(evil, os_system_p2(canary))
    script = textwrap.dedent(
        f"""
        import sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(args) if event == "pickle.find_class" else None)
        from pytest_modelpack.cli import main
        root = {str(goldens["project"])!r}
        codes = [
            main(["inspect", "--root", root, {str(goldens["a"])!r}]),
            main(["inspect", "--root", root, {str(evil)!r}]),
            main(["scan", "--root", root, {str(goldens["a"])!r}, {str(evil)!r}]),
            main(["diff", {str(goldens["a"])!r}, {str(goldens["seed1"])!r}]),
        ]
        print("CODES", codes, "FIND_CLASS", seen)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "CODES [0, 1, 1, 1] FIND_CLASS []"
    assert not canary.exists()


def test_loader_does_trigger_the_audit_hook() -> None:
    """Control for the test above: a real (restricted) load does raise pickle.find_class."""
    script = textwrap.dedent(
        """
        import sys, pickle, collections
        from pytest_modelpack.safety import Allowlist
        from pytest_modelpack.safety import loads_bundle
        seen = []
        sys.addaudithook(lambda event, args: seen.append(args) if event == "pickle.find_class" else None)
        loads_bundle(pickle.dumps(collections.OrderedDict(a=1)), Allowlist(None))
        print(seen)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "('collections', 'OrderedDict')" in proc.stdout


def test_scan_survives_a_project_module_that_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A golden naming ``setup.setup`` makes the allowlist import the project's setup.py, whose
    setup() exits on an unknown command line: the name is refused, the scan goes on."""
    (tmp_path / "setup.py").write_text("import sys\nsys.exit('error: invalid command')\n")
    path = tmp_path / "bundle.pkl"
    path.write_bytes(b"\x80\x04\x8c\x05setup\x8c\x05setup\x93.")
    code, out, _ = run(capsys, "scan", "--root", tmp_path, path, path)
    assert code == cli.EXIT_UNSAFE
    assert out.count("  setup.setup (referenced): importing setup failed: SystemExit: ") == 2


def test_scan_a_folder_of_goldens_scans_every_bundle(tmp_path: Path, capsys) -> None:
    shutil.copytree(EXAMPLE / "goldens", tmp_path / "goldens")
    shutil.copy(EXAMPLE / "goldens.trust", tmp_path / "goldens.trust")  # the dill golden's
    (tmp_path / "goldens" / ".sentiment.new-k1ll3d").mkdir()  # a killed regen's leftover: skipped
    code = cli.main(["scan", "--root", str(EXAMPLE), str(tmp_path / "goldens")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "goldens/sentiment/bundle.pkl: safe" in out
    assert "goldens/sentiment_any_text/bundle.pkl: safe" in out
    assert "goldens/sentiment_torch/bundle.pt: safe" in out
    assert "5 file(s): 5 safe, 0 unsafe, 0 unreadable" in out


# ------------------------------------------ issue 22 round 3: any path, said as what it is


def _example(tmp_path: Path, name: str = "sentiment") -> Path:
    return copy_golden(EXAMPLE / "goldens" / name, tmp_path)


def test_inspect_of_a_bundle_that_is_a_symlink_loop_is_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a RuntimeError traceback from Path.resolve() looking for the trust file."""
    golden = _example(tmp_path)
    (golden / "bundle.pkl").unlink()
    (golden / "bundle.pkl").symlink_to("bundle.pkl")
    code, out, err = run(capsys, "inspect", golden)
    assert code == cli.EXIT_UNREADABLE, out + err
    assert "Traceback" not in err
    assert "(GOLDEN I/O ERROR: cannot read " in out and "a loop of symbolic links" in out
    assert "verdict: unreadable — bundle.pkl: cannot read it: a loop of symbolic links" in out
    assert "fix: replace the symlinks on the way to " in out


@pytest.mark.parametrize("errno_name", ["EACCES", "ELOOP", "EIO"])
def test_inspect_and_diff_of_an_unreadable_goldens_folder_is_an_io_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    errno_name: str,
) -> None:
    """Before: goldens/ at mode 000 (or a loop, a failing disk) was "MISSING GOLDEN — no golden
    at goldens/sentiment ... does not exist" (os.path.lexists says False for any error)."""
    import errno
    import os

    golden = _example(tmp_path)
    code = getattr(errno, errno_name)
    real = os.lstat

    def failing(path: object, *args: object, **kwargs: object) -> object:
        if str(path).startswith(str(golden)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "lstat", failing)
    for argv in (["inspect", golden], ["diff", golden, golden]):
        exit_code, out, err = run(capsys, *argv)
        assert exit_code == cli.EXIT_UNREADABLE, out + err
        assert "GOLDEN I/O ERROR — cannot read " in err and errno_name in err, err
        assert "MISSING GOLDEN" not in err and "Traceback" not in err


@pytest.mark.parametrize("what", ["a file", "a symlink to nothing"])
def test_inspect_when_goldens_is_not_a_folder_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    goldens = tmp_path / "goldens"
    if what == "a file":
        goldens.write_text("x")
    else:
        goldens.symlink_to(tmp_path / "gone")
    code, out, err = run(capsys, "inspect", goldens / "sentiment")
    assert code == cli.EXIT_UNREADABLE
    assert "MISSING GOLDEN" not in err, err
    if what == "a file":
        assert "GOLDEN I/O ERROR — cannot read " in err and "ENOTDIR" in err
        assert "a file stands where a folder belongs" in err
    else:
        assert "CORRUPT GOLDEN — " in err and "is a symlink to nothing" in err


def test_scan_of_a_golden_folder_scans_both_bundles_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A torch golden with a harmless bundle.pkl planted beside its bundle.pt: the scan of the
    folder vouched for bundle.pkl alone while the gate loads bundle.pt. Both are scanned."""
    golden = _example(tmp_path, "sentiment_torch")
    (golden / "bundle.pkl").write_bytes(pickle.dumps({"harmless": 1}))
    (golden / "bundle.pt").write_bytes(os_system_p2("echo pwned"))
    code, out, _ = run(capsys, "scan", golden)
    assert code == cli.EXIT_UNSAFE, out
    assert "bundle.pkl: safe" in out and "bundle.pt: UNSAFE" in out


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p.symlink_to(p.name), "cannot read it: a loop of symbolic links (ELOOP"),
        (lambda p: p.symlink_to("gone"), "a symlink to nothing (it points to gone)"),
        (lambda p: p.mkdir(), "not a regular file: a folder"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file: a character device"),
    ],
    ids=["loop", "dangling", "folder", "/dev/zero"],
)
def test_scan_says_what_stands_in_place_of_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, why: str
) -> None:
    """Before: a loop and a dangling link were "no such file", a folder named bundle.pkl was
    looked into for a bundle.pkl/bundle.pkl, /dev/zero "not a regular file"."""
    path = tmp_path / "bundle.pkl"
    make(path)  # type: ignore[operator]
    code, out, _ = run(capsys, "scan", path)
    assert code == cli.EXIT_UNREADABLE, out
    assert out.startswith(f"{path}: unreadable — {why}"), out


def test_scan_goes_on_past_an_argument_it_may_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the first OSError (a goldens/ that cannot be listed, EACCES) ended the whole
    scan with one line naming a bundle.pkl that does not exist, and no errno."""
    import errno
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps([1, 2]))
    listdir, scandir = os.listdir, os.scandir

    def refusing(real: object) -> object:
        def call(path: object = ".") -> object:
            if str(path) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)  # type: ignore[operator]

        return call

    # Path.iterdir lists with os.listdir up to Python 3.12, with os.scandir from 3.13
    monkeypatch.setattr(os, "listdir", refusing(listdir))
    monkeypatch.setattr(os, "scandir", refusing(scandir))
    code, out, err = run(capsys, "scan", locked, good)
    assert code == cli.EXIT_UNREADABLE, out + err
    assert f"{locked}: unreadable — cannot list it: permission denied (EACCES" in out, out
    assert "  fix: give your user read permission on " in out
    assert f"{good}: safe" in out
    assert "2 file(s): 1 safe, 0 unsafe, 1 unreadable" in out
