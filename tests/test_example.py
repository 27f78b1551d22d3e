"""The main job: the example project's committed goldens pass its gate (README command 1)."""

from __future__ import annotations

import shutil

import pytest

from .conftest import EXAMPLE, QUIET


def test_example_project_gate_passes_on_its_committed_goldens(pytester: pytest.Pytester) -> None:
    for item in EXAMPLE.iterdir():
        if item.name in ("__pycache__", ".hypothesis", ".pytest_cache"):
            continue
        target = pytester.path / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy(item, target)
    result = pytester.runpytest(*QUIET, "--modelpack-golden", "--modelpack-device", "cpu")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [
            "sentiment *cpu*golden*passed*",
            "sentiment_any_text *cpu*golden*passed*",
            "sentiment_torch *cpu*golden*passed*",
            "sentiment_dill *cpu*golden*passed*",
            "sentiment_cloudpickle *cpu*golden*passed*",
            "5 golden(s), 5 check(s): 5 passed",
        ]
    )
    # Code drift would fail above; environment drift (another numpy, say) only warns.
    assert "CODE DRIFT" not in result.stdout.str()
