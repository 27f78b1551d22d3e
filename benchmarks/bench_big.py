"""Benchmark: big goldens, pytest-modelpack vs the same work written by hand with plain pickle.

    python benchmarks/bench_big.py                       # 64 MiB, 256 MiB and 1 GiB
    python benchmarks/bench_big.py --sizes 64M,256M      # a quicker run
    python benchmarks/bench_big.py --sizes 4M --keep DIR # keep the temporary project to look at

The model is a plain class holding ``torch.nn.Embedding(rows, 1024)`` (the size given) and a
``torch.nn.Linear(1024, 16)``, with ``preprocess``/``forward``/``postprocess``, defined in a project
module of a temporary project (``bigmodel.py``, ``conftest.py`` with a session fixture,
``test_big.py`` calling ``modelpack.check``). Every line of the table is a WHOLE process, started
fresh (imports, building the model, the work, exit), measured from outside: wall time, and peak
resident memory from ``os.wait4`` (the child's ``ru_maxrss``). Side by side:

* build + ``pickle.dump``                vs ``pytest --modelpack-regen``
* build + ``pickle.load`` + N compares   vs ``pytest --modelpack-golden``  (N = examples+recorded)
* ``pickle.load`` of the bundle alone    vs loading the golden alone, as the gate does (verify,
                                          scan, the whole file's sha256, load)
* ``import torch`` alone                 vs ``modelpack scan bundle.pkl``

After the table: the slope of each line per GiB (least squares over the sizes given). Numbers on
a loaded machine are noisy: run it on a quiet one for figures to quote.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

WIDTH = 1024  # embedding width: rows = size / (WIDTH * 4 bytes)

BIGMODEL = '''
"""A big plain-class model: an embedding table and a linear head."""
import os
import random

import torch

ROWS = int(os.environ["MODELPACK_BENCH_ROWS"])
LENGTH = 8


class BigModel:
    def __init__(self, rows):
        self.embedding = torch.nn.Embedding(rows, WIDTH)
        self.head = torch.nn.Linear(WIDTH, 16)

    def preprocess(self, ids):
        ids = list(ids)[:LENGTH]
        return torch.tensor(ids + [0] * (LENGTH - len(ids)))

    def forward(self, batch):
        return self.head(self.embedding(batch).mean(1))

    def postprocess(self, out):
        return out


def build(rows=ROWS):
    torch.manual_seed(0)
    return BigModel(rows)


def inputs(n):
    rng = random.Random(0)
    return [[rng.randrange(ROWS) for _ in range(rng.randint(1, LENGTH))] for _ in range(n)]
'''.replace("WIDTH", str(WIDTH))

CONFTEST = """
import pytest

import bigmodel


@pytest.fixture(scope="session")
def big_model():
    return bigmodel.build()
"""

TEST = """
from hypothesis import strategies as st

import bigmodel


def test_big(modelpack, big_model):
    ids = st.lists(st.integers(0, bigmodel.ROWS - 1), min_size=1, max_size=bigmodel.LENGTH)
    modelpack.check(big_model, name="big", inputs=ids)
"""

INI = """
[pytest]
modelpack_devices = cpu
modelpack_examples = {examples}
modelpack_recorded = {recorded}
"""

PLAIN_DUMP = """
import pickle, sys
import bigmodel

model = bigmodel.build()
with open(sys.argv[1], "wb") as f:
    pickle.dump(model, f, protocol=pickle.DEFAULT_PROTOCOL)
"""

PLAIN_GATE = """
import pickle, sys
import torch
import bigmodel

live = bigmodel.build()
with open(sys.argv[1], "rb") as f:
    loaded = pickle.load(f)


def run(model, x):
    with torch.no_grad():
        return model.postprocess(model.forward(model.preprocess(x)[None])[0])


for x in bigmodel.inputs(int(sys.argv[2])):
    torch.testing.assert_close(run(loaded, x), run(live, x))
"""

# The two load scripts also print the load step's own time (after ``import torch``): INNER s.
PLAIN_LOAD = """
import pickle, sys, time
import torch

start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    pickle.load(f)
print("INNER", time.perf_counter() - start)
"""

# Verify, scan and load as the gate does, in the gate's order, through whichever API this
# checkout has: the bundle's hash started first (the gate starts it at the test's setup), the
# bytes the interpreter reads verified, the scan, the wait for the whole file's sha256, the load.
# Alone there is nothing for the hash to overlap (in the gate it runs while the fixtures build
# the model): INNER is the whole step, PARTS splits it.
GOLDEN_LOAD = """
import sys, time
from pathlib import Path

import torch
from pytest_modelpack.golden import GoldenStore
from pytest_modelpack.safety import Allowlist, load_bundle, scan_file

start = time.perf_counter()
folder = Path(sys.argv[1])
store = GoldenStore(folder, folder.name)
getattr(store, "prefetch", lambda: None)()
try:
    store.verify(store.read_manifest(), defer=True)
except TypeError:  # a checkout without deferred hashing
    store.verify(store.read_manifest())
verified = time.perf_counter()
allowlist = Allowlist(Path.cwd(), [])
assert not scan_file(store.bundle_path, allowlist).refused
scanned = time.perf_counter()
getattr(store, "settle", lambda: None)()
settled = time.perf_counter()
opened = getattr(store, "open_verified_bundle", None)
load_bundle(opened() if opened else store.bundle_path, allowlist)
end = time.perf_counter()
print("INNER", end - start)
parts = {
    "verify": verified - start,
    "scan": scanned - verified,
    "sha256 wait": settled - scanned,
    "load": end - settled,
}
print("PARTS", ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()))
"""

IMPORT_TORCH = "import torch\n"


@dataclass
class Run:
    seconds: float
    peak_mb: float
    inner: float | None = None  # the step's own time, printed by the script (INNER s)
    parts: str = ""  # how it splits (PARTS ...)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 64M, 256M, 1G")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def show_size(nbytes: int) -> str:
    if nbytes >= 1 << 30 and nbytes % (1 << 30) == 0:
        return f"{nbytes >> 30} GiB"
    return f"{nbytes / (1 << 20):g} MiB"


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``argv`` as a whole process; its wall time and peak RSS (``ru_maxrss`` of wait4)."""
    start = time.perf_counter()
    out = subprocess.PIPE
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        sys.stderr.write(output.decode(errors="replace"))
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(argv)}")
    inner = re.search(rb"^INNER ([0-9.e-]+)$", output, re.MULTILINE)
    peak = usage.ru_maxrss * 1024 / 1e6  # Linux: KiB
    parts = re.search(rb"^PARTS (.*)$", output, re.MULTILINE)
    split = parts.group(1).decode() if parts else ""
    return Run(
        seconds,
        peak,
        float(inner.group(1)) if inner else None,
        split,
    )


def write_project(folder: Path, examples: int, recorded: int) -> None:
    files = {
        "bigmodel.py": BIGMODEL,
        "conftest.py": CONFTEST,
        "test_big.py": TEST,
        "pytest.ini": INI.format(examples=examples, recorded=recorded),
        "plain_dump.py": PLAIN_DUMP,
        "plain_gate.py": PLAIN_GATE,
        "plain_load.py": PLAIN_LOAD,
        "golden_load.py": GOLDEN_LOAD,
        "import_torch.py": IMPORT_TORCH,
    }
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())


WORK = [
    # (label, by hand, pytest-modelpack)
    ("build + pickle.dump  vs  --modelpack-regen", "plain_dump", "regen"),
    ("build + pickle.load + {n} compares  vs  --modelpack-golden", "plain_gate", "gate"),
    (
        "pickle.load  vs  load a golden (verify, scan, sha256, load)",
        "plain_load",
        "golden_load",
    ),
    ("import torch  vs  modelpack scan bundle.pkl", "import_torch", "scan"),
]


def bench_size(nbytes: int, project: Path, args: argparse.Namespace) -> dict[str, Run]:
    rows = max(1, nbytes // (WIDTH * 4))
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    paths = [str(project), env.get("PYTHONPATH", ""), here]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["MODELPACK_BENCH_ROWS"] = str(rows)
    env.setdefault("PYTHONHASHSEED", "0")
    # Bytecode caches as a developer machine has them (pytest's rewritten modules included), kept
    # out of the checkout; the warm-up run fills them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(project / ".pycache")
    py = sys.executable
    plain_file = project / "plain.pkl"
    golden = project / "goldens" / "big"
    compares = str(args.examples + args.recorded)
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_big.py"]
    runs: dict[str, Run] = {}
    try:
        if not (project / ".pycache").exists():  # warm-up: bytecode and Hypothesis' caches
            warm = {**env, "MODELPACK_BENCH_ROWS": "16"}
            measure([*pytest, "--modelpack-regen"], project, warm)
            measure([*pytest, "--modelpack-golden"], project, warm)
            measure([py, "-m", "pytest_modelpack", "scan", "--help"], project, warm)
            shutil.rmtree(golden)
        runs["plain_dump"] = measure([py, "plain_dump.py", str(plain_file)], project, env)
        plain_file.unlink()
        runs["regen"] = measure([*pytest, "--modelpack-regen"], project, env)
        bundle = golden / "bundle.pkl"
        runs["plain_gate"] = measure([py, "plain_gate.py", str(bundle), compares], project, env)
        report = project / "gate-report.json"
        runs["gate"] = measure(
            [*pytest, "--modelpack-golden", f"--modelpack-report={report}"], project, env
        )
        runs["gate"].parts = gate_stages(report)
        report.unlink()
        runs["plain_load"] = measure([py, "plain_load.py", str(bundle)], project, env)
        runs["golden_load"] = measure([py, "golden_load.py", str(golden)], project, env)
        runs["import_torch"] = measure([py, "import_torch.py"], project, env)
        # `modelpack scan FILE`, the model's class named with --allow (no import). --root instead
        # imports the project modules the golden names (the user's statement of trust): torch,
        # here, since bigmodel.py imports it.
        allow = ["--allow", "bigmodel.BigModel"]
        scan = [py, "-m", "pytest_modelpack", "scan", *allow, str(bundle)]
        runs["scan"] = measure(scan, project, env)
    finally:
        plain_file.unlink(missing_ok=True)
        shutil.rmtree(project / "goldens", ignore_errors=True)
    return runs


def gate_stages(report: Path) -> str:
    """Where the gate's check spent its time: the stages of its JSON report row."""
    import json

    rows = json.loads(report.read_text())["checks"]
    stages = rows[0].get("stages", {}) if rows else {}
    return ", ".join(f"{name} {seconds:.3f} s" for name, seconds in stages.items())


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x (None with fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    num = sum((x - mx) * (y - my) for x, y in points)
    return num / sum((x - mx) ** 2 for x, _ in points)


def print_table(results: dict[int, dict[str, Run]], args: argparse.Namespace) -> None:
    n = args.examples + args.recorded
    print(
        f"\npytest-modelpack vs plain pickle: Embedding(rows, {WIDTH}) + Linear, whole processes "
        f"(wall time, peak RSS); {args.examples} Hypothesis examples, {args.recorded} recorded\n"
    )
    print("| size | work | by hand | pytest-modelpack | ratio |")
    print("|---|---|---|---|---|")
    for nbytes, runs in results.items():
        for label, plain, ours in WORK:
            a, b = runs[plain], runs[ours]
            print(
                f"| {show_size(nbytes)} | {label.format(n=n)} "
                f"| {a.seconds:.2f} s, {a.peak_mb:.0f} MB "
                f"| {b.seconds:.2f} s, {b.peak_mb:.0f} MB "
                f"| {b.seconds / a.seconds:.2f}x time, {b.peak_mb / a.peak_mb:.2f}x peak |"
            )
    print(
        "\nthe load step alone, in process after `import torch`: pickle.load vs the gate's load "
        "(its hash started first, the bytes read verified, scan, wait for the whole file's "
        "sha256, build); in the gate the hash runs while the fixtures build the model\n"
    )
    for nbytes, runs in results.items():
        a, b = runs["plain_load"].inner, runs["golden_load"].inner
        if a and b is not None:
            split = f": {runs['golden_load'].parts}" if runs["golden_load"].parts else ""
            print(
                f"- {show_size(nbytes)}: pickle.load {a:.3f} s, golden {b:.3f} s ({b / a:.2f}x)"
                f"{split}"
            )
    print("\ninside the gate: the check's stages (its JSON report)\n")
    for nbytes, runs in results.items():
        if runs["gate"].parts:
            print(f"- {show_size(nbytes)}: {runs['gate'].parts}")
    if len(results) < 2:
        return
    print("\nslope per GiB of model (least squares over the sizes above)\n")
    print("| work | by hand | pytest-modelpack |")
    print("|---|---|---|")
    for label, plain, ours in WORK:
        cells = []
        for key in (plain, ours):
            gib = [(nbytes / (1 << 30), runs[key]) for nbytes, runs in results.items()]
            t = slope([(x, r.seconds) for x, r in gib])
            m = slope([(x, r.peak_mb) for x, r in gib])
            known = t is not None and m is not None
            cells.append(f"{t:.2f} s/GiB, {m:.0f} MB/GiB" if known else "")
        print(f"| {label.format(n=n)} | {cells[0]} | {cells[1]} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="64M,256M,1G",
        type=lambda text: [parse_size(s) for s in text.split(",") if s.strip()],
        help="model sizes, comma separated (default: 64M,256M,1G)",
    )
    parser.add_argument("--examples", type=int, default=20, help="Hypothesis examples per check")
    parser.add_argument("--recorded", type=int, default=8, help="examples recorded at regen")
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as scratch:
        project = args.keep or Path(scratch)
        project.mkdir(parents=True, exist_ok=True)
        write_project(project, args.examples, args.recorded)
        results: dict[int, dict[str, Run]] = {}
        for nbytes in args.sizes:
            print(f"measuring {show_size(nbytes)} ...", file=sys.stderr, flush=True)
            results[nbytes] = bench_size(nbytes, project, args)
    print_table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
