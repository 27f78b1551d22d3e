"""How long does fingerprinting the example model's code take? (issue 4: well under 50 ms)

Builds the example project's model, pickles it, lists the globals the pickle references (the
scanner's ``iter_globals``, as regen and the gate do) and times:

* ``fingerprint_model`` cold: the first call in the process (imports of dis/allowlist, linecache
  filling, the allowlist's first project lookups);
* ``fingerprint_model`` warm: every later call (what each regen and each gate check pays: the
  module source is parsed and every unit fingerprinted again, nothing is cached across calls);
* ``compare_code`` + ``drift_detail`` of a changed ``forward``: the gate's comparison.

The max column catches whatever else the machine did (a garbage collection of the model's objects
lands in some run); median and min are the numbers to compare.

Usage: ``python benchmarks/bench_fingerprint.py [--runs N]`` from the repository root.
"""

from __future__ import annotations

import argparse
import io
import pickle
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per row (default 50)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(EXAMPLE))
    import torch
    from package import build_model  # example_project/package.py

    from pytest_modelpack.drift import compare_code, drift_detail, fingerprint_model
    from pytest_modelpack.safety import iter_globals

    torch.manual_seed(0)
    model = build_model(EXAMPLE / "corpus.txt")
    data = pickle.dumps(model)
    refs = [(ref.module, ref.qualname) for ref in iter_globals(io.BytesIO(data))]

    cold = timed(lambda: fingerprint_model(refs, EXAMPLE), 1)
    code = fingerprint_model(refs, EXAMPLE)
    warm = timed(lambda: fingerprint_model(refs, EXAMPLE), args.runs)

    changed = {name: dict(unit) for name, unit in code.items()}
    forward = changed["package.MyCompoundClass.forward"]
    forward["source"] = forward["source"].replace("[:, -1, :]", "[:, 0, :]")
    forward["sha256"] = "changed"
    compare = timed(lambda: drift_detail(code, changed, *compare_code(code, changed)), args.runs)

    kinds = [unit["kind"] for unit in code.values()]
    print(
        f"example model: {len(refs)} globals in the pickle -> {len(code)} units "
        f"({kinds.count('class')} classes, {kinds.count('method')} methods, "
        f"{kinds.count('function')} functions); {args.runs} runs per row; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.machine()}"
    )
    rows = [
        ("fingerprint_model, cold (first call)", cold),
        ("fingerprint_model, warm", warm),
        ("compare_code + drift_detail", compare),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{'step'.ljust(width)}  {'median':>9}  {'min':>9}  {'max':>9}")
    for label, times in rows:
        print(
            f"{label.ljust(width)}  {statistics.median(times):7.2f}ms  {min(times):7.2f}ms  "
            f"{max(times):7.2f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
