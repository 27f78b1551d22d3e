"""Benchmark: big goldens, pytest-modelpack vs the same work written by hand with the serializer.

    python benchmarks/bench_big.py                       # 64 MiB, 256 MiB and 1 GiB, pickle
    python benchmarks/bench_big.py --sizes 64M,256M      # a quicker run
    python benchmarks/bench_big.py --sizes 1G --serializer torch   # torch.save goldens
    python benchmarks/bench_big.py --serializer all      # pickle, torch, dill and cloudpickle
    python benchmarks/bench_big.py --sizes 1G --misaligned         # the embedding misaligned
    python benchmarks/bench_big.py --sizes 4M --keep DIR # keep the temporary project to look at

The model is a plain class holding ``torch.nn.Embedding(rows, 1024)`` (the size given) and a
``torch.nn.Linear(1024, 16)``, with ``preprocess``/``forward``/``postprocess``, defined in a project
module of a temporary project (``bigmodel.py``, ``conftest.py`` with a session fixture,
``test_big.py`` calling ``modelpack.check``). Every line of the table is a WHOLE process, started
fresh (imports, building the model, the work, exit), measured from outside: wall time, and peak
resident memory from ``os.wait4`` (the child's ``ru_maxrss``). Side by side, for each serializer
(``--serializer``: by hand ``pickle.dump``/``pickle.load``, ``torch.save``/``torch.load(f,
weights_only=False)``, ``dill.dump``/``dill.load``, ``cloudpickle.dump``/``pickle.load``; the
plugin runs with ``-o modelpack_serializer=NAME``):

* build + dump                        vs ``pytest --modelpack-regen``
* build + load + N compares           vs ``pytest --modelpack-golden``  (N = examples+recorded)
* load of the by-hand file alone      vs loading the golden alone, as the gate does (verify,
                                         scan, the whole file's sha256, load)
* ``import torch`` alone              vs ``modelpack scan bundle.pkl`` (``bundle.pt``)

A serializer the plugin refuses (a USAGE ERROR, "not supported") gets its by-hand numbers and
"not supported" rows. ``--misaligned`` puts a small bytes attribute before the embedding, so that
its storage's bytes lie at an odd offset of a pickle bundle (the gate copies such a storage
instead of mapping it); the offset is printed with the table.

After each table: the slope of each line per GiB (least squares over the sizes given). Numbers on
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
PAD = os.environ.get("MODELPACK_BENCH_PAD")  # --misaligned: bytes pickled before the embedding
LENGTH = 8


class BigModel:
    def __init__(self, rows):
        if PAD is not None:
            self.pad = b"\\0" * int(PAD)
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
import sys
{imports}
import bigmodel

model = bigmodel.build()
with open(sys.argv[1], "wb") as f:
    {dump}
"""

PLAIN_GATE = """
import sys
{imports}
import torch
import bigmodel

live = bigmodel.build()
with open(sys.argv[1], "rb") as f:
    loaded = {load}


def run(model, x):
    with torch.no_grad():
        return model.postprocess(model.forward(model.preprocess(x)[None])[0])


for x in bigmodel.inputs(int(sys.argv[2])):
    torch.testing.assert_close(run(loaded, x), run(live, x))
"""

# The two load scripts also print the load step's own time (after ``import torch``): INNER s.
PLAIN_LOAD = """
import sys, time
{imports}
import torch

start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    {load}
print("INNER", time.perf_counter() - start)
"""


@dataclass(frozen=True)
class Way:
    """One serializer: how the plugin names it, and the same work written by hand."""

    name: str
    bundle: str  # the golden's bundle file
    imports: str
    dump: str  # a statement writing ``model`` to the open file ``f``
    load: str  # an expression reading the open file ``f``
    dump_label: str
    load_label: str


WAYS = {
    "pickle": Way(
        "pickle",
        "bundle.pkl",
        "import pickle",
        "pickle.dump(model, f, protocol=pickle.DEFAULT_PROTOCOL)",
        "pickle.load(f)",
        "pickle.dump",
        "pickle.load",
    ),
    "torch": Way(
        "torch",
        "bundle.pt",
        "import torch",
        "torch.save(model, f)",
        "torch.load(f, weights_only=False)",
        "torch.save",
        "torch.load",
    ),
    "dill": Way(
        "dill",
        "bundle.pkl",
        "import dill",
        "dill.dump(model, f)",
        "dill.load(f)",
        "dill.dump",
        "dill.load",
    ),
    "cloudpickle": Way(
        "cloudpickle",
        "bundle.pkl",
        "import cloudpickle, pickle",
        "cloudpickle.dump(model, f)",
        "pickle.load(f)",
        "cloudpickle.dump",
        "pickle.load",
    ),
}

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
refused = scan_file(store.bundle_path, allowlist).refused
assert not refused, refused
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
    refused: str | None = None  # the plugin refused the work: its error line


@dataclass
class Result:
    """One size, one serializer: every run, and where the embedding's bytes lie in the golden."""

    runs: dict[str, Run]
    layout: str = ""


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 64M, 256M, 1G")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def parse_serializers(text: str) -> list[str]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return list(WAYS)
    unknown = [n for n in names if n not in WAYS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"bad serializer {text!r}: use {', '.join(WAYS)} or all (comma separated)"
        )
    return names


def show_size(nbytes: int) -> str:
    if nbytes >= 1 << 30 and nbytes % (1 << 30) == 0:
        return f"{nbytes >> 30} GiB"
    return f"{nbytes / (1 << 20):g} MiB"


def measure(argv: list[str], cwd: Path, env: dict[str, str], refusable: bool = False) -> Run:
    """Run ``argv`` as a whole process; its wall time and peak RSS (``ru_maxrss`` of wait4).

    ``refusable``: a pytest run the plugin may refuse with a USAGE ERROR (exit 4, "not
    supported"): that gives a Run with ``refused`` set instead of stopping the benchmark."""
    start = time.perf_counter()
    out = subprocess.PIPE
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    peak = usage.ru_maxrss * 1024 / 1e6  # Linux: KiB
    if proc.returncode != 0:
        text = output.decode(errors="replace")
        if refusable and proc.returncode == 4 and "not supported" in text:
            why = next((line for line in text.splitlines() if "not supported" in line), text)
            return Run(seconds, peak, refused=why.strip())
        sys.stderr.write(text)
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(argv)}")
    inner = re.search(rb"^INNER ([0-9.e-]+)$", output, re.MULTILINE)
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
        "golden_load.py": GOLDEN_LOAD,
        "import_torch.py": IMPORT_TORCH,
    }
    for way in WAYS.values():
        fill = {"imports": way.imports, "dump": way.dump, "load": way.load}
        files[f"plain_dump_{way.name}.py"] = PLAIN_DUMP.format(**fill)
        files[f"plain_gate_{way.name}.py"] = PLAIN_GATE.format(**fill)
        files[f"plain_load_{way.name}.py"] = PLAIN_LOAD.format(**fill)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())


WORK = [
    # (label, by hand, pytest-modelpack)
    ("build + {dump}  vs  --modelpack-regen", "plain_dump", "regen"),
    ("build + {load} + {n} compares  vs  --modelpack-golden", "plain_gate", "gate"),
    ("{load}  vs  load a golden (verify, scan, sha256, load)", "plain_load", "golden_load"),
    ("import torch  vs  modelpack scan {bundle}", "import_torch", "scan"),
]


def label_of(label: str, way: Way, n: int) -> str:
    return label.format(dump=way.dump_label, load=way.load_label, n=n, bundle=way.bundle)


def bench_size(nbytes: int, project: Path, args: argparse.Namespace, way: Way) -> Result:
    rows = max(1, nbytes // (WIDTH * 4))
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    paths = [str(project), env.get("PYTHONPATH", ""), here]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["MODELPACK_BENCH_ROWS"] = str(rows)
    env.pop("MODELPACK_BENCH_PAD", None)
    if args.misaligned and way.name != "torch":
        # b"" before the embedding: its bytes at an odd offset of the pickle. (torch.save aligns
        # every storage record at 64 bytes in its zip; protocol 2 pickles bytes through
        # _codecs.encode, which a plain allowlist refuses.)
        env["MODELPACK_BENCH_PAD"] = "0"
    env.setdefault("PYTHONHASHSEED", "0")
    # Bytecode caches as a developer machine has them (pytest's rewritten modules included), kept
    # out of the checkout; the warm-up run fills them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(project / ".pycache")
    py = sys.executable
    plain_file = project / f"plain-{way.name}.bin"
    golden = project / "goldens" / "big"
    compares = str(args.examples + args.recorded)
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_big.py"]
    ours = [*pytest, "-o", f"modelpack_serializer={way.name}"]
    runs: dict[str, Run] = {}
    layout = ""
    try:
        if not (project / ".pycache").exists():  # warm-up: bytecode and Hypothesis' caches
            warm = {**env, "MODELPACK_BENCH_ROWS": "16"}
            measure([*pytest, "--modelpack-regen"], project, warm)
            measure([*pytest, "--modelpack-golden"], project, warm)
            measure([py, "-m", "pytest_modelpack", "scan", "--help"], project, warm)
            shutil.rmtree(golden)
        hand = f"plain_dump_{way.name}.py"
        runs["plain_dump"] = measure([py, hand, str(plain_file)], project, env)
        runs["regen"] = measure([*ours, "--modelpack-regen"], project, env, refusable=True)
        gate = [py, f"plain_gate_{way.name}.py", str(plain_file), compares]
        runs["plain_gate"] = measure(gate, project, env)
        runs["plain_load"] = measure(
            [py, f"plain_load_{way.name}.py", str(plain_file)], project, env
        )
        runs["import_torch"] = measure([py, "import_torch.py"], project, env)
        refused = runs["regen"].refused
        if refused is not None:  # nothing written: the rest of the plugin's side is refused too
            for key in ("gate", "golden_load", "scan"):
                runs[key] = Run(0.0, 0.0, refused=refused)
            return Result(runs)
        layout = storage_layout(golden, way)
        if args.misaligned and "misaligned" not in layout and way.bundle.endswith(".pkl"):
            raise SystemExit(f"--misaligned: the embedding is not misaligned ({layout})")
        report = project / "gate-report.json"
        runs["gate"] = measure(
            [*ours, "--modelpack-golden", f"--modelpack-report={report}"],
            project,
            env,
            refusable=True,
        )
        if report.exists():
            runs["gate"].parts = gate_stages(report)
            report.unlink()
        runs["golden_load"] = measure([py, "golden_load.py", str(golden)], project, env)
        # `modelpack scan FILE`, the model's class named with --allow (no import). --root instead
        # imports the project modules the golden names (the user's statement of trust): torch,
        # here, since bigmodel.py imports it.
        allow = ["--allow", "bigmodel.BigModel"]
        scan = [py, "-m", "pytest_modelpack", "scan", *allow, str(golden / way.bundle)]
        runs["scan"] = measure(scan, project, env)
    finally:
        plain_file.unlink(missing_ok=True)
        shutil.rmtree(project / "goldens", ignore_errors=True)
    return Result(runs, layout)


def storage_layout(golden: Path, way: Way) -> str:
    """Where the golden's biggest storage lies in its bundle (the manifest's storage spans), and
    whether that offset is aligned for float32 (and at 16 bytes, as matmul kernels prefer)."""
    import json

    manifest = json.loads((golden / "manifest.json").read_text())
    spans = manifest.get("bundle", {}).get("storages")
    if not spans:
        return ""
    offset, length = max(spans, key=lambda span: span[1])
    if offset % 4:
        state = f"misaligned for float32 ({offset} % 4 = {offset % 4}): copied at load"
    else:
        state = f"aligned ({offset} % 16 = {offset % 16}): mapped, no copy"
    return f"embedding storage at byte {offset} of {way.bundle} ({length} bytes), {state}"


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


def cell(run: Run) -> str:
    return "not supported" if run.refused else f"{run.seconds:.2f} s, {run.peak_mb:.0f} MB"


def print_table(results: dict[int, Result], args: argparse.Namespace, way: Way) -> None:
    n = args.examples + args.recorded
    layout = " (--misaligned)" if args.misaligned else ""
    print(
        f"\n## serializer {way.name}: by hand {way.dump_label} / {way.load_label}, the golden "
        f"{way.bundle}{layout}\n"
    )
    print(
        f"pytest-modelpack vs plain {way.name}: Embedding(rows, {WIDTH}) + Linear, whole "
        f"processes (wall time, peak RSS); {args.examples} Hypothesis examples, {args.recorded} "
        "recorded\n"
    )
    print("| size | work | by hand | pytest-modelpack | ratio |")
    print("|---|---|---|---|---|")
    refusals: set[str] = set()
    for nbytes, result in results.items():
        runs = result.runs
        for label, plain, ours in WORK:
            a, b = runs[plain], runs[ours]
            if b.refused:
                refusals.add(b.refused)
                ratio = ""
            else:
                ratio = f"{b.seconds / a.seconds:.2f}x time, {b.peak_mb / a.peak_mb:.2f}x peak"
            print(
                f"| {show_size(nbytes)} | {label_of(label, way, n)} | {cell(a)} | {cell(b)} "
                f"| {ratio} |"
            )
    for why in sorted(refusals):
        print(f"\nnot supported: the plugin refused it: {why}")
    if any(result.layout for result in results.values()):
        print("\nwhere the embedding's bytes lie in the golden (its manifest's storage spans)\n")
        for nbytes, result in results.items():
            if result.layout:
                print(f"- {show_size(nbytes)}: {result.layout}")
    if any(not r.runs["golden_load"].refused for r in results.values()):
        print(
            f"\nthe load step alone, in process after `import torch`: {way.load_label} vs the "
            "gate's load (its hash started first, the bytes read verified, scan, wait for the "
            "whole file's sha256, build); in the gate the hash runs while the fixtures build the "
            "model\n"
        )
    for nbytes, result in results.items():
        runs = result.runs
        a, b = runs["plain_load"].inner, runs["golden_load"].inner
        if a and b is not None:
            split = f": {runs['golden_load'].parts}" if runs["golden_load"].parts else ""
            print(
                f"- {show_size(nbytes)}: {way.load_label} {a:.3f} s, golden {b:.3f} s "
                f"({b / a:.2f}x){split}"
            )
    if any(r.runs["gate"].parts for r in results.values()):
        print("\ninside the gate: the check's stages (its JSON report)\n")
    for nbytes, result in results.items():
        if result.runs["gate"].parts:
            print(f"- {show_size(nbytes)}: {result.runs['gate'].parts}")
    if len(results) < 2:
        return
    print("\nslope per GiB of model (least squares over the sizes above)\n")
    print("| work | by hand | pytest-modelpack |")
    print("|---|---|---|")
    for label, plain, ours in WORK:
        cells = []
        for key in (plain, ours):
            gib = [(nbytes / (1 << 30), r.runs[key]) for nbytes, r in results.items()]
            if any(run.refused for _, run in gib):
                cells.append("not supported")
                continue
            t = slope([(x, r.seconds) for x, r in gib])
            m = slope([(x, r.peak_mb) for x, r in gib])
            known = t is not None and m is not None
            cells.append(f"{t:.2f} s/GiB, {m:.0f} MB/GiB" if known else "")
        print(f"| {label_of(label, way, n)} | {cells[0]} | {cells[1]} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="64M,256M,1G",
        type=lambda text: [parse_size(s) for s in text.split(",") if s.strip()],
        help="model sizes, comma separated (default: 64M,256M,1G)",
    )
    parser.add_argument(
        "--serializer",
        default=["pickle"],
        type=parse_serializers,
        help=f"{', '.join(WAYS)}, several comma separated, or all (default: pickle)",
    )
    parser.add_argument(
        "--misaligned",
        action="store_true",
        help="a small attribute before the embedding: its bytes at an odd offset of a pickle "
        "bundle (copied at load, not mapped)",
    )
    parser.add_argument("--examples", type=int, default=20, help="Hypothesis examples per check")
    parser.add_argument("--recorded", type=int, default=8, help="examples recorded at regen")
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelpack-bench-") as scratch:
        project = args.keep or Path(scratch)
        project.mkdir(parents=True, exist_ok=True)
        write_project(project, args.examples, args.recorded)
        tables: dict[str, dict[int, Result]] = {}
        for name in args.serializer:
            way = WAYS[name]
            tables[name] = {}
            for nbytes in args.sizes:
                print(f"measuring {name}, {show_size(nbytes)} ...", file=sys.stderr, flush=True)
                tables[name][nbytes] = bench_size(nbytes, project, args, way)
    for name, results in tables.items():
        print_table(results, args, WAYS[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
