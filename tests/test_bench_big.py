"""The big-golden benchmark runs and prints its table (issue 12). Numbers are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_big.py"


def test_bench_big_prints_the_side_by_side_table() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "4M", "--examples", "3", "--recorded", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "| size | work | by hand | pytest-modelpack | ratio |" in lines
    rows = [line for line in lines if line.startswith("| 4 MiB |")]
    assert len(rows) == 4
    assert "--modelpack-regen" in rows[0] and "--modelpack-golden" in rows[1]
    assert all("x time" in row and "x peak" in row for row in rows)
    # the 4 MiB embedding is listed in the manifest: the load step splits into the bytes read
    # verified, the scan, the wait for the whole file's sha256 and the build
    assert any(line.startswith("- 4 MiB:") and "sha256 wait" in line for line in lines)
