"""End to end: the three modes on a user project built from the seed's model (issue 2)."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from .conftest import QUIET, SeedProject, is_hypothesis_cache

CUDA = torch.cuda.is_available()


def test_round_trip_passes_without_goldens_and_writes_nothing(seed_project: SeedProject) -> None:
    before = seed_project.snapshot()
    result = seed_project.run("-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_models.py::test_sentiment?cpu? PASSED*",
            "*= modelpack =*",
            "golden*device*mode*verdict*examples*bundle*time*",
            "sentiment*cpu*roundtrip*passed*5*",
        ]
    )
    assert seed_project.snapshot() == before
    assert not seed_project.golden().exists()


@pytest.mark.skipif(CUDA, reason="checks the CPU-only skip line")
def test_unavailable_cuda_is_a_visible_skip(seed_project: SeedProject) -> None:
    result = seed_project.run("-rs")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "skipped: 1 check(s) — cuda: torch.cuda.is_available() is False",
            "SKIPPED*cuda: torch.cuda.is_available() is False",
        ]
    )
    result.assert_outcomes(passed=1, skipped=1)


def test_regen_creates_the_golden_files(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["sentiment*cpu*regen*created*4*KiB*"])
    folder = seed_project.golden()
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.pkl",
        "examples.json",
        "manifest.json",
    ]
    manifest = seed_project.manifest()
    assert manifest["format_version"] == 1
    assert manifest["bundle"]["size"] == (folder / "bundle.pkl").stat().st_size
    assert manifest["examples"]["count"] == 4
    assert manifest["created_by"] == {"test": "test_models.py::test_sentiment", "device": "cpu"}
    kinds = {g["global"]: g["kind"] for g in manifest["globals"]}
    assert kinds["package.MyCompoundClass"] == "project"
    assert kinds["torch._utils._rebuild_tensor_v2"] == "third-party"
    assert manifest["structure"]["model.layer.rnn.weight_ih_l0"].startswith("Parameter float32[")
    assert manifest["structure"]["model.tokenizer.tokenizer"].endswith("(vocab 100)")
    examples = json.loads((folder / "examples.json").read_text())
    assert len(examples["examples"]) == 4
    assert all(isinstance(e["input"], str) for e in examples["examples"])
    assert {"decision", "prediction"} <= set(examples["examples"][0]["output"])
    # The bundle is what production would ship: plain pickle.load gives a working model.
    assert (folder / "bundle.pkl").read_bytes()[:2] == b"\x80\x04"


def test_regen_twice_is_unchanged_and_rewrites_nothing(regenerated: SeedProject) -> None:
    before = regenerated.snapshot()
    result = regenerated.run("--modelpack-regen")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["sentiment*cpu*regen*unchanged*"])
    assert regenerated.snapshot() == before


def test_gate_passes_on_a_clean_tree_and_writes_nothing(regenerated: SeedProject) -> None:
    before = regenerated.snapshot()
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    # 5 round-trip + 4 golden replays + 5 golden-vs-live + 4 live replays
    result.stdout.fnmatch_lines(["sentiment*cpu*golden*passed*18*KiB*"])
    assert regenerated.snapshot() == before


#: Counts every file opened under goldens/ (the ``open`` audit event: open(), io.open, os.open)
#: and writes the counts when the session ends. In a subprocess: an audit hook stays for good.
OPENS_CONFTEST = """
import json, os, sys
from pathlib import Path

OPENS = {}
GOLDENS = str(Path(__file__).with_name("goldens").resolve()) + os.sep


def _audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(GOLDENS):
            OPENS[os.path.relpath(path, GOLDENS)] = OPENS.get(os.path.relpath(path, GOLDENS), 0) + 1


sys.addaudithook(_audit)


def pytest_sessionfinish(session):
    Path(__file__).with_name("opens.json").write_text(json.dumps(OPENS))
"""


def test_the_gate_opens_each_golden_file_once(regenerated: SeedProject) -> None:
    """Issue 19: the manifest read to route the prefetch is the one judged, the bundle mapped
    for the hash is the one loaded (its misaligned storages copied through the same descriptor),
    examples.json is verified and parsed from one read."""
    conftest = regenerated.path / "conftest.py"
    conftest.write_text(conftest.read_text() + OPENS_CONFTEST)
    an_hour_ago = time.time() - 3600  # committed long before the run (not "racy")
    os.utime(regenerated.golden() / "manifest.json", (an_hour_ago, an_hour_ago))
    result = regenerated.pytester.runpytest_subprocess(*QUIET, "--modelpack-golden", timeout=300)
    assert result.ret == 0, result.stdout.str()
    opens = json.loads((regenerated.path / "opens.json").read_text())
    assert opens == {
        "sentiment/manifest.json": 1,
        "sentiment/bundle.pkl": 1,
        "sentiment/examples.json": 1,
    }


def test_hypothesis_caches_persist_and_a_second_gate_writes_nothing(
    seed_project: SeedProject,
) -> None:
    """Issue 12: Hypothesis' one-time caches (the unicode charmap st.text builds, the constants
    it collects from the project) are kept where Hypothesis keeps them for any project
    (.hypothesis/ in the working directory) and reused by the next run; the gate itself writes
    nothing, and there is no example database."""
    seed_project.edit(
        "test_models.py",
        "inputs=sentences()",
        "inputs=sentences() | __import__('hypothesis').strategies.text(max_size=12)",
    )
    assert seed_project.run("--modelpack-regen").ret == 0

    def files() -> dict[str, bytes]:
        return {
            str(p.relative_to(seed_project.path)): p.read_bytes()
            for p in seed_project.path.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and p.name not in ("stdout", "stderr")  # pytester's capture of the subprocess
            and not is_hypothesis_cache(p.relative_to(seed_project.path))
        }

    first = seed_project.pytester.runpytest_subprocess(*QUIET, "--modelpack-golden")
    assert first.ret == 0, first.stdout.str()
    home = seed_project.path / ".hypothesis"
    charmaps = list((home / "unicode_data").rglob("charmap.json.gz"))
    assert charmaps, sorted(files())
    built = charmaps[0].stat().st_mtime_ns
    # The constants Hypothesis collects from the project are computed lazily, only when a draw
    # asks for one (a chance event under the derandomized seed): kept and unchanged if written.
    constants = sorted((home / "constants").glob("*")) if (home / "constants").exists() else []
    kept = {p: p.stat().st_mtime_ns for p in constants}
    before = files()
    second = seed_project.pytester.runpytest_subprocess(*QUIET, "--modelpack-golden")
    assert second.ret == 0, second.stdout.str()
    assert files() == before, "the second gate run wrote something besides Hypothesis' caches"
    assert charmaps[0].stat().st_mtime_ns == built, "the charmap was rebuilt"
    assert {p: p.stat().st_mtime_ns for p in constants} == kept, "constants were rewritten"
    assert not (home / "examples").exists()


def test_changed_weights_fail_the_gate_then_regen_heals(regenerated: SeedProject) -> None:
    regenerated.edit("conftest.py", "SEED = 0", "SEED = 1")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: OUTPUT MISMATCH — the live model disagrees with the golden",
            "  input (minimal, found by Hypothesis): *",
            "  expected = golden, got = live model",
            "  output*: expected *, got *",
            "  state diff (golden vs live model): * paths differ, * equal",
            "    model.layer.embedding.weight: max abs diff * (shape 100×32)",
            "  fix: make the fixture build the same model in every process: *",
            "       then, or if the fixture was meant to build a new model: "
            "pytest --modelpack-regen test_models.py::test_sentiment",
            "sentiment*cpu*golden*failed*OUTPUT MISMATCH*",
        ]
    )
    healed = regenerated.run("--modelpack-regen")
    assert healed.ret == 0
    healed.stdout.fnmatch_lines(["sentiment*cpu*regen*changed*outputs of */4 examples*"])
    assert regenerated.run("--modelpack-golden").ret == 0


def test_minimal_input_is_shrunk(regenerated: SeedProject) -> None:
    """Hypothesis shrinks: the reported input is one corpus word, not a long sentence."""
    regenerated.edit("conftest.py", "SEED = 0", "SEED = 1")
    result = regenerated.run("--modelpack-golden")
    line = next(ln for ln in result.stdout.lines if "input (minimal, found by Hypothesis)" in ln)
    shown = line.split(": ", 1)[1]
    assert " " not in shown.strip("'\""), line


def test_missing_golden_fails_the_gate_with_the_regen_command(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: MISSING GOLDEN — no golden at *goldens/sentiment",
            "  fix: create it with: pytest --modelpack-regen test_models.py::test_sentiment*",
        ]
    )
    assert not seed_project.golden().exists()


def test_golden_and_regen_together_is_a_usage_error(seed_project: SeedProject) -> None:
    result = seed_project.run("--modelpack-golden", "--modelpack-regen")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--modelpack-golden and --modelpack-regen cannot be used together*"]
    )


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            {"extra": 'modelpack_devices = "cpu tpu"'},
            "*modelpack_devices: unknown device(s) tpu; accepted: cpu, cuda*",
        ),
        ({"examples": "many"}, "*modelpack_examples: expected a whole number >= 1, got 'many'*"),
        ({"extra": 'modelpack_rtol = "-1"'}, "*modelpack_rtol: expected a number >= 0*"),
        (
            {"extra": 'modelpack_drift = "ignore"'},
            "*modelpack_drift: expected one of fail, warn, got 'ignore'*",
        ),
    ],
)
def test_bad_ini_values_are_usage_errors(
    seed_project: SeedProject, ini: dict, message: str
) -> None:
    seed_project.ini(**ini)
    result = seed_project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_marker_overrides_devices_and_examples(seed_project: SeedProject) -> None:
    seed_project.write(
        "test_models.py",
        """\
import pytest
from strategies import sentences


@pytest.mark.modelpack(devices="cpu", examples=3)
def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences())
""",
    )
    result = seed_project.run("-v")
    assert result.ret == 0
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sentiment*cpu*roundtrip*passed*3*"])


def test_bad_marker_is_a_usage_error(seed_project: SeedProject) -> None:
    seed_project.write(
        "test_models.py",
        """\
import pytest
from strategies import sentences


@pytest.mark.modelpack(exampels=3)
def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, inputs=sentences())
""",
    )
    result = seed_project.run()
    # Raised while collecting: pytest reports it as a collection error of that module.
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "E   pytest.UsageError: test_models.py::test_sentiment: @pytest.mark.modelpack: unknown modelpack setting(s) exampels; accepted: devices, examples*"
        ]
    )


def test_inputs_must_be_a_strategy(seed_project: SeedProject) -> None:
    seed_project.write(
        "test_models.py",
        """\
def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, inputs=["lorem ipsum"])
""",
    )
    result = seed_project.run()
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: test_sentiment: USAGE ERROR — inputs= must be a Hypothesis strategy*",
            "  fix: pass e.g. inputs=st.text(min_size=1); for fixed inputs use st.sampled_from(*",
        ]
    )


def test_default_name_is_the_test_name_and_duplicates_fail(seed_project: SeedProject) -> None:
    seed_project.write(
        "test_models.py",
        """\
from strategies import sentences


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, inputs=sentences())


def test_again(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="test_sentiment", inputs=sentences())
""",
    )
    result = seed_project.run("--modelpack-device", "cpu")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*modelpack: test_sentiment: DUPLICATE GOLDEN — two tests write the golden 'test_sentiment'",
            "*already claimed by: test_models.py::test_sentiment",
            "  fix: give each check its own name=*",
        ]
    )


def test_json_report(regenerated: SeedProject) -> None:
    result = regenerated.run("--modelpack-golden", "--modelpack-report", "out/report.json")
    assert result.ret == 0
    report = json.loads((regenerated.path / "out" / "report.json").read_text())
    assert report["format_version"] == 1
    (check,) = report["checks"]
    assert check["name"] == "sentiment"
    assert check["verdict"] == "passed"
    assert check["mode"] == "golden"
    assert check["examples"] == 18


def test_xdist_merges_rows_into_one_summary(regenerated: SeedProject) -> None:
    pytest.importorskip("xdist")
    regenerated.write(
        "test_models.py",
        """\
from hypothesis import strategies as st
from strategies import sentences


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences())


def test_other(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="other", inputs=st.text(min_size=1, max_size=8))
""",
    )
    result = regenerated.run("-n", "2", "--modelpack-regen", "--modelpack-device", "cpu")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [
            "other*cpu*regen*created*",
            "sentiment*cpu*regen*unchanged*",
            "2 golden(s), 2 check(s): 1 created, 1 unchanged",
        ]
    )


def test_xdist_catches_duplicate_names_across_workers(seed_project: SeedProject) -> None:
    pytest.importorskip("xdist")
    seed_project.write(
        "test_models.py",
        """\
from strategies import sentences


def test_one(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="shared", inputs=sentences())


def test_two(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="shared", inputs=sentences())
""",
    )
    result = seed_project.run("-n", "2", "--modelpack-device", "cpu")
    assert result.ret == 1, result.stdout.str()
    # On one worker the second test fails at once; on two, the controller's merge catches it.
    out = result.stdout.str()
    assert "modelpack: shared: DUPLICATE GOLDEN — two tests write the golden 'shared'" in out or (
        "error: DUPLICATE GOLDEN — " in out
        and "is claimed by test_models.py::test_one, test_models.py::test_two" in out
    )
