"""Issue 22, reliability round 3: models users really pickle, end to end as a user runs them.

Each case is a small user project: ``pytest --modelpack-regen`` must write its golden and
``pytest --modelpack-golden`` must then load it and compare it (the JSON report proves the golden
was replayed on its recorded examples and compared with the live model). Also: goldens planted at
every pickle protocol 0-5, a model regen refuses (with its reason, and nothing written), and
``modelpack scan`` on files that are not pickles at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import pickle
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from .conftest import QUIET

#: The user's model code: one module, every case's model in it.
MODELS = """\
import array
import collections
import dataclasses
import enum
import functools
import uuid

import numpy as np

import torch


def _filled(layer, start):
    with torch.no_grad():
        for i, p in enumerate(layer.parameters()):
            p.copy_(torch.linspace(start + i, -start - i, p.numel()).reshape(p.shape))
    return layer


class QuantNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.quantize_per_tensor(torch.linspace(-1, 1, 4), 0.05, 3, torch.qint8)

    def forward(self, x):
        return self.q.dequantize() + x


def dynamic():
    stack = torch.nn.Sequential(
        _filled(torch.nn.Linear(4, 8), 0.5), torch.nn.ReLU(), _filled(torch.nn.Linear(8, 2), 0.3)
    )
    return torch.ao.quantization.quantize_dynamic(stack, {torch.nn.Linear}, dtype=torch.qint8)


class Tagged(torch.Tensor):
    pass


class TaggedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tag = torch.randn(4, generator=torch.Generator().manual_seed(0)).as_subclass(Tagged)

    def forward(self, x):
        return self.tag * x


class DagNet(torch.nn.Module):
    def forward(self, x):
        a = [x]
        for _ in range(40):
            a = [a, a]
        return a, x * 2


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass
class Config:
    name: str
    mode: Mode
    run: uuid.UUID
    scale: array.array
    counts: collections.Counter
    order: collections.OrderedDict
    recent: collections.deque
    table: collections.defaultdict


class StdNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.7)
        self.config = Config(
            name="std",
            mode=Mode.SLOW,
            run=uuid.UUID(int=7),
            scale=array.array("d", [1.0, 2.0]),
            counts=collections.Counter("abca"),
            order=collections.OrderedDict(a=1, b=2),
            recent=collections.deque([1, 2], maxlen=4),
            table=collections.defaultdict(list, {"k": [1]}),
        )

    def forward(self, x):
        scale = self.config.scale[1] if self.config.mode is Mode.SLOW else 1.0
        return self.lin(x) * scale + self.config.counts["a"]


class Doubler:
    def __call__(self, y):
        return y * 2


class Shadow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.2)
        self.forward_helper = Doubler()  # an instance attribute shadowing the method below

    def forward_helper(self, y):
        return y

    def forward(self, x):
        return self.forward_helper(self.lin(x))


class NumpyNet(torch.nn.Module):
    # numpy values plain pickle saves and loads: structured, aligned, titled and subarray
    # dtypes, a legacy RandomState and a Generator (each restored by its own compiled
    # __setstate__).

    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.4)
        self.table = np.array([(1, 2.0), (3, 4.0)], dtype=[("id", "i4"), ("w", "f8")])
        self.aligned = np.zeros(2, dtype=np.dtype([("a", "i1"), ("b", "f8")], align=True))
        self.titled = np.ones(1, dtype=[(("Title", "t"), "i4"), ("n", [("q", "U3")])])
        self.sub = np.dtype(("i4", (2,)))
        self.legacy = np.random.RandomState(3)
        self.rng = np.random.default_rng(4)

    def forward(self, x):
        word = int(self.legacy.get_state()[1][0]) % 7
        step = int(self.rng.bit_generator.state["state"]["state"]) % 5
        return self.lin(x) * float(self.table["w"][1]) + word + step + self.sub.itemsize


class Cached:
    @functools.cached_property
    def scale(self):
        return 3.0


class DistNet(torch.nn.Module):
    # torch.distributions cache lazy properties (probs, logits) in the instance dict, as
    # functools.cached_property does: restored state sets those names.

    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.6)
        self.cat = torch.distributions.Categorical(probs=torch.tensor([0.25, 0.75]))
        self.cat.logits  # both lazy properties computed
        self.norm = torch.distributions.Normal(torch.tensor(0.5), torch.tensor(2.0))
        self.cached = Cached()
        self.cached.scale

    def forward(self, x):
        return self.lin(x) * self.cat.probs[1] + self.norm.loc + self.cached.scale


class OddDtypes(torch.nn.Module):
    # uint16 and float8 tensors: torch.save writes and loads them; plain pickle.dump writes them
    # but pickle.load cannot read them back (torch has no typed storage class for these dtypes).

    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.1)
        self.register_buffer("u16", torch.tensor([1, 2, 300, 4]).to(torch.uint16))
        self.register_buffer("f8", torch.linspace(-1, 1, 4).to(torch.float8_e4m3fn))

    def forward(self, x):
        return self.lin(x) + self.u16.to(torch.float32)[:2] + self.f8.float()[:2]
"""

TESTS = """\
import pytest
import torch
from hypothesis import strategies as st

import models

X = st.integers(0, 1000).map(
    lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
)
"""

#: One check per case, by golden name (the test function's name).
CHECKS = {
    "test_quantized": "modelpack.check(models.QuantNet(), inputs=X)",
    "test_dynamic": "modelpack.check(models.dynamic(), inputs=X)",
    "test_tagged": "modelpack.check(models.TaggedNet(), inputs=X)",
    "test_dag": "modelpack.check(models.DagNet(), inputs=X)",
    "test_shadow": "modelpack.check(models.Shadow(), inputs=X)",
    "test_numpy": "modelpack.check(models.NumpyNet(), inputs=X)",
    "test_dist": "modelpack.check(models.DistNet(), inputs=X)",
    "test_odd_dtypes_torch": "modelpack.check(models.OddDtypes(), inputs=X, serializer='torch')",
    "test_odd_dtypes": "modelpack.check(models.OddDtypes(), inputs=X)",
}

PROTOCOLS = range(6)

STD_TESTS = f"""
@pytest.mark.parametrize("protocol", {list(PROTOCOLS)})
def test_std(modelpack, protocol):
    modelpack.check(models.StdNet(), name=f"std_p{{protocol}}", inputs=X)
"""

INI = "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 4\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A user project holding MODELS; Hypothesis' home in it, as a run started there has it."""
    from hypothesis import configuration

    pytester.makepyfile(models=MODELS)
    pytester.makeini(INI)
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(pytester.path / ".hypothesis")
    try:
        yield pytester
    finally:
        configuration.set_hypothesis_home_dir(previous)


def _tests(pytester: pytest.Pytester, *names: str, extra: str = "") -> None:
    body = "".join(f"\n\ndef {n}(modelpack):\n    {CHECKS[n]}\n" for n in names)
    pytester.makepyfile(test_models=TESTS + body + extra)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, "-W", "ignore::DeprecationWarning", *args)


def _report(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    rows = json.loads((pytester.path / "report.json").read_text())["checks"]
    return {row["name"]: row for row in rows}


def _assert_compared(row: dict[str, Any]) -> None:
    """The gate loaded the golden and ran it: on its recorded examples and against the live
    model on Hypothesis inputs, every one of them equal."""
    assert row["mode"] == "golden" and row["verdict"] == "passed", row
    stages = {c["stage"]: c for c in row["comparisons"]}
    for stage in ("golden vs recorded examples", "golden vs live"):
        assert stages[stage]["inputs"] > 0, (stage, row["comparisons"])
        assert all(max(p) == 0.0 for p in stages[stage]["points"]), stages[stage]


def _regen_then_gate(
    pytester: pytest.Pytester,
    names: list[str],
    between: Any = None,
    run: Any = _run,
) -> pytest.RunResult:
    regen = run(pytester, "--modelpack-regen")
    assert regen.ret == 0, regen.stdout.str()
    regen.stdout.fnmatch_lines([f"{n} *cpu *regen *created*" for n in names], consecutive=False)
    if between is not None:
        between()
    gate = run(pytester, "--modelpack-golden", "--modelpack-report", "report.json")
    assert gate.ret == 0, gate.stdout.str()
    gate.stdout.fnmatch_lines([f"{n} *cpu *golden *passed*" for n in names], consecutive=False)
    rows = _report(pytester)
    assert sorted(rows) == sorted(names)
    for name in names:
        _assert_compared(rows[name])
    return gate


# -- 1-3: quantized tensors, quantize_dynamic, a project tensor subclass ---------------------------


@pytest.mark.parametrize(
    "name",
    [
        "test_quantized",
        "test_dynamic",
        "test_tagged",
        "test_numpy",
        "test_dist",
        "test_odd_dtypes_torch",
    ],
)
def test_model_regenerates_and_passes_the_gate(project: pytest.Pytester, name: str) -> None:
    _tests(project, name)
    _regen_then_gate(project, [name])


# -- 4: shared sub-structure in the output -------------------------------------------------------


def test_dag_of_shared_lists_in_the_output_passes_quickly(project: pytest.Pytester) -> None:
    """2**40 paths through 41 lists: walked by identity, the gate passes in seconds (a walk that
    followed every path would never end: hence a subprocess with a timeout)."""
    _tests(project, "test_dag")

    def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(*QUIET, *args, timeout=120)

    _regen_then_gate(project, ["test_dag"], run=run)
    # examples.json writes each shared list once
    examples = project.path / "goldens" / "test_dag" / "examples.json"
    assert examples.stat().st_size < 100_000


# -- 5: goldens written at every pickle protocol ----------------------------------------------------


def _rehash(folder: Path, protocol: int) -> None:
    """The manifest of a golden whose bundle.pkl was rewritten: its size, sha256 and protocol, as
    a regen at that protocol would have recorded them (no big storages: no spans)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "bundle.pkl").read_bytes()
    manifest["bundle"].update(
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), protocol=protocol
    )
    manifest["bundle"].pop("storages", None)
    manifest["bundle"].pop("pickle_sha256", None)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


@contextlib.contextmanager
def _user_module(pytester: pytest.Pytester, name: str) -> Iterator[Any]:
    """The project's module imported here, then forgotten (the runs import their own)."""
    sys.path.insert(0, str(pytester.path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(pytester.path))
        sys.modules.pop(name, None)


def test_goldens_at_every_pickle_protocol_pass_the_gate(project: pytest.Pytester) -> None:
    _tests(project, extra=STD_TESTS)
    names = [f"std_p{p}" for p in PROTOCOLS]

    def plant() -> None:
        with _user_module(project, "models") as models:
            model = models.StdNet()
            for p in PROTOCOLS:
                folder = project.path / "goldens" / f"std_p{p}"
                data = pickle.dumps(model, protocol=p)
                assert pickle.loads(data).config == model.config  # plain pickle round-trips it
                (folder / "bundle.pkl").write_bytes(data)
                _rehash(folder, p)
        # the planted files really are of each protocol (0 and 1 have no PROTO opcode)
        for p in PROTOCOLS:
            head = (project.path / "goldens" / f"std_p{p}" / "bundle.pkl").read_bytes()[:2]
            assert head == bytes([0x80, p]) if p >= 2 else head[0] != 0x80

    _regen_then_gate(project, names, between=plant)


# -- 6: an instance attribute shadowing a method of its class ------------------------------------

SHADOW_HEADLINE = (
    "modelpack: test_shadow: UNSAFE GOLDEN — the live model pickles into 1 global use the gate "
    "would refuse to load"
)
SHADOW_REASON = (
    "  models.Shadow (state set by BUILD): BUILD state sets 'forward_helper', which Shadow "
    "defines as a method or descriptor: restored state may not replace code"
)


def test_regen_refuses_state_that_shadows_a_method(project: pytest.Pytester) -> None:
    """Plain pickle saves and loads it (the instance attribute wins over the method, before and
    after), but the gate never restores state onto a name the class defines as code: regen says
    so and writes nothing, rather than writing a golden the gate would refuse."""
    _tests(project, "test_shadow")
    with _user_module(project, "models") as models:
        live = models.Shadow()
        again = pickle.loads(pickle.dumps(live))
        x = torch.ones(1, 4)
        assert torch.equal(again(x), live(x)) and isinstance(again.forward_helper, models.Doubler)
    result = _run(project, "--modelpack-regen")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            SHADOW_HEADLINE,
            SHADOW_REASON,
            "  this is your own model's pickle, not a tampered golden; nothing was written",
        ]
    )
    result.stdout.fnmatch_lines(["test_shadow *cpu *regen *failed*UNSAFE GOLDEN*"])
    goldens = project.path / "goldens"
    assert not goldens.exists() or [p.name for p in goldens.iterdir()] == []


def test_the_fix_regen_offers_for_a_shadowed_method_works(project: pytest.Pytester) -> None:
    """Whatever regen's fix line says to do must be enough: where it offers a line for the ini,
    adding it lets regen write the golden and the gate pass."""
    _tests(project, "test_shadow")
    result = _run(project, "--modelpack-regen")
    assert result.ret == 1
    result.stdout.fnmatch_lines([SHADOW_HEADLINE])
    out = result.stdout.str()
    if "modelpack_safe_globals =" in out:
        project.makeini(INI + "modelpack_safe_globals =\n    models.Shadow\n")
        _regen_then_gate(project, ["test_shadow"])


def test_a_dtype_plain_pickle_cannot_load_is_a_load_error_naming_torch_save(
    project: pytest.Pytester,
) -> None:
    """uint16 and float8 tensors: pickle.dump writes them, pickle.load fails (a torch bug), so
    regen refuses with the attribute path and the fix; the fix (serializer='torch') passes in
    test_model_regenerates_and_passes_the_gate[test_odd_dtypes_torch]."""
    _tests(project, "test_odd_dtypes")
    with _user_module(project, "models") as models:
        with pytest.raises(AttributeError, match="UntypedStorage"):
            pickle.loads(pickle.dumps(models.OddDtypes()))
    result = _run(project, "--modelpack-regen")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "modelpack: test_odd_dtypes: LOAD ERROR — pickle writes model.u16, model.f8 but its "
            "load cannot read it back",
            "  fix: ship it with serializer='torch' *",
        ]
    )
    goldens = project.path / "goldens"
    assert not goldens.exists() or [p.name for p in goldens.iterdir()] == []


# -- 7: modelpack scan on files that are not pickles ---------------------------------------------


def _scan(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelpack", "scan", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def _unreadable(result: subprocess.CompletedProcess[str], path: Path, what: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{path}: unreadable — "), result.stdout
    assert what in result.stdout, result.stdout
    assert "UNSAFE" not in result.stdout


def _valid_pickle() -> bytes:
    """A pickle of allowlisted values only (tensors, a Linear, containers): scans safe whole."""
    import collections

    model = {
        "weights": torch.arange(6.0).reshape(2, 3),
        "config": collections.OrderedDict(a=1, b=[2.0, "x"]),
        "layer": torch.nn.Linear(2, 2),
    }
    return pickle.dumps(model)


def test_scan_of_what_is_not_a_pickle_is_unreadable(tmp_path: Path) -> None:
    bundle = tmp_path / "goldens" / "model" / "bundle.pkl"
    bundle.parent.mkdir(parents=True)
    data = _valid_pickle()
    bundle.write_bytes(data)
    whole = _scan(bundle, cwd=tmp_path)
    assert whole.returncode == 0 and "safe — " in whole.stdout, whole.stdout + whole.stderr

    bundle.write_bytes(bytes(1 << 20))
    _unreadable(_scan(bundle, cwd=tmp_path), bundle, "not a pickle (top level): unknown opcode")

    for seed in range(5):
        bundle.write_bytes(random.Random(seed).randbytes(64 * 1024))
        _unreadable(_scan(bundle, cwd=tmp_path), bundle, "pickle (top level)")

    for cut in (1, 2, len(data) // 3, len(data) // 2, len(data) - 1):
        bundle.write_bytes(data[:cut])
        _unreadable(_scan(bundle, cwd=tmp_path), bundle, "truncated pickle")

    # the golden folder named instead of its bundle: the same verdict
    _unreadable(_scan(bundle.parent, cwd=tmp_path), bundle.parent / "bundle.pkl", "truncated")


def test_scan_of_a_storage_payload_made_by_a_call_is_a_verdict(tmp_path: Path) -> None:
    """``torch.storage._load_from_bytes(bytes())``: the payload is a call's result, not bytes of
    the file. The scan gives its verdict (it crashed with a traceback: exit 1 read as UNSAFE)."""
    bundle = tmp_path / "bundle.pkl"
    bundle.write_bytes(b"\x80\x02ctorch.storage\n_load_from_bytes\nc__builtin__\nbytes\n)R\x85R.")
    result = _scan(bundle, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "", result.stdout + result.stderr
    assert result.stdout.startswith(f"{bundle}: UNSAFE — "), result.stdout
    assert "builtins.bytes (called)" in result.stdout and "Traceback" not in result.stdout


def test_scan_of_a_file_in_a_top_level_folder(tmp_path: Path) -> None:
    """A file such as /tmp/model.pkl: no trust file can lie beside its folder's parent (the
    root). It used to crash on looking for one (ValueError, exit 1: read as UNSAFE)."""
    fd, name = tempfile.mkstemp(suffix=".pkl", dir="/tmp")
    path = Path(name)
    try:
        with open(fd, "wb") as f:
            f.write(bytes(1 << 20))
        _unreadable(_scan(path, cwd=tmp_path), path, "not a pickle")
        path.write_bytes(_valid_pickle())
        safe = _scan(path, cwd=tmp_path)
        assert safe.returncode == 0 and safe.stderr == "", safe.stdout + safe.stderr
    finally:
        path.unlink()


def test_a_protocol_1_file_in_place_of_a_quantized_golden_never_aborts_the_gate(
    project: pytest.Pytester,
) -> None:
    """torch aborts the process (SIGABRT, no exception) pickling packed quantized params at
    protocols 0-1, and a file without a PROTO opcode reads as protocol 1: the gate must not
    re-pickle the live model at that protocol, and reports the file instead of dying."""
    _tests(project, "test_dynamic")
    assert _run(project, "--modelpack-regen").ret == 0
    folder = project.path / "goldens" / "test_dynamic"
    (folder / "bundle.pkl").write_bytes(b"N.")
    _rehash(folder, 1)
    result = project.runpytest_subprocess(*QUIET, "--modelpack-golden", timeout=120)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_dynamic*cpu*golden*failed*"])


# -- 8: a pydantic model (its own __getstate__/__setstate__) held by the model -------------------

PYDANTIC_MODELS = """\
import pydantic
import torch


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    scale: float
    name: str = "net"
    _calls: int = pydantic.PrivateAttr(default=0)


class Labels(pydantic.RootModel[list[str]]):
    pass


class ConfiguredNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1, 1, 8).reshape(2, 4))
            self.lin.bias.fill_(0.5)
        self.settings = Settings(scale=2.0, offset=1.5)  # offset: an extra field
        self.labels = Labels(["neg", "pos"])

    def forward(self, x):
        return self.lin(x) * self.settings.scale + self.settings.offset + len(self.labels.root)
"""


@pytest.mark.parametrize("serializer", ["pickle", "torch"])
def test_a_pydantic_config_regenerates_passes_the_gate_and_the_scan(
    project: pytest.Pytester, serializer: str
) -> None:
    """pydantic pickles a model as ``{'__dict__': ..., '__pydantic_extra__': ...}`` and restores
    it with its own ``__setstate__``: plain pickle round-trips it, and regen refused it (BUILD
    state sets '__dict__'). It is judged as the attributes it restores instead."""
    pytest.importorskip("pydantic")
    project.makepyfile(pydmodels=PYDANTIC_MODELS)
    check = f"modelpack.check(pydmodels.ConfiguredNet(), inputs=X, serializer={serializer!r})"
    project.makepyfile(
        test_models=TESTS + f"import pydmodels\n\n\ndef test_pyd(modelpack):\n    {check}\n"
    )
    with _user_module(project, "pydmodels") as pydmodels:
        live = pydmodels.ConfiguredNet()
        again = pickle.loads(pickle.dumps(live))
        assert again.settings == live.settings and again.labels == live.labels
    _regen_then_gate(project, ["test_pyd"])
    bundle = next((project.path / "goldens" / "test_pyd").glob("bundle.*"))
    scanned = _scan("--root", project.path, bundle, cwd=project.path)
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert "safe — " in scanned.stdout
