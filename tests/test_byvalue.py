"""dill and cloudpickle goldens (issue 20): code pinned by value is trusted by value only.

Each serializer, through pytester as a user runs it: round-trip, regen, gate; the golden loads
with the serializer's own loader in production; a change to pinned code is CODE DRIFT with its
source diff (and, with --modelpack-trust-golden-code, the golden's own code is compared with
today's); a generator is UNPICKLABLE (dill pickles locks, cloudpickle does not); a golden whose pinned code was replaced (same globals, other
code: proven live under the serializer's own loader first) is UNSAFE GOLDEN at the gate and in
``modelpack scan``, and nothing of it runs; a class pinned by value is refused at regen with the
reason, so no golden the gate refuses is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import QUIET, SeedProject

pytest.importorskip("dill")
pytest.importorskip("cloudpickle")

SERIALIZERS = ("dill", "cloudpickle")

MODELS = """\
import torch

SCALE = 3.0


def make_scaler(k):
    def scale(x, bias=0.5):
        return x * k + SCALE + bias
    return scale


class Net(torch.nn.Module):
    def __init__(self, lock=False):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.act = lambda t: torch.relu(t) * 2
        self.post = make_scaler(2.0)
        if lock:
            self.stream = (i for i in range(3))

    def forward(self, x):
        return self.post(self.act(self.lin(x)))
"""

TESTS = """\
import torch
from hypothesis import strategies as st
from models import Net

X = st.integers(0, 1000).map(
    lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
)


def test_net(modelpack):
    torch.manual_seed(0)
    modelpack.check(Net({lock}), inputs=X)
"""

LOADERS = {
    "dill": "import dill\nwith open(path, 'rb') as f:\n    model = dill.load(f)\n",
    "cloudpickle": "import cloudpickle\nwith open(path, 'rb') as f:\n    model = cloudpickle.load(f)\n",
}


def _project(
    pytester: pytest.Pytester, serializer: str, lock: bool = False, extra: str = ""
) -> Path:
    pytester.makepyfile(models=MODELS, test_models=TESTS.format(lock=lock))
    pytester.makeini(
        "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 4\n"
        f"modelpack_serializer = {serializer}\n{extra}"
    )
    return pytester.path / "goldens" / "test_net"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args)


def _rehash(folder: Path) -> None:
    """What an attacker does after editing the bundle: make the manifest match it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "bundle.pkl").read_bytes()
    manifest["bundle"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest["bundle"].pop("storages", None)
    manifest["bundle"].pop("pickle_sha256", None)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _scan_goldens(pytester: pytest.Pytester) -> subprocess.CompletedProcess[str]:
    """``modelpack scan --root . goldens``, as the pre-commit hook runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelpack.cli", "scan", "--root", ".", "goldens"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_round_trip_regen_and_gate(pytester: pytest.Pytester, serializer: str) -> None:
    golden = _project(pytester, serializer)
    assert _run(pytester).ret == 0
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_net*regen*created*"])
    manifest = json.loads((golden / "manifest.json").read_text())
    assert manifest["serializer"]["name"] == serializer
    # Pinned code's enclosing definitions are fingerprinted: a change to them is drift.
    assert "models.make_scaler" in json.dumps(manifest["code"])
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_net*cpu*golden*passed*"])
    # The trust file lists each pinned code object by name and digest, for review.
    trust = (pytester.path / "goldens.trust").read_text()
    assert "(code:Net.__init__.<locals>.<lambda>:" in trust
    assert "(code:make_scaler.<locals>.scale:" in trust
    scan = _scan_goldens(pytester)
    assert scan.returncode == 0, scan.stdout + scan.stderr

    # Production loads the golden with the serializer's own loader: same outputs.
    done = _python(
        f"path = {str(golden / 'bundle.pkl')!r}\n"
        + LOADERS[serializer]
        + "import torch\nfrom models import Net\ntorch.manual_seed(0)\nlive = Net()\n"
        "x = torch.randn(2, 4)\nassert torch.equal(model(x), live(x))\nprint('same')\n",
        pytester.path,
    )
    assert done.stdout.strip() == "same", done.stderr


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_pinned_code_change_is_code_drift_with_its_source(
    pytester: pytest.Pytester, serializer: str
) -> None:
    _project(pytester, serializer)
    assert _run(pytester, "--modelpack-regen").ret == 0
    models = pytester.path / "models.py"
    models.write_text(MODELS.replace("x * k + SCALE", "x * k - SCALE"))
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*CODE DRIFT — 1 function changed since the golden was made",
            "*models.make_scaler*",
            "*-        return x * k + SCALE + bias",
            "*+        return x * k - SCALE + bias",
            "*behaviour: not compared: the golden pins its own code by value "
            "(make_scaler.<locals>.scale)*",
            "*rerun with --modelpack-trust-golden-code",
            "*fix: revert the change, or accept it with: pytest --modelpack-regen*",
        ]
    )
    assert "UNSAFE" not in result.stdout.str()
    # Trusted golden code: the old pinned code runs against today's on the same inputs.
    result = _run(pytester, "--modelpack-golden", "--modelpack-trust-golden-code")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*CODE DRIFT*",
            "*behaviour: the golden's own pinned code and today's code disagree on a "
            "Hypothesis input — the change alters behaviour",
            "*expected = golden (its pinned code: make_scaler.<locals>.scale)*",
            "*--modelpack-trust-golden-code: the golden's own pinned code was built*",
        ]
    )
    # Accepting the change: regen says what changed, and the gate passes again.
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_net*regen*changed*"])
    assert _run(pytester, "--modelpack-golden").ret == 0


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_generator_is_unpicklable_under_every_serializer(
    pytester: pytest.Pytester, serializer: str
) -> None:
    _project(pytester, serializer, lock=True)
    result = _run(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*UNPICKLABLE — model.stream cannot be pickled*",
            "*fix: store the data (a list) or what recreates the generator instead*",
        ]
    )


def test_the_lambda_is_unpicklable_under_pickle_with_dill_as_a_fix(
    pytester: pytest.Pytester,
) -> None:
    _project(pytester, "pickle")
    result = _run(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*UNPICKLABLE — 2 parts of the model cannot be pickled*model.act*model.post*",
            "*pin it by value in the golden: modelpack_serializer = dill (or cloudpickle)*",
        ]
    )


_PLANT = """\
import sys, torch, {serializer}
sys.path.insert(0, '.')
import models
from models import Net
torch.manual_seed(0)
model = Net()
# The same lambda attribute over the same module globals, other code: the file uses exactly the
# globals the real one uses.
model.act = eval("lambda t: (__import__('os').system('touch ' + {canary!r}), t)[1]", vars(models))
with open({path!r}, 'wb') as f:
    {serializer}.dump(model, f)
"""


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_replaced_pinned_code_is_refused_before_anything_runs(
    pytester: pytest.Pytester, serializer: str, tmp_path: Path
) -> None:
    golden = _project(pytester, serializer)
    assert _run(pytester, "--modelpack-regen").ret == 0
    canary = tmp_path / "canary"
    planted = tmp_path / "planted.pkl"
    done = _python(
        _PLANT.format(serializer=serializer, canary=str(canary), path=str(planted)),
        pytester.path,
    )
    assert done.returncode == 0, done.stderr
    # Proven live: the serializer's own loader runs it once the model is used.
    done = _python(
        f"path = {str(planted)!r}\n" + LOADERS[serializer] + "import torch\n"
        "model(torch.ones(1, 4))\n",
        pytester.path,
    )
    assert done.returncode == 0, done.stderr
    assert canary.exists(), "the planted code did not run under the serializer's own loader"
    canary.unlink()

    (golden / "bundle.pkl").write_bytes(planted.read_bytes())
    _rehash(golden)
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*UNSAFE GOLDEN — 1 global use refused; nothing from the golden was run",
            "*_create_code (called): by-value code that the live model's own pickle does not build*"
            if serializer == "dill"
            else "*types.CodeType (called): by-value code that the live model's own pickle does "
            "not build*",
            "*fix: do not trust this file*",
        ]
    )
    assert not canary.exists()
    scan = _scan_goldens(pytester)
    assert scan.returncode == 1, scan.stdout + scan.stderr
    assert "by-value code that the live model's own pickle does not build" in scan.stdout
    assert not canary.exists()

    # Pinned code from another Python is never built either; the verdict says why it differs.
    manifest = json.loads((golden / "manifest.json").read_text())
    manifest["environment"]["python"] = "3.10.14"
    (golden / "manifest.json").write_text(json.dumps(manifest, indent=1))
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*ENV DRIFT — the golden pins code by value compiled by Python 3.10.14; this is "
            "Python 3.*",
            "*fix: run the gate on Python 3.10, or regenerate the golden on this Python*",
        ]
    )
    assert not canary.exists()


def test_a_class_pinned_by_value_round_trips_gates_and_drifts(pytester: pytest.Pytester) -> None:
    """``modelpack_by_value = models``: cloudpickle pins the class ``Net`` itself (its methods,
    its dict) by value. Regen writes it, the gate builds it (only as today's code builds it)
    and passes, the pre-commit scan accepts it, production loads it without ``models``; a
    change to one of its methods is CODE DRIFT with the source diff, never UNSAFE."""
    golden = _project(pytester, "cloudpickle", extra="modelpack_by_value = models\n")
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    trust = (pytester.path / "goldens.trust").read_text()
    assert "called cloudpickle.cloudpickle:_class_setstate (class:Net:" in trust
    assert "instantiated __by_value__:Net." in trust
    manifest = json.loads((golden / "manifest.json").read_text())
    assert "models.Net" in json.dumps(manifest["code"])
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    scan = _scan_goldens(pytester)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    # Production: the class travels in the golden; models.py is not needed to load it.
    moved = pytester.path / "elsewhere"
    moved.mkdir()
    done = _python(
        f"path = {str(golden / 'bundle.pkl')!r}\n"
        + LOADERS["cloudpickle"]
        + "import sys, torch\nassert 'models' not in sys.modules\n"
        "print(type(model).__qualname__, tuple(model(torch.ones(2, 4)).shape))\n",
        moved,
    )
    assert done.stdout.strip() == "Net (2, 3)", done.stderr

    models = pytester.path / "models.py"
    models.write_text(
        MODELS.replace("return self.post(self.act(", "return 2 * self.post(self.act(")
    )
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*CODE DRIFT — 1 * changed since the golden was made",
            "*models.Net*",
            "*-        return self.post(self.act(self.lin(x)))",
            "*+        return 2 * self.post(self.act(self.lin(x)))",
            "*behaviour: not compared: the golden pins its own code by value*",
            "*fix: revert the change, or accept it with: pytest --modelpack-regen*",
        ]
    )
    assert "UNSAFE" not in result.stdout.str()
    # The golden's own class is never built, not even for a golden from a trusted branch.
    result = _run(pytester, "--modelpack-golden", "--modelpack-trust-golden-code")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*CODE DRIFT*",
            "*behaviour: not compared: the golden pins its own code by value (class Net)*",
            "*a class is never built from a golden, even with --modelpack-trust-golden-code*",
        ]
    )
    assert "was built and runs" not in result.stdout.str()
    assert _run(pytester, "--modelpack-regen").ret == 0
    assert _run(pytester, "--modelpack-golden").ret == 0


def test_a_local_class_is_pinned_by_dill(pytester: pytest.Pytester) -> None:
    """dill pins a class defined inside a function (and cloudpickle too, without by_value)."""
    pytester.makepyfile(
        models=MODELS + "\n\ndef make_head():\n"
        "    class Head(torch.nn.Module):\n"
        "        def __init__(self):\n"
        "            super().__init__()\n"
        "            self.lin = torch.nn.Linear(3, 2)\n"
        "        def forward(self, x):\n"
        "            return self.lin(x).tanh()\n"
        "    return Head()\n",
        test_models=TESTS.format(lock=False)
        .replace("import Net", "import Net, make_head")
        .replace(
            "modelpack.check(Net(False), inputs=X)",
            "modelpack.check(torch.nn.Sequential(Net(False), make_head()), inputs=X)",
        ),
    )
    for serializer in SERIALIZERS:
        pytester.makeini(
            "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\n"
            f"modelpack_recorded = 4\nmodelpack_serializer = {serializer}\n"
        )
        result = _run(pytester, "--modelpack-regen")
        assert result.ret == 0, result.stdout.str()
        result = _run(pytester, "--modelpack-golden")
        assert result.ret == 0, result.stdout.str()
        assert "(class:Head:" in (pytester.path / "goldens.trust").read_text()
        scan = _scan_goldens(pytester)
        assert scan.returncode == 0, scan.stdout + scan.stderr
        shutil.rmtree(pytester.path / "goldens")


def test_the_seeds_lambda_passes_under_dill(seed_project: SeedProject) -> None:
    """The seed's ``self.function = lambda x: x``: UNPICKLABLE under pickle, pinned by dill."""
    seed_project.edit(
        "package.py",
        "        self.decoder = decoder\n",
        "        self.decoder = decoder\n        self.function = lambda x: x\n",
    )
    seed_project.ini(extra='modelpack_serializer = "dill"')
    assert seed_project.run().ret == 0
    assert seed_project.run("--modelpack-regen").ret == 0
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*sentiment*golden*passed*"])


def test_a_pinned_class_whose_module_was_renamed_is_code_drift_naming_the_move(
    pytester: pytest.Pytester,
) -> None:
    """``models.py`` renamed to ``nets.py``, source unchanged: cloudpickle pinned the class with
    its module name, so the golden's bytes differ from today's pickle. That is a move the user
    made, and the verdict says so (CODE DRIFT, old and new name), never UNSAFE GOLDEN."""
    _project(pytester, "cloudpickle", extra="modelpack_by_value = models\n")
    assert _run(pytester, "--modelpack-regen").ret == 0
    (pytester.path / "models.py").rename(pytester.path / "nets.py")
    ini = pytester.path / "tox.ini"
    ini.write_text(
        ini.read_text().replace("modelpack_by_value = models", "modelpack_by_value = nets")
    )
    tests = pytester.path / "test_models.py"
    tests.write_text(tests.read_text().replace("from models import", "from nets import"))
    result = _run(pytester, "--modelpack-golden")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*CODE DRIFT — * moved since the golden was made",
            "*models.Net -> nets.Net*",
            "*fix: *pytest --modelpack-regen*",
        ]
    )
    assert "UNSAFE" not in result.stdout.str()
    assert _run(pytester, "--modelpack-regen").ret == 0
    assert _run(pytester, "--modelpack-golden").ret == 0


def test_by_value_modules_split_on_spaces_and_one_that_does_not_import_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    _project(pytester, "cloudpickle", extra="modelpack_by_value = models no_such_module\n")
    result = _run(pytester, "--modelpack-regen")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*USAGE ERROR — modelpack_by_value names the module 'no_such_module', which does not "
            "import: No module named 'no_such_module'",
            "*fix: name importable modules of your project, separated by spaces or lines*",
        ]
    )
    assert "UNPICKLABLE" not in result.stdout.str()
    assert not (pytester.path / "goldens" / "test_net").exists()
