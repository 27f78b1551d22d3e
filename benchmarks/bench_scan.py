"""Benchmark: scanning a ~1 GiB plain-pickled torch model, pytest-modelpack vs picklescan.

    python benchmarks/bench_scan.py                  # 1 GiB: torch.nn.Embedding(262144, 1024)
    python benchmarks/bench_scan.py --size-mib 64    # smaller, for a quick run
    python benchmarks/bench_scan.py --file big.pkl   # reuse a file written by --keep big.pkl

The model is written with ``pickle.dump(model, f)``, exactly like a golden's bundle.pkl: torch puts
each storage in a nested ``torch.storage._load_from_bytes`` payload. Each tool is measured in its
own fresh subprocess, so the numbers are independent:

* time: one scan, wall clock, after the tool's imports and warm-up scans (as in a pytest run,
  where torch is already imported); "cold" is the first scan including the tool's imports;
* tracemalloc peak: Python allocations during a second scan (tracing slows it; not timed);
* RSS delta: peak resident memory during the timed scan (``VmHWM`` from /proc/self/status, reset
  through /proc/self/clear_refs where the kernel allows) minus the resident memory before it.

A second, small file hides ``os.system`` inside a ``_load_from_bytes`` payload after a valid
legacy torch.save header; the last column says whether each tool flags it. picklescan is optional
(``pip install picklescan``); it is not a dependency of pytest-modelpack.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCH_MAGIC = 0x1950A86A20F9469CFC6C


# --------------------------------------------------------------------------- building the files


def build_big(path: Path, size_mib: int) -> None:
    import torch

    rows = max(1, size_mib * 1024 * 1024 // (1024 * 4))
    # zeros, not the default random init: the benchmark scans bytes, their values do not matter.
    model = torch.nn.Embedding(rows, 1024, _weight=torch.zeros(rows, 1024))
    with open(path, "wb") as f:
        pickle.dump(model, f, protocol=4)


def _payload() -> bytes:
    """os.system(...) as a protocol 2 pickle; harmless even if someone did load it."""
    cmd = b"echo modelpack benchmark payload"
    return b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."


def _legacy_stream(object_pickle: bytes) -> bytes:
    """A legacy torch.save stream: valid magic, version and sys-info pickles, then the object."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2}}
    head = pickle.dumps(TORCH_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2)
    return head + object_pickle + pickle.dumps([], 2)


def build_nested(path: Path) -> None:
    """``torch.storage._load_from_bytes(<legacy header + os.system payload>)``, torch's way."""
    lfb = b"\x8c\rtorch.storage\x8c\x10_load_from_bytes\x93"
    data = _legacy_stream(_payload())
    body = lfb + b"B" + len(data).to_bytes(4, "little") + data + b"\x85R"
    path.write_bytes(b"\x80\x04" + body + b".")


# --------------------------------------------------------------------------- measuring (child)


def _status(key: str) -> int:
    """A /proc/self/status value in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _scanner(tool: str):  # noqa: ANN202 - returns (scan, flags_os_system)
    if tool == "modelpack":
        from pytest_modelpack.safety import Allowlist, scan_file

        allowlist = Allowlist(None)

        def scan(path: str):  # noqa: ANN202
            return scan_file(path, allowlist)

        def flags(verdict) -> bool:  # noqa: ANN001
            return any(ref.name == "os.system" for ref, _ in verdict.refused)

        return scan, flags
    from picklescan.scanner import scan_file_path

    def flags_ps(result) -> bool:  # noqa: ANN001
        return result.infected_files > 0 or any(
            (g.module, g.name) == ("os", "system") for g in result.globals
        )

    return scan_file_path, flags_ps


def measure(tool: str, big: str, nested: str, tiny: str) -> dict[str, object]:
    import tracemalloc

    start = time.perf_counter()
    scan, flags = _scanner(tool)
    scan(big)  # cold: the tool's imports (for modelpack: torch, for its built-in allowlist)
    cold = time.perf_counter() - start
    scan(tiny)
    _reset_peak()
    base = _status("VmRSS")
    start = time.perf_counter()
    result = scan(big)
    seconds = time.perf_counter() - start
    rss_delta = max(0, _status("VmHWM") - base)
    tracemalloc.start()
    scan(big)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if tool == "modelpack":
        ok = result.safe
        summary = f"safe, {len(result.globals)} globals" if ok else f"NOT SAFE: {result}"
    else:
        ok = not result.scan_err and result.infected_files == 0
        summary = (
            f"scan_err={result.scan_err}, {len(result.globals)} globals, "
            f"{result.issues_count} issues"
        )
    return {
        "tool": tool,
        "seconds": seconds,
        "cold_seconds": cold,
        "tracemalloc_peak": peak,
        "rss_delta": rss_delta,
        "big_ok": ok,
        "big_summary": summary,
        "nested_flagged": flags(scan(nested)),
    }


# --------------------------------------------------------------------------- driver (parent)


def _run_child(tool: str, big: Path, nested: Path, tiny: Path) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--measure", tool, str(big), str(nested), str(tiny)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tool} measurement failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: object) -> str:
    return f"{int(n) / 2**20:,.1f} MiB"  # type: ignore[call-overload]


def _picklescan_available() -> bool:
    from importlib.util import find_spec

    return find_spec("picklescan") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="model size (default: 1024)")
    parser.add_argument("--file", type=Path, help="scan this existing pickle instead of building")
    parser.add_argument("--keep", type=Path, help="write the built model here and keep it")
    parser.add_argument(
        "--measure", nargs=4, metavar=("TOOL", "BIG", "NESTED", "TINY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure:
        tool, big, nested, tiny = args.measure
        print(json.dumps(measure(tool, big, nested, tiny)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        folder = Path(tmp)
        big = args.file or args.keep or folder / "embedding.pkl"
        if args.file is None:
            print(
                f"building {big}: torch.nn.Embedding({args.size_mib * 256}, 1024), pickle.dump ..."
            )
            start = time.perf_counter()
            build_big(big, args.size_mib)
            print(f"  {_mib(big.stat().st_size)} in {time.perf_counter() - start:.1f} s")
        nested = folder / "nested_payload.pkl"
        build_nested(nested)
        tiny = folder / "tiny.pkl"
        import torch

        tiny.write_bytes(pickle.dumps(torch.nn.Linear(2, 2), protocol=4))
        with open(big, "rb") as f:  # same page-cache state for every tool
            while f.read(1 << 24):
                pass

        tools = ["modelpack"]
        if _picklescan_available():
            tools.append("picklescan")
        rows = [_run_child(tool, big, nested, tiny) for tool in tools]

        size = big.stat().st_size
        print()
        print(f"file: {big.name}, {_mib(size)} ({size:,} bytes)")
        print(f"nested payload file: {nested.stat().st_size} bytes")
        header = (
            "scanner",
            "time",
            "cold (+imports)",
            "tracemalloc peak",
            "RSS delta",
            "big file verdict",
            "nested payload",
        )
        table = [header]
        for row in rows:
            table.append(
                (
                    "pytest-modelpack" if row["tool"] == "modelpack" else "picklescan",
                    f"{row['seconds']:.3f} s",
                    f"{row['cold_seconds']:.2f} s",
                    _mib(row["tracemalloc_peak"]),
                    _mib(row["rss_delta"]),
                    str(row["big_summary"]),
                    "flagged" if row["nested_flagged"] else "MISSED",
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if "picklescan" not in tools:
            print("picklescan not installed (pip install picklescan to compare)")
        if args.keep is None and args.file is None:
            os.unlink(big)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
