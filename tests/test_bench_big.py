"""The big-golden benchmark runs and prints its table (issue 12). Numbers are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_big.py"
HEADER = "| size | work | by hand | pytest-modelpack | ratio |"


def _bench(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "4M", "--examples", "3", "--recorded", "2", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def _tables(lines: list[str]) -> dict[str, list[str]]:
    """Each serializer's table rows, by its ``## serializer NAME`` heading."""
    tables: dict[str, list[str]] = {}
    name = ""
    for line in lines:
        if line.startswith("## serializer "):
            name = line.split()[2].rstrip(":")
            tables[name] = []
        elif line.startswith("| 4 MiB |"):
            tables[name].append(line)
    return tables


def test_bench_big_prints_the_side_by_side_table() -> None:
    lines = _bench()
    assert HEADER in lines
    rows = _tables(lines)["pickle"]
    assert len(rows) == 4
    assert "--modelpack-regen" in rows[0] and "--modelpack-golden" in rows[1]
    assert "pickle.dump" in rows[0] and "pickle.load" in rows[1]
    assert all("x time" in row and "x peak" in row for row in rows)
    # the 4 MiB embedding is listed in the manifest: the load step splits into the bytes read
    # verified, the scan, the wait for the whole file's sha256 and the build
    assert any(line.startswith("- 4 MiB:") and "sha256 wait" in line for line in lines)
    assert any(line.startswith("- 4 MiB: embedding storage at byte") for line in lines)


def test_bench_big_torch_and_a_serializer_the_plugin_may_refuse() -> None:
    """--serializer torch: torch.save / torch.load(weights_only=False) beside bundle.pt goldens;
    --misaligned leaves torch alone (its zip aligns storages). dill is either measured or, while
    the plugin refuses it (a USAGE ERROR), its by-hand numbers beside "not supported"."""
    lines = _bench("--serializer", "torch,dill", "--misaligned")
    tables = _tables(lines)
    assert list(tables) == ["torch", "dill"]
    torch_rows, dill_rows = tables["torch"], tables["dill"]
    assert len(torch_rows) == 4 and len(dill_rows) == 4
    assert "torch.save" in torch_rows[0] and "--modelpack-regen" in torch_rows[0]
    assert "torch.load" in torch_rows[1] and "--modelpack-golden" in torch_rows[1]
    assert "modelpack scan bundle.pt" in torch_rows[3]
    assert all("x time" in row and "x peak" in row for row in torch_rows)
    assert "dill.dump" in dill_rows[0] and "dill.load" in dill_rows[1]
    refused = ["| not supported |" in row for row in dill_rows]
    assert all(refused) or not any(refused), dill_rows
    if all(refused):
        assert any(line.startswith("not supported: the plugin refused it:") for line in lines)
        assert all(row.split("|")[3].strip().endswith("MB") for row in dill_rows)  # by hand
    else:
        assert all("x time" in row for row in dill_rows)
        assert any("misaligned for float32" in line for line in lines)
