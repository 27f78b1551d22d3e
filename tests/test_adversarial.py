"""Issue 10: an adversarial corpus, each payload proven live, then refused with no side effect.

For every payload in tests/adversarial_payloads.py:

1. live: a fresh process loads it the naive way (plain ``pickle.load`` or ``torch.load(path,
   weights_only=False)``, tests/naive_reader.py, one fork per payload) and the canary file appears,
   the process dies or runs out of memory under a cap, hangs, or numpy takes the forged state;
2. refused: ``modelpack scan`` exits 1 (UNSAFE), the loader raises UNSAFE GOLDEN, and the gate
   (``pytest --modelpack-golden`` on a user project whose manifest's sha256/size were updated as
   an attacker would) fails with the UNSAFE GOLDEN headline; the canary never appears.

Then: trust derived from the live model (zero configuration for everyday models, nothing the live
pickle never does), and a Hypothesis property over generated opcode streams: the scanner and the
loader never crash or hang, and anything the loader would run, the scanner reported.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_modelpack import cli, errors
from pytest_modelpack.safety import (
    Allowlist,
    load_bundle,
    loads_bundle,
    scan_file,
    scan_stream,
    trust_from_pickle,
)
from pytest_modelpack.safety.machine import Refused, Session
from pytest_modelpack.safety.refs import ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import interpret_file

from .adversarial_payloads import PAYLOADS, os_system, p4, sbu, sg
from .conftest import SeedProject

HERE = Path(__file__).resolve().parent
LABELS = list(PAYLOADS)
TOOLS = "def touch_file(path):\n    open(path, 'w').close()\n    return 0\n"


# --------------------------------------------------------------------------- 1. live


@pytest.fixture(scope="module")
def liveness(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every payload loaded naively, each in its own fork of one process (torch imported once)."""
    root = tmp_path_factory.mktemp("live")
    (root / "tools.py").write_text(TOOLS)
    cases = []
    for i, (label, (build, how, _effect)) in enumerate(PAYLOADS.items()):
        canary = root / f"canary{i}"
        path = root / f"payload{i}.bin"
        path.write_bytes(build(canary))
        cases.append({"label": label, "how": how, "file": str(path), "project": str(root)})
    (root / "cases.json").write_text(json.dumps(cases))
    results = root / "results.json"
    subprocess.run(
        [sys.executable, str(HERE / "naive_reader.py"), str(root / "cases.json"), str(results)],
        check=True,
        cwd=root,
        timeout=300,
    )
    out = json.loads(results.read_text())
    for i, label in enumerate(PAYLOADS):
        out[label]["canary"] = (root / f"canary{i}").exists()
    return out


@pytest.mark.parametrize("label", LABELS)
def test_payload_is_live(liveness: dict[str, Any], label: str) -> None:
    """Control: the naive reader runs each payload (or is brought down by it)."""
    effect = PAYLOADS[label][2]
    got = liveness[label]
    if effect == "canary":
        assert got["canary"], got
    elif effect == "crash":
        assert (
            got["status"] in ("signal", "timeout")  # killed, or still grinding at the deadline
            or got["code"] == 3
            or "allocate" in got["stdout"]
            or "MemoryError" in got["stdout"]
        ), got
    elif effect == "hang":
        assert got["status"] == "timeout", got
    elif "=" in effect:  # flags=63, itemsize=4: numpy took the forged dtype state
        assert effect in got["stdout"], got
    else:  # "error": not live; what is tested is that the refusal says the right thing
        assert got["status"] == "exit" and got["code"] == 1, got


# --------------------------------------------------------------------------- 2. refused


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "tools.py").write_text(TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("tools", None)  # other tests' projects have a tools.py of their own


@pytest.mark.parametrize("label", LABELS)
def test_scan_and_loader_refuse(
    project_dir: Path, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = project_dir / "canary"
    path = project_dir / "bundle.pkl"
    path.write_bytes(PAYLOADS[label][0](canary))
    code = cli.main(["scan", "--root", str(project_dir), str(path)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_UNSAFE, out
    assert out.startswith(f"{path}: UNSAFE — ")
    with pytest.raises(errors.UnsafeGolden) as info:
        load_bundle(path, Allowlist(project_dir))
    assert "UNSAFE GOLDEN" in info.value.headline
    assert not canary.exists()


RIGHT_WORDS = {
    "persistent id": "<persistent id>.PERSID (referenced): a persistent id: pickle.dump never*",
    "out-of-band buffer": "<out-of-band buffer>.NEXT_BUFFER (referenced): out-of-band buffers*",
    # a standard-library name, never "renamed project code" with advice to alias it
    "__builtin__.eval at protocol 4": "__builtin__.eval (referenced): not on the allowlist: "
    "standard library code",
    "bytearray rewritten before _load_from_bytes": "<value>.bytearray (called): SETITEM mutates*",
    "numpy dtype flags via BUILD": "numpy.dtype (state set by BUILD): sets a numpy dtype's state*",
    "numpy structured dtype flags via BUILD": "numpy.dtype (state set by BUILD): sets a numpy*",
    "numpy structured dtype item size via BUILD": "numpy.dtype (state set by BUILD): sets a numpy*",
    "numpy dtype rebuilt while an array uses it": "numpy.dtype (state set by BUILD): sets the "
    "state of a numpy dtype already in use*",
    "project function called by REDUCE": "tools.touch_file (*): a project function the live "
    "model's own pickle never references: a golden may neither call it nor store it*",
}


@pytest.fixture
def gate_project(seed_project: SeedProject) -> SeedProject:
    seed_project.write("tools.py", TOOLS)
    names = [f"adv{i}" for i in range(len(LABELS))]
    seed_project.write(
        "test_models.py",
        "import pytest\nfrom strategies import sentences\n\n\n"
        f"@pytest.mark.parametrize('name', {names!r})\n"
        "def test_adv(modelpack, sentiment_model, name):\n"
        "    modelpack.check(sentiment_model, name=name, inputs=sentences())\n",
    )
    seed_project.ini(examples=2, recorded=2)
    return seed_project


def test_gate_refuses_every_payload(gate_project: SeedProject) -> None:
    """All payloads planted as goldens of one project, hashes fixed up: one gate run."""
    result = gate_project.run("--modelpack-regen", "--modelpack-device", "cpu")
    assert result.ret == 0, result.stdout.str()
    canary = gate_project.path / "canary"
    for i, label in enumerate(LABELS):
        folder = gate_project.golden(f"adv{i}")
        data = PAYLOADS[label][0](canary)
        (folder / "bundle.pkl").write_bytes(data)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["bundle"]["size"] = len(data)
        manifest["bundle"]["sha256"] = hashlib.sha256(data).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    result = gate_project.run("--modelpack-golden", "--modelpack-device", "cpu")
    out = result.stdout.str()
    assert result.ret == 1, out
    for i, label in enumerate(LABELS):
        result.stdout.fnmatch_lines(
            [f"modelpack: adv{i}: UNSAFE GOLDEN — * refused; nothing from the golden was run"]
        )
        if label in RIGHT_WORDS:
            result.stdout.fnmatch_lines([f"  {RIGHT_WORDS[label]}"])
    # Once per payload in the failure sections (with CI=true, pytest repeats whole messages in
    # the short summary too, so count before it).
    failures = out.split("short test summary info")[0]
    assert failures.count("fix: do not trust this file: restore the golden") == len(LABELS)
    assert "Traceback" not in out and "CORRUPT" not in out and "LOAD ERROR" not in out
    assert "alias" not in out  # a stdlib name is not renamed project code
    assert not canary.exists()


# --------------------------------------------------------------------------- live trust


def _tiny_models() -> dict[str, Any]:
    import collections
    import datetime
    import pathlib

    import torch

    torch.manual_seed(0)
    models: dict[str, Any] = {
        "encoder": torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(8, 2, 16), 1, enable_nested_tensor=False
        ),
        "mha": torch.nn.MultiheadAttention(8, 2),
        "values": {
            "path": pathlib.Path("a/b"),
            "date": datetime.date(2024, 1, 2),
            "counter": collections.Counter("aab"),
            "sparse": torch.eye(3).to_sparse(),
            "spectral": torch.nn.utils.spectral_norm(torch.nn.Linear(3, 3)),
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models["qtensor"] = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    models["bert"] = transformers.BertForSequenceClassification(config).eval()
    gpt2 = transformers.GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    models["gpt2"] = transformers.GPT2LMHeadModel(gpt2).eval()
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(
        tokenizers.models.WordPiece({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    models["wordpiece"] = tok
    return models


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, Any]:
    return _tiny_models()


@pytest.mark.parametrize(
    "name", ["encoder", "mha", "values", "qtensor", "bert", "gpt2", "wordpiece"]
)
def test_live_trust_loads_everyday_models_with_zero_configuration(
    tiny_models: dict[str, Any], name: str
) -> None:
    import torch

    model = tiny_models[name]
    data = pickle.dumps(model)
    bare = scan_stream(io.BytesIO(data), Allowlist(None))
    allowlist = Allowlist(None, trust=trust_from_pickle(data))
    verdict = scan_stream(io.BytesIO(data), allowlist)
    assert verdict.safe, verdict.refused
    loaded = load_bundle_bytes(data, allowlist)
    assert type(loaded) is type(model)
    if name in ("bert", "gpt2"):
        ids = torch.tensor([[1, 2, 3]])
        with torch.no_grad():
            assert torch.equal(model(ids).logits, loaded(ids).logits)
        assert bare.refused, "the built-in policy alone should not cover transformers"
    if name == "wordpiece":
        assert loaded.encode("a b").ids == model.encode("a b").ids


def load_bundle_bytes(data: bytes, allowlist: Allowlist) -> Any:
    from pytest_modelpack.safety import loads_bundle

    return loads_bundle(data, allowlist)


def test_live_trust_refuses_what_the_live_pickle_never_does(
    tiny_models: dict[str, Any], project_dir: Path
) -> None:
    """transformers.pipeline, os.system, a project function through functools.partial: none of
    them is called by the live BERT's pickle, so none is trusted for its golden."""
    canary = project_dir / "canary"
    allowlist = Allowlist(project_dir, trust=trust_from_pickle(pickle.dumps(tiny_models["bert"])))
    attacks = {
        "transformers.pipeline": p4(sg("transformers", "pipeline") + sbu("fill-mask") + b"\x85R"),
        "os.system": os_system(canary),
        "functools.partial": PAYLOADS["functools.partial project function"][0](canary),
    }
    for name, data in attacks.items():
        verdict = scan_stream(io.BytesIO(data), allowlist)
        assert name in {ref.name for ref, _ in verdict.refused}, verdict.refused
        with pytest.raises(errors.UnsafeGolden):
            load_bundle_bytes(data, allowlist)
    assert not canary.exists()


def test_safe_globals_package_pattern_trusts_classes_not_calls() -> None:
    """`transformers.*` in modelpack_safe_globals trusts the package's classes in one line (built
    and restored), never a call of its functions."""
    allowlist = Allowlist(None, ["transformers.*"])
    newobj = p4(sg("transformers.models.bert.modeling_bert", "BertModel") + b")\x81")
    assert scan_stream(io.BytesIO(newobj), allowlist).safe
    call = p4(sg("transformers", "pipeline") + sbu("fill-mask") + b"\x85R")
    assert not scan_stream(io.BytesIO(call), allowlist).safe


def test_regen_says_the_live_model_is_the_authors_own(seed_project: SeedProject) -> None:
    """A live model whose own pickle the gate could not load (a slice of a string: the call
    table takes slices of ints) gets its own message: the author's code, not a tampered golden,
    and nothing is written."""
    seed_project.edit(
        "conftest.py",
        "return build_model(CORPUS)",
        "model = build_model(CORPUS)\n    model.window = slice(0, 'end')\n    return model",
    )
    seed_project.ini(examples=2, recorded=2)
    result = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu")
    out = result.stdout.str()
    assert result.ret == 1, out
    result.stdout.fnmatch_lines(
        [
            "modelpack: sentiment: UNSAFE GOLDEN — the live model pickles into 1 global use the "
            "gate would refuse to load",
            "  builtins.slice (called): call refused: argument 2 is a str, expected int or None",
            "  this is your own model's pickle, not a tampered golden; nothing was written",
            "  fix: change how the model pickles*",
        ]
    )
    assert not list(seed_project.golden().glob("*"))


# --------------------------------------------------------------------------- 3. bounded / DAG


def test_memo_and_tuple_floods_stay_small() -> None:
    import tracemalloc

    flood = b"\x80\x04)" + b"\x85\x94" * 200_000 + b"."
    tracemalloc.start()
    verdict = scan_stream(io.BytesIO(flood), Allowlist(None))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert verdict.safe
    assert peak < 40 * len(flood), peak  # issue 10 measured 55x before


# --------------------------------------------------------------------------- 4. property

_ALLOWED = [
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "bytearray"),
    ("torch", "Size"),
    ("torch.nn.modules.linear", "Identity"),
    ("_codecs", "encode"),
    ("numpy", "dtype"),
]
_REFUSED = [("os", "system"), ("builtins", "eval"), ("functools", "partial")]
FRAGMENTS = [
    b"(",
    b")",
    b"]",
    b"}",
    b"\x8f",
    b"N",
    b"\x88",
    b"K\x01",
    b"K\x07",
    b"J\xff\xff\xff\x7f",
    b"\x85",
    b"\x86",
    b"\x87",
    b"t",
    b"l",
    b"d",
    b"a",
    b"e",
    b"s",
    b"u",
    b"\x90",
    b"\x91",
    b"R",
    b"b",
    b"\x81",
    b"\x92",
    b"0",
    b"1",
    b"2",
    b"\x94",
    b"h\x00",
    b"h\x01",
    b"q\x05",
    b"C\x03abc",
    b"\x96\x02\x00\x00\x00\x00\x00\x00\x00xy",
    sbu("latin1"),
    sbu("f8"),
    b"Q",
    b"\x97",
    b"\x8a\x01\x05",
    *(sg(m, q) for m, q in _ALLOWED + _REFUSED),
]


def _run(data: bytes, judge: Any) -> list[Any]:
    session = Session(size=len(data), judge=judge)
    try:
        interpret_file(session, Window(io.BytesIO(data), 0, len(data)), "top level", False)
    except (ScanError, Refused):
        pass
    return session.refs


@settings(max_examples=150, deadline=2000, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=24), st.sampled_from([2, 4, 5]))
def test_scanner_and_loader_agree_on_generated_streams(parts: list[bytes], proto: int) -> None:
    data = bytes([0x80, proto]) + b"".join(parts) + b"."
    allowlist = Allowlist(None)
    scanned = {(r.module, r.qualname, r.role) for r in _run(data, None)}
    executed: list[Any] = []

    def judge(ref: Any) -> Any:
        decision = allowlist.judge(ref)
        if decision.allowed:
            executed.append(ref)
        return decision

    try:
        _run(data, judge)
    except errors.ModelpackError:
        pass
    ran = {(r.module, r.qualname, r.role) for r in executed}
    assert ran <= scanned, ran - scanned
    # and the public entry points never raise anything but the plugin's own errors
    verdict = scan_stream(io.BytesIO(data), allowlist)
    assert verdict.error is not None or verdict.globals is not None
    try:
        load_bundle_bytes(data, allowlist)
    except errors.ModelpackError:
        pass


def test_scan_of_the_example_golden_never_imports_torch() -> None:
    code = (
        "import sys; from pytest_modelpack.safety import Allowlist, scan_file;"
        f"v = scan_file({str(HERE.parent / 'example_project/goldens/sentiment/bundle.pkl')!r},"
        " Allowlist(None));"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules), len(v.globals))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("[] "), out.stdout + out.stderr


def test_scan_file_api_on_a_payload(project_dir: Path) -> None:
    path = project_dir / "x.pkl"
    path.write_bytes(os_system(project_dir / "canary"))
    verdict = scan_file(path, Allowlist(project_dir))
    assert [str(ref.role) for ref, _ in verdict.refused] == ["reference"]


def _dag(levels: int) -> list[Any]:
    node: list[Any] = [1.0]
    for _ in range(levels):
        node = [node, node]  # 2**levels paths, levels + 1 distinct lists
    return node


def _chain(n: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(n):
        node.append([])
        node = node[0]
    return root


def test_dag_output_compares_and_moves_by_identity() -> None:
    """A DAG of shared lists walked as a tree has 2**40 leaves: compare and to_device walk it by
    identity; a 5000-deep chain stops at the nesting limit instead of a RecursionError."""
    import time

    from pytest_modelpack.apply import to_device
    from pytest_modelpack.compare import compare

    data = pickle.dumps(_dag(40))
    assert len(data) < 1000  # what a golden would carry
    expected = load_bundle_bytes(data, Allowlist(None))
    start = time.perf_counter()
    assert compare(expected, _dag(40), exact=True) == []
    moved = to_device(expected, "cpu")
    assert moved[0] is moved[1]
    assert time.perf_counter() - start < 2
    diffs = compare(_chain(5000), _chain(5000), exact=True)
    assert len(diffs) == 1 and "nested deeper than 200 levels" in diffs[0].message
    assert len(to_device(_chain(5000), "cpu")) == 1


# ------------------------------------------------------------- restored state may not replace code


class _Pipeline:
    """A compound model's shape: a method the runner calls, and plain data."""

    weights = 1.0  # a class-level default: instance state may override plain data

    def preprocess(self, x: Any) -> Any:
        return x


class _Cached(_Pipeline):
    @functools.cached_property
    def scale(self) -> Any:
        return 2.0


def test_restored_state_may_set_data_but_never_code_or_specials() -> None:
    import torch

    from pytest_modelpack.safety.construct import state_keys_problem

    assert state_keys_problem(_Pipeline, {"weights": 2.0, "vocab": {"a": 1}}) is None
    assert "method or descriptor" in str(state_keys_problem(_Pipeline, {"preprocess": print}))
    assert "special attribute" in str(state_keys_problem(_Pipeline, {"__setstate__": print}))
    assert "special attribute" in str(state_keys_problem(_Pipeline, ({}, {"__class__": int})))
    # every hook pickle, copy or the data model looks up on an instance stays refused
    for hook in ("__reduce_ex__", "__reduce__", "__getstate__", "__deepcopy__", "__copy__"):
        assert "special attribute" in str(state_keys_problem(_Pipeline, {hook: print})), hook
    # the metadata functools.wraps copies onto a wrapper (torch.compile's) is plain state
    wraps = {"__module__": "m", "__qualname__": "f", "__doc__": None, "__wrapped__": print}
    assert state_keys_problem(_Pipeline, wraps) is None
    assert "method or descriptor" in str(state_keys_problem(torch.nn.Linear, {"forward": print}))
    linear = torch.nn.Linear(2, 2)
    assert state_keys_problem(torch.nn.Linear, linear.__getstate__()) is None
    # a cache the class fills itself may be restored with data, never with something callable
    assert state_keys_problem(_Cached, {"scale": 2.0}) is None
    assert "method or descriptor" in str(state_keys_problem(_Cached, {"scale": print}))
    assert "method or descriptor" in str(state_keys_problem(_Cached, {"preprocess": 2.0}))
    # a compiled __setstate__ reads the keys it knows (numpy's generators): no attribute set
    assert state_keys_problem(_Cached, {"preprocess": 2.0}, compiled=True) is None
    assert "special attribute" in str(
        state_keys_problem(_Cached, {"__class__": int}, compiled=True)
    )


def test_the_loader_refuses_a_build_that_replaces_a_method() -> None:
    """nn.Linear restored with ``forward`` set to another (trusted) function: whoever calls the
    module would run what the golden planted. The loader refuses before anything is called."""
    from .adversarial_payloads import p4, sbu, sg

    payload = p4(
        sg("torch.nn.modules.linear", "Linear")
        + b")\x81"
        + b"}"
        + sbu("forward")
        + sg("torch.nn.functional", "relu")
        + b"sb"
    )
    with pytest.raises(errors.UnsafeGolden) as info:
        loads_bundle(payload, Allowlist(None))
    assert "restored state may not replace code" in str(info.value)


def test_the_scanner_also_refuses_a_state_that_sets_a_dunder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scan mode builds nothing, but it knows a state dict's keys: ``__setstate__`` planted by a
    BUILD is refused by ``modelpack scan`` too, not only by the loader."""
    from .adversarial_payloads import p4, sbu, sg

    path = tmp_path / "planted.pkl"
    path.write_bytes(
        p4(
            sg("torch.nn.modules.linear", "Linear")
            + b")\x81"
            + b"}"
            + sbu("__setstate__")
            + sg("torch.nn.functional", "relu")
            + b"sb"
        )
    )
    assert cli.main(["scan", str(path)]) == 1
    out = capsys.readouterr().out
    assert "BUILD state sets '__setstate__': a special attribute, never plain state" in out


def test_an_object_cannot_pass_for_a_function_in_the_structure_tree() -> None:
    """Restored state may set a wrapper's ``__module__``/``__qualname__`` (torch.compile's
    wrappers carry them); the structure tree must not take those for a function's names, or a
    golden could put a container holding a planted function where the live model holds
    ``torch.tanh`` and show the same line (the planted-callables check compares these lines)."""
    import torch

    from pytest_modelpack.safety.construct import state_keys_problem
    from pytest_modelpack.walk import structure_tree

    class Holder:
        pass

    live, golden = Holder(), Holder()
    live.act = torch.tanh
    disguised = torch.nn.Sequential()
    disguised._modules["0"] = torch.nn.functional.relu  # type: ignore[assignment]
    spoof = {"__module__": "torch", "__qualname__": "_VariableFunctionsClass.tanh"}
    assert state_keys_problem(torch.nn.Sequential, spoof) is None  # allowed as plain state...
    disguised.__dict__.update(spoof)
    golden.act = disguised
    live_tree, golden_tree = structure_tree(live), structure_tree(golden)
    assert golden_tree["model.act"] != live_tree["model.act"]  # ...but it names no function
    assert golden_tree["model.act.0"].startswith("function torch.nn.functional.relu")
    # and a wrapper's names must be text
    assert "other than text" in str(state_keys_problem(Holder, {"__qualname__": print}))
    assert "special attribute" in str(state_keys_problem(Holder, {"__annotations__": {}}))


# ------------------------------------------------------------- pydantic's own state form

PYDANTIC_TOOLS = """\
import pydantic


def touch_file(path):
    open(path, 'w').close()
    return 0


class Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    scale: float = 1.0
    _calls: int = pydantic.PrivateAttr(default=0)

    def preprocess(self, x):
        return x * self.scale


class Custom(Settings):
    def __setstate__(self, state):
        super().__setstate__(state)


class Plain:
    def preprocess(self, x):
        return x
"""


def _forged(cls: type, state: Any) -> bytes:
    """A pickle of ``cls`` instantiated, then BUILD of ``state``: a forged golden's object."""
    import copyreg

    target = cls.__new__(cls)

    class Forger(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if obj is target:
                return (copyreg.__newobj__, (cls,), state)
            return NotImplemented

    buffer = io.BytesIO()
    Forger(buffer, protocol=4).dump(target)
    return buffer.getvalue()


def test_pydantic_state_is_judged_as_the_attributes_it_restores(
    project_dir: Path,
) -> None:
    """A pydantic model restores ``{'__dict__': ..., '__pydantic_private__': ...}`` with its
    own ``__setstate__``: the live model's loads, and a forged one may not shadow a method, set
    a dunder through the fields, plant a callable in a private attribute, or put that form onto
    a class whose ``__setstate__`` is not pydantic's own."""
    pytest.importorskip("pydantic")
    (project_dir / "pydtools.py").write_text(PYDANTIC_TOOLS)
    import pydtools

    try:
        settings = pydtools.Settings(scale=2.0, extra_field=3)
        # (the live model holds the function too: only where the golden puts it is forged)
        live = [settings, pydtools.Plain(), pydtools.touch_file]
        allowlist = Allowlist(project_dir, trust=trust_from_pickle(pickle.dumps(live)))
        loaded = loads_bundle(pickle.dumps(live), allowlist)
        assert loaded[0] == settings and loaded[0].extra_field == 3 and loaded[0]._calls == 0
        assert loaded[0].preprocess(1.0) == 2.0

        good = settings.__getstate__()
        planted = "puts a function, class or partial into a private attribute"
        not_form = "is not the dict pydantic's own __getstate__ writes"
        forged = {  # state -> why (the scanner refuses it too: True)
            "Settings": [
                ({"__dict__": {"preprocess": 1}}, "defines as a method or descriptor", False),
                ({"__dict__": {"__class__": int}}, "sets '__class__': a special attribute", True),
                ({"__pydantic_private__": {"_calls": pydtools.touch_file}}, planted, True),
                ({"__pydantic_extra__": {"_x": pydtools.touch_file}}, planted, True),
                ({"__pydantic_fields_set__": ["a"]}, "not a set of text", False),
                ({"__dict__": [("scale", 1.0)]}, "its fields are not a dict", False),
                ({"__pydantic_extra__": {"scale": 5.0}}, "names one attribute twice", False),
                ({"__weakref__": None}, not_form, False),
            ],
            # pydantic's form on another class, or on an override of pydantic's __setstate__
            "Plain": [({}, "sets '__dict__': a special attribute", False)],
            "Custom": [({}, "sets '__dict__': a special attribute", False)],
        }
        for name, cases in forged.items():
            for change, why, scanned in cases:
                data = _forged(getattr(pydtools, name), {**good, **change})
                with pytest.raises(errors.UnsafeGolden, match=re.escape(why)):
                    loads_bundle(data, allowlist)
                if scanned:
                    verdict = scan_stream(io.BytesIO(data), allowlist)
                    assert any(why in reason for _, reason in verdict.refused), verdict.refused
    finally:
        sys.modules.pop("pydtools", None)
