"""CI integration (issue 14): unused goldens, JUnit properties, the HTML report, the workflow
recipe and the pre-commit hook — end to end, as a user's CI sees them."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from pytest_modelpack.compare import compared
from pytest_modelpack.report.unused import find_unused, not_judged_reason

from .conftest import SeedProject

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example_project"


def _copy_golden(project: SeedProject, new: str) -> None:
    shutil.copytree(project.golden("sentiment"), project.golden(new))


# ------------------------------------------------------------------------------- unused goldens


def test_unused_golden_fails_a_full_gate_run_and_filtered_runs_do_not_judge(
    regenerated: SeedProject,
) -> None:
    _copy_golden(regenerated, "old_model")
    (regenerated.path / "goldens" / "notes").mkdir()  # not a golden: no manifest, no bundle
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "sentiment*cpu*golden*passed*",
            "modelpack: old_model: UNUSED GOLDEN — no check claimed goldens/old_model in this "
            "full gate run",
            "  folder: goldens/old_model (manifest.json, bundle.pkl)",
            "  checks in this run claimed: sentiment",
            "  fix: delete it: git rm -r goldens/old_model",
            '       or claim it: modelpack.check(..., name="old_model") in the test that should '
            "check it",
            "unused goldens: 1 — the run fails (modelpack_unused = fail; fail, warn or ignore)",
            "*1 passed*",
        ]
    )
    assert "notes" not in result.stdout.str()

    for args, why in (
        (("-k", "sentiment"), "filtered run (-k)"),
        (("test_models.py::test_sentiment",), "filtered run (node ids)"),
        (("--deselect", "test_models.py::test_sentiment[cuda]"), "filtered run (--deselect)"),
    ):
        result = regenerated.run("--modelpack-golden", *args)
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines([f"unused goldens: not judged: {why}"])
        assert "UNUSED GOLDEN" not in result.stdout.str()

    # The default round-trip run never judges goldens at all.
    result = regenerated.run()
    assert result.ret == 0
    assert "unused goldens" not in result.stdout.str()


def test_a_renamed_golden_names_the_test_that_should_claim_it(regenerated: SeedProject) -> None:
    regenerated.edit("test_models.py", 'name="sentiment"', 'name="sentiment_v2"')
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment_v2: MISSING GOLDEN*",
            "modelpack: sentiment: UNUSED GOLDEN — no check claimed goldens/sentiment*",
            "  checks in this run claimed: sentiment_v2",
            "  fix: delete it: git rm -r goldens/sentiment",
            "       or, if test_models.py::test_sentiment is the renamed test that should claim "
            "it: git mv goldens/sentiment goldens/sentiment_v2",
        ]
    )


def test_unused_policy_warn_and_ignore(regenerated: SeedProject) -> None:
    _copy_golden(regenerated, "old_model")
    regenerated.ini(extra='modelpack_unused = "warn"')
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "modelpack: old_model: UNUSED GOLDEN*",
            "unused goldens: 1 — a warning, the run does not fail (modelpack_unused = warn*",
        ]
    )
    regenerated.ini(extra='modelpack_unused = "ignore"')
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0
    assert "UNUSED" not in result.stdout.str()
    regenerated.ini(extra='modelpack_unused = "sometimes"')
    result = regenerated.run("--modelpack-golden")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*modelpack_unused: expected one of fail, warn, ignore, got 'sometimes'*"]
    )


def test_a_skipped_test_keeps_its_golden_and_a_marker_dir_counts(
    regenerated: SeedProject,
) -> None:
    """A test that never reaches check() (skipped) is not blamed for its golden, as in syrupy;
    a golden folder named by a marker's dir= is searched too."""
    marker_dir = regenerated.path / "more_goldens"
    marker_dir.mkdir()
    shutil.copytree(regenerated.golden("sentiment"), marker_dir / "stale")
    regenerated.write(
        "test_more.py",
        "import pytest\n"
        "from strategies import sentences\n\n\n"
        "@pytest.mark.modelpack(dir='more_goldens')\n"
        "def test_other(modelpack, sentiment_model):\n"
        "    pytest.skip('not today')\n",
    )
    shutil.copytree(regenerated.golden("sentiment"), marker_dir / "test_other")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["modelpack: stale: UNUSED GOLDEN — no check claimed more_goldens/stale*"]
    )
    assert "test_other: UNUSED" not in result.stdout.str()


def test_unused_goldens_are_merged_across_xdist_workers(regenerated: SeedProject) -> None:
    _copy_golden(regenerated, "old_model")
    result = regenerated.run("--modelpack-golden", "-n", "2")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["modelpack: old_model: UNUSED GOLDEN*", "unused goldens: 1*"])
    assert "sentiment: UNUSED" not in result.stdout.str()


def test_not_judged_reason() -> None:
    root = Path("/p")
    full = dict(
        filters=[],
        args=["/p"],
        roots=[root],
        invocation_dir=root,
        selected=3,
        deselected=0,
        finished=3,
    )
    assert not_judged_reason(**full) is None
    assert not_judged_reason(**{**full, "args": ["."]}) is None
    assert not_judged_reason(**{**full, "args": ["/"]}) is None
    assert not_judged_reason(**{**full, "filters": ["--lf"]}) == "filtered run (--lf)"
    assert "node ids" in str(not_judged_reason(**{**full, "args": ["/p/t.py::test_a"]}))
    assert "narrower" in str(not_judged_reason(**{**full, "args": ["/p/tests/test_a.py"]}))
    assert "2 test(s) deselected" in str(not_judged_reason(**{**full, "deselected": 2}))
    assert "2 of 3" in str(not_judged_reason(**{**full, "finished": 2}))


def test_find_unused_only_counts_golden_looking_folders(tmp_path: Path) -> None:
    goldens = tmp_path / "goldens"
    for name, files in (("a", ["manifest.json"]), ("b", ["bundle.pkl"]), ("c", ["x.txt"])):
        (goldens / name).mkdir(parents=True)
        for f in files:
            (goldens / name / f).write_text("{}")
    (goldens / "d").mkdir()
    (goldens / "d" / "manifest.json").write_text("{}")
    found = find_unused(
        [str(goldens), str(tmp_path / "missing")],
        [str(goldens / "a")],
        [str(tmp_path / "x" / ".." / "goldens" / "d")],
    )
    assert [p.name for p in found] == ["b"]


# ------------------------------------------------------------------------------ JUnit XML


def _properties(xml: Path) -> dict[str, dict[str, str]]:
    cases = {}
    for case in ET.parse(xml).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases[case.get("name")] = props
    return cases


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_junit_xml_carries_modelpack_properties(regenerated: SeedProject, xdist: tuple) -> None:
    regenerated.edit("package.py", "[:, -1, :]", "[:, 0, :]")  # an output mismatch on the gate
    xml = regenerated.path / "junit.xml"
    result = regenerated.run("--modelpack-golden", f"--junitxml={xml}", *xdist)
    assert result.ret == 1
    props = _properties(xml)["test_sentiment[cpu]"]
    assert props["modelpack.golden"] == "sentiment"
    assert props["modelpack.golden_path"] == "goldens/sentiment"
    assert props["modelpack.device"] == "cpu"
    assert props["modelpack.mode"] == "golden"
    assert props["modelpack.verdict"] == "failed"
    assert props["modelpack.kind"] in ("CODE DRIFT", "OUTPUT MISMATCH")
    assert (
        int(props["modelpack.bundle_size"]) == (regenerated.golden() / "bundle.pkl").stat().st_size
    )
    assert int(props["modelpack.examples"]) >= 1
    assert float(props["modelpack.seconds"]) > 0


# ------------------------------------------------------------------------------ error metrics


def test_error_metrics_over_nested_outputs() -> None:
    def error_metrics(expected, got, **kw):  # one walk gives the verdict and the metrics
        return compared(expected, got, exact=kw.pop("exact", False), **kw).metrics

    shared = torch.tensor([1.0, 2.0])
    expected = {"a": [shared, shared], "b": 2.0, "s": "x", "n": 3}
    got = {"a": [shared + torch.tensor([0.0, 1e-5]), shared], "b": 2.0, "s": "y", "n": 3}
    m = error_metrics(expected, got)
    assert m.max_abs == pytest.approx(1e-5, rel=1e-2)
    assert m.max_rel == pytest.approx(5e-6, rel=1e-2)
    assert m.rtol == 1.3e-6 and m.atol == 1e-5  # float32's torch.testing default
    assert 0.7 < m.used < 1.0  # a pass, close to the line
    assert error_metrics(1.0, 1.5, rtol=0.1, atol=0.0).used == pytest.approx(5.0)
    assert error_metrics(torch.tensor([1.0]), torch.tensor([1.0]), exact=True).used == 0.0
    assert error_metrics(torch.tensor([1.0]), torch.tensor([2.0]), exact=True).used == math.inf
    nan = float("nan")
    assert error_metrics(torch.tensor([nan]), torch.tensor([nan])).max_abs == 0.0
    loop: list = [1.0]
    loop.append(loop)
    assert error_metrics(loop, loop).max_abs == 0.0  # a cycle is walked once


# ------------------------------------------------------------------------------ pre-commit hook


def _hook() -> dict:
    text = (REPO / ".pre-commit-hooks.yaml").read_text()
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: cannot parse the hook file")
    hooks = yaml.safe_load(text)
    return next(h for h in hooks if h["id"] == "modelpack-scan")


def test_pre_commit_hook_scans_staged_pickles(tmp_path: Path) -> None:
    import re
    import shlex

    hook = _hook()
    assert hook["language"] == "python"
    pattern = re.compile(hook["files"])
    assert all(pattern.search(f"m.{ext}") for ext in ("pkl", "pt", "pth", "bin"))
    assert not pattern.search("model.py")
    safe = tmp_path / "safe.pkl"
    safe.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    unsafe = tmp_path / "evil.pt"
    unsafe.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    # pre-commit runs the entry with the staged file names appended; `modelpack` is the console
    # script of this package, run here as `python -m pytest_modelpack` (the same main()).
    entry = shlex.split(hook["entry"])
    assert entry[0] == "modelpack"
    command = [sys.executable, "-m", "pytest_modelpack", *entry[1:], *hook.get("args", [])]
    ok = subprocess.run([*command, str(safe)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([*command, str(safe), str(unsafe)], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "os.system" in bad.stdout or "posix.system" in bad.stdout


# ------------------------------------------------------------------------------ workflow recipe


def test_workflow_recipe_runs_the_gate_and_uploads_the_reports() -> None:
    path = EXAMPLE / ".github" / "workflows" / "modelpack.yml"
    text = path.read_text()
    try:
        import yaml
    except ImportError:  # a plain-text check without PyYAML
        assert "pytest --modelpack-golden" in text and "upload-artifact" in text
        return
    workflow = yaml.safe_load(text)
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs
    gate = next(s for s in steps if "--modelpack-golden" in s.get("run", ""))
    for flag in (
        "--modelpack-report modelpack.json",
        "--modelpack-html modelpack.html",
        "--junitxml junit.xml",
    ):
        assert flag in gate["run"]
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    for name in ("modelpack.json", "modelpack.html", "junit.xml"):
        assert name in upload["with"]["path"]


# ------------------------------------------------------------------------------ HTML report


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed: apt-get install chromium to check the HTML report")


def _browser(*args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_a_headless_browser(regenerated: SeedProject) -> None:
    # Tolerate the drift (inline pytester runs inherit this repository's warnings-as-errors).
    regenerated.ini(
        extra='modelpack_drift = "warn"\n'
        'filterwarnings = ["default::pytest_modelpack.warnings.ModelpackWarning"]'
    )
    regenerated.edit("package.py", "[:, -1, :]", "[:, -1, :] * 1.001")
    html = regenerated.path / "report.html"
    result = regenerated.run("--modelpack-golden", f"--modelpack-html={html}")
    assert result.ret == 1
    text = html.read_text()
    # Self-contained: nothing is fetched (no src/href to anything, a CSP forbidding it anyway).
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text
    assert "default-src 'none'" in text
    dom = _browser("--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert "sentiment [cpu]" in dom.stdout
    assert "OUTPUT MISMATCH" in dom.stdout
    assert "fix: revert the change, or accept it with: pytest --modelpack-regen" in dom.stdout
    assert "CODE DRIFT tolerated" in dom.stdout
    assert "reloaded vs live — 5 input(s), exact: every output identical" in dom.stdout
    assert "golden vs recorded examples" in dom.stdout and "of the tolerance" in dom.stdout
    assert dom.stdout.count("<svg") >= 4  # two panels per comparison stage
    assert 'class="bad"' in dom.stdout  # the failing input, plotted outside the tolerance
    assert "structure tree" in dom.stdout
    shot = regenerated.path / "shot.png"
    done = _browser(
        "--hide-scrollbars", "--window-size=900,900", f"--screenshot={shot}", html.as_uri()
    )
    assert done.returncode == 0, done.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_html_report_escapes_what_it_quotes(tmp_path: Path) -> None:
    from pytest_modelpack.report import Report
    from pytest_modelpack.report.html import render_html

    evil = "<script>alert(1)</script>"
    golden = tmp_path / "goldens" / "m"
    golden.mkdir(parents=True)
    entry = {"file": "bundle.pkl", "size": 1, "sha256": "0" * 64}
    manifest = {
        "format": "pytest-modelpack golden",
        "format_version": 1,
        "name": "m",
        "bundle": {**entry, "protocol": 4},
        "examples": {**entry, "count": 1},
        "created_by": {"test": evil, "device": "cpu"},
        "environment": {"torch": evil},
        "globals": [],
        "code": {},
        "structure": {"model": evil},
    }
    (golden / "manifest.json").write_text(json.dumps(manifest))
    report = Report()
    report.add(
        {
            "name": "m",
            "device": "cpu",
            "mode": "golden",
            "verdict": "failed",
            "nodeid": "t.py::test_m[cpu]",
            "golden": str(golden),
            "examples": 1,
            "bundle_size": 10,
            "seconds": 0.1,
            "headline": f"OUTPUT MISMATCH — {evil}",
            "error_detail": [f"input: {evil!r}", "+ added", "- removed"],
            "fix": evil,
            "warnings": [evil],
            "state_diff": [f"model.w: {evil}"],
            "comparisons": [
                {
                    "stage": evil,
                    "exact": False,
                    "rtol": 0.1,
                    "atol": 0.1,
                    "inputs": 2,
                    "points": [[0.01, 0.02, 0.1], [1.0, 2.0, 9.0]],
                }
            ],
        }
    )
    page = render_html(report)
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 7
    assert "state diff" in page and '<span class="add">+ added</span>' in page
    assert "worst input used 900% of the tolerance" in page


@pytest.mark.parametrize("flag", ["--modelpack-report", "--modelpack-html"])
def test_an_unwritable_report_path_is_a_modelpack_error(seed_project, flag: str) -> None:
    (seed_project.path / "reports").mkdir()
    result = seed_project.run(flag, "reports")  # a folder where the report file should go
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "error: modelpack: REPORT I/O ERROR — cannot write reports: Is a directory",
            f"  {flag} reports",
            f"  fix: pass {flag} a file path in a folder you can write to (not a folder itself)",
        ]
    )
    assert "Traceback" not in result.stdout.str()
