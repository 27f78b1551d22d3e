#!/usr/bin/env python3
"""The package as users get it: the built wheel in fresh venvs, outside the source tree.

For each interpreter given (``--python``): a new venv holding only the wheel and its dependencies
(pinned by constraints.txt), then, from folders outside the source tree,

1. the example project's gate (``--modelpack-golden``, must pass and show the modelpack summary);
2. ``modelpack scan`` and ``modelpack inspect`` of its goldens;
3. a small model written to a temp folder: round-trip, regen, gate;
4. ``pytest_modelpack`` imported from the venv, never from the checkout; nothing written under
   the installed package; ``--strict-markers``, ``-p no:modelpack`` and
   ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` + ``-p modelpack`` behave as pytest users expect.

With two interpreters or more, goldens made under each pass the gate under every other one (same
torch): no CODE DRIFT, no refusal, the environment change a warning only.

    python3 scripts/check_installed.py --wheel dist/pytest_modelpack-*.whl \\
        --python python3 --python ~/.pyenv/versions/3.13.0/bin/python3.13

Prints a table of how long each part took. Exits non-zero on the first failure, with its output.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMES: list[tuple[str, float]] = []

SMALL_PACKAGE = """\
import torch


class TinyModel:
    \"\"\"preprocess / forward / postprocess, as the seed's compound model.\"\"\"

    def __init__(self):
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 2)
        self.scale = 0.5

    def preprocess(self, x):
        return torch.tensor([float(v) for v in x], dtype=torch.float32)

    def forward(self, batch):
        return self.layer(batch) * self.scale

    def postprocess(self, y):
        return {"score": y.tolist()}
"""

SMALL_CONFTEST = """\
import pytest
from tinymodel import TinyModel


@pytest.fixture(scope="session")
def tiny():
    return TinyModel()
"""

SMALL_TEST = """\
import sys

import pytest
import pytest_modelpack
from hypothesis import strategies as st


def test_installed_plugin():
    # the plugin under test is the wheel installed in this venv, not a checkout
    assert pytest_modelpack.__file__.startswith(sys.prefix), pytest_modelpack.__file__


@pytest.mark.modelpack(examples=10, recorded=4)
def test_tiny(modelpack, tiny):
    ints = st.integers(min_value=-5, max_value=5)
    modelpack.check(tiny, name="tiny", inputs=st.lists(ints, min_size=4, max_size=4))
"""

SMALL_PYPROJECT = """\
[tool.pytest.ini_options]
pythonpath = ["."]
modelpack_devices = "cpu"
"""


def step(label: str, cmd: list[str], cwd: Path, env: dict[str, str], expect: int = 0) -> str:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    TIMES.append((label, time.perf_counter() - start))
    out = proc.stdout + proc.stderr
    if proc.returncode != expect:
        print(f"FAILED: {label}: exit {proc.returncode}, expected {expect}\n$ {' '.join(cmd)}")
        print(out[-8000:])
        sys.exit(1)
    print(f"ok   {label} ({TIMES[-1][1]:.1f} s)")
    return out


def must(cond: bool, label: str, out: str = "") -> None:
    if not cond:
        print(f"FAILED: {label}")
        print(out[-8000:])
        sys.exit(1)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        # byte-code caches are Python's and pytest's (it rewrites a plugin's asserts), not ours
        if p.is_file() and "__pycache__" not in p.parts
    }


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def check_one(python: str, wheel: Path, work: Path) -> tuple[str, Path, dict[str, str]]:
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tag = f"py{version}"
    venv = work / f"venv-{tag}"
    py = str(venv / "bin" / "python")
    env = clean_env(venv)
    step(f"{tag}: venv", [python, "-m", "venv", str(venv)], work, env)
    step(
        f"{tag}: pip install the wheel (+ sentencepiece for the example)",
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(REPO / "constraints.txt"),
            f"{wheel}[dill,cloudpickle]",
            "sentencepiece",
        ],
        work,
        env,
    )
    where = step(
        f"{tag}: import from the venv",
        [py, "-c", "import pytest_modelpack, sys; print(pytest_modelpack.__file__, sys.prefix)"],
        work,
        env,
    ).split()
    must(
        where[0].startswith(where[1]) and str(REPO) not in where[0], "imported from venv", where[0]
    )
    site = Path(where[0]).parent
    before = snapshot(site)

    example = work / f"example-{tag}"
    shutil.copytree(REPO / "example_project", example)
    out = step(f"{tag}: example gate", [py, "-m", "pytest", "--modelpack-golden"], example, env)
    must(re.search(r"^=+ modelpack =+$", out, re.M) is not None, "the modelpack summary", out)
    must(" passed" in out and "failed" not in out, "example gate passed", out)
    goldens = sorted(str(p) for p in (example / "goldens").glob("*/bundle.pkl"))
    modelpack = str(venv / "bin" / "modelpack")
    step(
        f"{tag}: modelpack scan",
        [modelpack, "scan", "--root", str(example), *goldens],
        example,
        env,
    )
    out = step(
        f"{tag}: modelpack inspect",
        [modelpack, "inspect", "--root", str(example), str(example / "goldens" / "sentiment")],
        example,
        env,
    )
    must("structure" in out.lower(), "inspect shows the structure tree", out)

    small = work / f"small-{tag}"
    small.mkdir()
    (small / "tinymodel.py").write_text(SMALL_PACKAGE)
    (small / "conftest.py").write_text(SMALL_CONFTEST)
    (small / "test_tiny.py").write_text(SMALL_TEST)
    (small / "pyproject.toml").write_text(SMALL_PYPROJECT)
    pytest_ = [py, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers"]
    step(f"{tag}: small model round-trip", pytest_, small, env)
    out = step(f"{tag}: small model regen", [*pytest_, "--modelpack-regen"], small, env)
    must("created" in out, "regen created the golden", out)
    step(f"{tag}: small model gate", [*pytest_, "--modelpack-golden"], small, env)
    out = step(
        f"{tag}: -p no:modelpack collects",
        [
            py,
            "-m",
            "pytest",
            "-p",
            "no:modelpack",
            "--collect-only",
            "-q",
            "test_tiny.py::test_installed_plugin",
        ],
        small,
        env,
    )
    off = dict(env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    out = step(
        f"{tag}: autoload off",
        [py, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-p", "no:randomly"],
        small,
        off,
    )
    must("test_tiny" in out and "[cpu]" not in out, "autoload off: no plugin", out)
    out = step(
        f"{tag}: autoload off, -p modelpack",
        [py, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-p", "modelpack"],
        small,
        off,
    )
    must("test_tiny[cpu]" in out, "-p modelpack turns the plugin on", out)
    after = snapshot(site)
    changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    must(not changed, f"nothing written under {site}", "\n".join(changed))
    return tag, small, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, type=Path)
    parser.add_argument("--python", action="append", required=True)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="modelpack-installed-"))
    must(not work.resolve().is_relative_to(REPO), "work folder outside the source tree")
    wheel = args.wheel.resolve()
    done = [check_one(python, wheel, work) for python in args.python]
    # goldens made under one Python pass the gate under every other one (same torch)
    for made_tag, made, _ in done:
        for tag, _small, env in done:
            if tag == made_tag:
                continue
            copy = work / f"small-{made_tag}-gated-by-{tag}"
            shutil.copytree(made, copy)
            py = env["VIRTUAL_ENV"] + "/bin/python"
            out = step(
                f"golden made on {made_tag}, gate on {tag}",
                [
                    py,
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    "--modelpack-golden",
                    "-W",
                    "default::pytest_modelpack.warnings.EnvDriftWarning",
                ],
                copy,
                env,
            )
            must("CODE DRIFT" not in out and "UNSAFE" not in out, "no drift, no refusal", out)
            must(f"python {made_tag[2:]}" in out, "the Python change shown as a warning", out)
    print(f"\n{'part':<66}seconds")
    for label, seconds in TIMES:
        print(f"{label:<66}{seconds:7.1f}")
    print(f"{'total':<66}{sum(s for _, s in TIMES):7.1f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
