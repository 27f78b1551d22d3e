"""Unit tests for the pure core: options, structure trees, the report, errors."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_modelpack import errors
from pytest_modelpack.options import (
    INI_DEVICES,
    Settings,
    parse_devices,
    settings_from_ini,
)
from pytest_modelpack.report import Report, format_size
from pytest_modelpack.walk import diff_trees, structure_tree


def test_settings_defaults_from_empty_ini() -> None:
    settings = settings_from_ini({}, "roundtrip", None)
    assert settings == Settings()
    assert settings.devices == ("cpu", "cuda")


def test_device_flag_overrides_ini() -> None:
    settings = settings_from_ini({INI_DEVICES: "cpu cuda"}, "golden", "cuda:1, cpu")
    assert settings.devices == ("cuda:1", "cpu")


@pytest.mark.parametrize("value", ["", "tpu", "cpu gpu", "cuda:x"])
def test_bad_devices_name_what_is_accepted(value: str) -> None:
    with pytest.raises(ValueError, match="accepted: cpu, cuda, cuda:N, mps"):
        parse_devices(value, "modelpack_devices")


def test_marker_override_validates_like_ini() -> None:
    base = Settings()
    assert base.override({"examples": 3, "rtol": 0.1}, "t").examples == 3
    assert base.override({"dir": "gold"}, "t").golden_dir == "gold"
    with pytest.raises(ValueError, match="unknown modelpack setting"):
        base.override({"exampels": 3}, "t")
    with pytest.raises(ValueError, match="expected a whole number >= 1"):
        base.override({"recorded": 0}, "t")
    with pytest.raises(ValueError, match="expected one of fail, warn"):
        base.override({"drift": "maybe"}, "t")


class Plain:
    def __init__(self) -> None:
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 2))
        self.labels = ["a", "b"]
        self.config = {"vocab_size": 100, "name": "x" * 200}
        self.alias = self.labels


def test_structure_tree_lists_paths_types_and_shapes() -> None:
    tree = structure_tree(Plain())
    assert tree["model"] == f"{__name__}.Plain"
    assert tree["model.layer"] == "torch.nn.modules.container.Sequential (nn.Module)"
    assert tree["model.layer.0.weight"] == "Parameter float32[2, 4]"
    assert tree["model.layer.0.in_features"] == "int = 4"
    assert tree["model.labels[1]"] == "str = 'b'"
    assert tree["model.config['vocab_size']"] == "int = 100"
    assert tree["model.config['name']"] == "str (len 200)"
    assert tree["model.alias"] == "same object as model.labels"
    json.dumps(tree)  # the manifest stores it as is


def test_diff_trees_names_missing_changed_and_new_paths() -> None:
    before = {"model": "A", "model.f": "function x", "model.w": "Tensor float32[2]"}
    after = {"model": "A", "model.w": "Tensor float32[3]", "model.g": "int = 1"}
    assert diff_trees(before, after) == [
        "- model.f: function x  (missing)",
        "~ model.w: Tensor float32[2]  ->  Tensor float32[3]",
        "+ model.g: int = 1  (new)",
    ]


def row(name: str, device: str = "cpu", verdict: str = "passed", nodeid: str | None = None) -> dict:
    return {
        "name": name,
        "device": device,
        "mode": "golden",
        "verdict": verdict,
        "nodeid": nodeid or f"test_m.py::test_{name}[{device}]",
        "golden": f"/p/goldens/{name}",
        "examples": 10,
        "bundle_size": 2048,
        "seconds": 0.5,
        "detail": "",
        "warnings": [],
    }


def test_report_lines_and_totals() -> None:
    report = Report()
    report.merge([row("b"), row("a", verdict="failed")])
    report.skips.append({"nodeid": "x", "device": "cuda", "reason": "cuda: nope"})
    lines = report.lines()
    assert lines[0].split() == ["golden", "device", "mode", "verdict", "examples", "bundle", "time"]
    assert lines[1].split()[:4] == ["a", "cpu", "golden", "failed"]
    assert "2.0 KiB" in lines[2]
    assert "2 golden(s), 2 check(s): 1 failed, 1 passed" in lines
    assert "skipped: 1 check(s) — cuda: nope" in lines
    assert report.failed()


def test_report_catches_duplicate_names_across_workers() -> None:
    report = Report()
    report.merge(
        [
            row("a", nodeid="t.py::test_one[cpu]"),
            row("a", device="cuda", nodeid="t.py::test_one[cuda]"),
        ]
    )
    assert report.duplicate_names() == []
    report.merge([row("a", nodeid="t.py::test_two[cpu]")])
    assert report.duplicate_names() == [
        "DUPLICATE GOLDEN — /p/goldens/a is claimed by t.py::test_one, t.py::test_two; "
        "give each check its own name=..."
    ]


def test_report_json_round_trips(tmp_path) -> None:
    report = Report()
    report.add(row("a"))
    path = tmp_path / "deep" / "r.json"
    report.write(path)
    assert json.loads(path.read_text()) == report.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left


@pytest.mark.parametrize(
    ("size", "text"), [(None, "-"), (12, "12 B"), (2048, "2.0 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_format_size(size, text) -> None:
    assert format_size(size) == text


def test_errors_render_headline_detail_fix() -> None:
    error = errors.CodeDrift(
        "1 class changed", name="sentiment", detail=["a", "b\nc"], fix="revert\nor regen"
    )
    assert error.render().splitlines() == [
        "modelpack: sentiment: CODE DRIFT — 1 class changed",
        "  a",
        "  b",
        "  c",
        "  fix: revert",
        "       or regen",
    ]
    unnamed = errors.MissingGolden("none")
    assert unnamed.with_name("x").headline == "modelpack: x: MISSING GOLDEN — none"


def test_plugin_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_modelpack, pytest_modelpack.plugin;"
        "print([m for m in ('torch', 'hypothesis', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
