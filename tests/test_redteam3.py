"""Red-team round 3: torch.nn.modules aliases, NEWOBJ_EX, sparse tensors, planted module hooks.

Each payload is first proven live under the plain loader (in a subprocess: a segfault is a
negative return code), then refused by the restricted loader and the scan before anything runs;
benign models with the same features (forward hooks, sparse COO and CSR attributes) still pass
regen, the gate and ``modelpack scan``.
"""

from __future__ import annotations

import functools
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_modelpack import errors
from pytest_modelpack.safety import Allowlist, load_bundle, scan_file, trust_from_pickle
from pytest_modelpack.safety.nnclasses import TORCH_MODULE_CLASSES

from .adversarial_payloads import p4, sbu, sg
from .conftest import QUIET
from .test_byvalue import _rehash

ALIAS = ("torch.nn.modules.linear", "Tensor")


def long1(i: int) -> bytes:
    n = (i.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True)


def tensor_cdata() -> bytes:
    """NEWOBJ_EX torch.nn.modules.linear.Tensor(cdata=0x4141414141): torch takes the int as a
    C pointer."""
    return p4(sg(*ALIAS) + b")}" + sbu("cdata") + long1(0x4141414141) + b"s\x92")


def tensor_newobj(n: int) -> bytes:
    """NEWOBJ torch.nn.modules.linear.Tensor(n): the legacy constructor allocates n floats."""
    return p4(sg(*ALIAS) + long1(n) + b"\x85\x81")


def _plain(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = [str(cwd)] if cwd else []
    prelude = f"import sys; sys.path[:0] = {path!r}\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _proven_live(path: Path, root: Path, inputs: str) -> None:
    """Plain ``pickle.load`` of ``path``, then a call on ``torch.ones(inputs)``, runs the planted
    function: the canary beside the project's module is written (then removed for the plugin)."""
    done = _plain(
        f"import pickle, torch; pickle.load(open({str(path)!r}, 'rb'))(torch.ones({inputs}))", root
    )
    assert done.returncode == 0, done.stderr
    canary = root / "canary"
    assert canary.exists(), "the payload did not run under the plain loader"
    canary.unlink()


def _write(tmp_path: Path, data: bytes, name: str = "bundle.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, allowlist: Allowlist, *why: str) -> str:
    """Scan and loader both refuse (UNSAFE), each naming every ``why``."""
    verdict = scan_file(path, allowlist)
    assert verdict.error is None, verdict.error
    scanned = " | ".join(f"{r.name} ({r.role}): {w}" for r, w in verdict.refused)
    with pytest.raises(errors.UnsafeGolden) as info:
        load_bundle(path, allowlist)
    loaded = str(info.value)
    for text in why:
        assert text in scanned, scanned
        assert text in loaded, loaded
    return loaded


# -- finding 1 and 5: torch.nn.modules aliases and NEWOBJ_EX ------------------------------------


def test_module_class_list_is_the_installed_torch_s() -> None:
    found = {
        (mod, name)
        for mod, module in list(sys.modules.items())
        if mod.startswith("torch.nn.modules.") and module is not None
        for name, value in vars(module).items()
        if name[:1].isupper()
        and isinstance(value, type)
        and issubclass(value, torch.nn.Module)
        and (value.__module__, value.__qualname__) == (mod, name)
    }
    assert found == TORCH_MODULE_CLASSES
    for alias in ("Tensor", "Parameter", "Buffer", "Size", "OrderedDict", "NamedTuple"):
        assert ("torch.nn.modules.linear", alias) not in TORCH_MODULE_CLASSES


def test_tensor_alias_with_cdata_is_refused_before_torch_crashes(tmp_path: Path) -> None:
    path = _write(tmp_path, tensor_cdata())
    live = _plain(f"import pickle; pickle.load(open({str(path)!r}, 'rb'))")
    assert live.returncode < 0, (live.returncode, live.stderr[-300:])  # SIGSEGV
    _refused(path, Allowlist(None), "torch.nn.modules.linear.Tensor", "not an nn.Module class")


def test_tensor_alias_newobj_allocates_what_the_golden_says_and_is_refused(
    tmp_path: Path,
) -> None:
    small = _write(tmp_path, tensor_newobj(12345), "small.pkl")
    live = _plain(f"import pickle; print(pickle.load(open({str(small)!r}, 'rb')).numel())")
    assert live.returncode == 0 and live.stdout.split() == ["12345"], live.stderr
    bomb = _write(tmp_path, tensor_newobj(400_000_000))  # 1.6 GB from 17 bytes
    _refused(bomb, Allowlist(None), "not an nn.Module class of torch.nn.modules")


def test_alias_of_a_torch_registry_function_is_refused(tmp_path: Path) -> None:
    data = p4(sg("torch.nn.modules.module", "register_module_forward_hook"))
    _refused(_write(tmp_path, data), Allowlist(None), "register_module_forward_hook")


def test_newobj_ex_of_a_function_alias_is_refused(tmp_path: Path) -> None:
    data = p4(
        sg("torch.nn.modules.linear_cross_entropy_options", "NamedTuple") + sbu("T") + b"\x85}\x92"
    )
    _refused(_write(tmp_path, data), Allowlist(None), "linear_cross_entropy_options.NamedTuple")


def test_newobj_ex_keyword_arguments_need_the_live_model_s_own(tmp_path: Path) -> None:
    # An allowed class, instantiated with keyword arguments: refused by both, without trust.
    linear = sg("torch.nn.modules.linear", "Linear")
    data = p4(linear + b")}" + sbu("bias") + b"\x88s\x92")
    _refused(_write(tmp_path, data), Allowlist(None), "keyword arguments (**bias=bool)")
    # Trusted where the live model's own pickle makes that very call (a class whose
    # __getnewargs_ex__ has keyword arguments); another shape stays refused.
    (tmp_path / "kwmod.py").write_text(
        "class Point:\n"
        "    def __new__(cls, *, x=0):\n"
        "        self = super().__new__(cls)\n"
        "        self.x = x\n"
        "        return self\n"
        "    def __getnewargs_ex__(self):\n"
        "        return (), {'x': self.x}\n"
        "def make():\n"
        "    return 0\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import kwmod

        live = pickle.dumps(kwmod.Point(x=3), protocol=4)
        trusted = Allowlist(tmp_path, trust=trust_from_pickle(live))
        path = _write(tmp_path, live, "point.pkl")
        assert not scan_file(path, trusted).refused
        assert load_bundle(path, trusted).x == 3
        other = live.replace(b"K\x03", b"\x8c\x01a", 1)  # x='a': another shape
        assert other != live
        _refused(_write(tmp_path, other, "other.pkl"), trusted, "**x=str")
        # NEWOBJ_EX of a function: a clear refusal, never a raw TypeError (LOAD ERROR).
        func = _write(tmp_path, p4(sg("kwmod", "make") + b")}\x92"), "func.pkl")
        with pytest.raises(errors.UnsafeGolden, match="kwmod.make .instantiated.: not a class"):
            load_bundle(func, Allowlist(tmp_path, ["kwmod:make"]))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("kwmod", None)


# -- finding 2: sparse tensors ------------------------------------------------------------------


def _sparse_holder(weight: torch.Tensor) -> bytes:
    ident = torch.nn.Identity()
    ident.register_parameter("weight", torch.nn.Parameter(weight, requires_grad=False))
    return pickle.dumps(ident, protocol=4)


def test_out_of_range_sparse_index_is_refused_before_use(tmp_path: Path) -> None:
    coo = torch.sparse_coo_tensor(
        torch.tensor([[10**8], [0]]), torch.tensor([1e30]), (8, 4), check_invariants=False
    )
    path = _write(tmp_path, _sparse_holder(coo))
    live = _plain(f"import pickle; pickle.load(open({str(path)!r}, 'rb')).weight.to_dense()")
    assert live.returncode < 0, (live.returncode, live.stderr[-300:])  # out-of-bounds write
    loaded = _refused_load(path)
    assert "invalid sparse tensor" in loaded and "found index 100000000" in loaded
    csr = torch.sparse_csr_tensor(
        torch.tensor([0, 1, 2]),
        torch.tensor([0, 10**6]),
        torch.tensor([1.0, 2.0]),
        (2, 3),
        check_invariants=False,
    )
    loaded = _refused_load(_write(tmp_path, _sparse_holder(csr), "csr.pkl"))
    assert "invalid sparse tensor" in loaded


def _refused_load(path: Path) -> str:
    with pytest.raises(errors.UnsafeGolden) as info:
        load_bundle(path, Allowlist(None))
    return str(info.value)


def test_valid_sparse_tensors_load(tmp_path: Path) -> None:
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 7], [3, 1]]), torch.tensor([1.0, 2.0]), (8, 4))
    csr = coo.to_dense().to_sparse_csr()
    for weight in (coo, coo.coalesce(), csr):
        path = _write(tmp_path, _sparse_holder(weight))
        assert not scan_file(path, Allowlist(None)).refused
        got = load_bundle(path, Allowlist(None)).weight
        assert got.layout == weight.layout and torch.equal(got.to_dense(), weight.to_dense())


# -- finding 3: callables planted into nn.Module's private attributes ---------------------------

HOOKS = """\
import functools
import io
import pathlib

import torch

CANARY = pathlib.Path(__file__).with_name("canary")


def double(module, inputs, output):
    return output * 2


def scale_in(k, module, args):
    return (args[0] * k,)


def touch(*args):
    CANARY.write_text("ran")
    return args[-1]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        self.body[0].register_forward_hook(double)
        self.body[2].register_forward_pre_hook(functools.partial(scale_in, 0.5))
        self.touched = touch
        self.coo = torch.sparse_coo_tensor(torch.tensor([[0, 3], [1, 0]]), torch.tensor([1.0, 2.0]), (4, 4))
        self.csr = torch.eye(4).to_sparse_csr()

    def forward(self, x):
        return self.body(x @ self.coo.to_dense() + x @ self.csr.to_dense())
"""

#: What an attacker runs: the live model with ``_compiled_call_impl`` (torch's __getstate__
#: drops it) or a hook dict of another module set to the project's own trusted function.
_PLANT = """\
import pickle, sys, torch
import hooks
model = hooks.Net()
where = sys.argv[2]
if where == "compiled":
    torch.nn.Module.__getstate__ = lambda self: self.__dict__.copy()
    model.body[2]._compiled_call_impl = hooks.touch
else:
    model.body[2]._forward_hooks[99] = hooks.touch
data = pickle.dumps(model, protocol=4)
open(sys.argv[1], "wb").write(data)
"""


@pytest.fixture
def hook_project(tmp_path: Path) -> Path:
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "plant.py").write_text(_PLANT)
    return tmp_path


def _live_trust(root: Path) -> tuple[Allowlist, bytes]:
    sys.path.insert(0, str(root))
    try:
        import hooks

        live = pickle.dumps(hooks.Net(), protocol=4)
    finally:
        sys.path.remove(str(root))
    return Allowlist(root, trust=trust_from_pickle(live)), live


@pytest.mark.parametrize("where", ["compiled", "hook"])
def test_planted_private_callable_runs_under_plain_pickle_and_is_refused(
    hook_project: Path, where: str
) -> None:
    root = hook_project
    path = root / "planted.pkl"
    done = _plain(
        f"import runpy, sys; sys.argv = ['plant', {str(path)!r}, {where!r}]\n"
        "runpy.run_path('plant.py')",
        root,
    )
    assert done.returncode == 0, done.stderr
    _proven_live(path, root, "1, 4")
    canary = root / "canary"
    try:
        allowlist, honest = _live_trust(root)
        # The honest pickle (hooks registered, a partial, sparse attributes) loads.
        ok = _write(root, honest, "honest.pkl")
        assert not scan_file(ok, allowlist).refused
        model = load_bundle(ok, allowlist)
        assert len(model.body[0]._forward_hooks) == 1
        assert len(model.body[2]._forward_pre_hooks) == 1
        key = (
            "_compiled_call_impl=G:hooks.touch"
            if where == "compiled"
            else "_forward_hooks[]=G:hooks.touch"
        )
        _refused(path, allowlist, key)
        # Without the live model's trust, even the honest hooks are named, not run.
        verdict = scan_file(ok, Allowlist(root))
        assert any("_forward_hooks[]=G:hooks.double" in why for _, why in verdict.refused)
        with pytest.raises(errors.UnsafeGolden):
            load_bundle(ok, Allowlist(root))
        assert not canary.exists()
    finally:
        sys.modules.pop("hooks", None)


def test_nn_module_own_none_attribute_never_takes_a_callable(tmp_path: Path) -> None:
    # A Linear instance in _compiled_call_impl (no named function at all): torch never pickles
    # anything there, so the loader refuses any callable, whatever the trust.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    honest = pickle.dumps(model, protocol=4)
    allowlist = Allowlist(None, trust=trust_from_pickle(honest))
    original = torch.nn.Module.__getstate__
    torch.nn.Module.__getstate__ = lambda self: self.__dict__.copy()  # type: ignore[method-assign]
    try:
        model.__dict__["_compiled_call_impl"] = torch.nn.Linear(2, 2)
        data = pickle.dumps(model, protocol=4)
    finally:
        torch.nn.Module.__getstate__ = original  # type: ignore[method-assign]
    with pytest.raises(errors.UnsafeGolden) as info:
        load_bundle(_write(tmp_path, data), allowlist)
    assert "nn.Module's '_compiled_call_impl'" in str(info.value)


# -- end to end: regen, gate and scan -----------------------------------------------------------

TESTS = """\
import torch
from hypothesis import strategies as st
from hooks import Net

X = st.integers(0, 1000).map(lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s)))


def test_net(modelpack):
    modelpack.check(Net(), inputs=X)
"""


def _scan(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_modelpack.cli", "scan", "--root", ".", "goldens"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gate_passes_hooks_and_sparse_and_refuses_planted_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(hooks=HOOKS, test_models=TESTS)
    pytester.makeini(
        "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 4\n"
    )
    (pytester.path / "plant.py").write_text(_PLANT)
    run = functools.partial(pytester.runpytest_subprocess, *QUIET)
    result = run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result = run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    scan = _scan(pytester.path)
    assert scan.returncode == 0, scan.stdout + scan.stderr

    golden = pytester.path / "goldens" / "test_net"
    honest = (golden / "bundle.pkl").read_bytes()
    for where, key in (
        ("compiled", "_compiled_call_impl=G:hooks.touch"),
        ("hook", "_forward_hooks[]=G:hooks.touch"),
    ):
        done = _plain(
            f"import runpy, sys; sys.argv = ['plant', 'goldens/test_net/bundle.pkl', {where!r}]\n"
            "runpy.run_path('plant.py')",
            pytester.path,
        )
        assert done.returncode == 0, done.stderr
        _rehash(golden)
        result = run("--modelpack-golden")
        assert result.ret == 1
        result.stdout.fnmatch_lines(
            [
                "*UNSAFE GOLDEN — 1 global use refused; nothing from the golden was run",
                f"*torch.nn.modules.linear.Linear (state set by BUILD): BUILD state puts*{key}*",
                "*fix: do not trust this file*",
            ]
        )
        assert not (pytester.path / "canary").exists()
        scan = _scan(pytester.path)
        assert scan.returncode == 1 and key in scan.stdout, scan.stdout + scan.stderr

    # The torch alias that crashed the gate (SIGSEGV): a clear refusal now.
    (golden / "bundle.pkl").write_bytes(tensor_cdata())
    _rehash(golden)
    result = run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*UNSAFE GOLDEN — 1 global use refused; nothing from the golden was run",
            "*torch.nn.modules.linear.Tensor (referenced)*",
            "*fix: do not trust this file*",
        ]
    )
    assert _scan(pytester.path).returncode == 1
    (golden / "bundle.pkl").write_bytes(honest)
    _rehash(golden)


# -- BUILD forms pickle.dump never writes: a list of pairs, two BUILDs, a hook set afterwards -----

#: What an attacker writes, as bytes pickle.dump never makes: ``sys.argv[2]`` picks the form.
_FORMS = """\
import copyreg, io, pickle, struct, sys
import hooks

model = hooks.Net()
lin, form = model.body[2], sys.argv[2]


class Forger(pickle._Pickler):
    def reducer_override(self, obj):
        if obj is not lin or form not in ("list", "pairs"):
            return NotImplemented
        if form == "pairs":  # two pairs: the shape of pickle's own (dict, slots) state
            state = (("_compiled_call_impl", hooks.touch), ("training", False))
        else:
            state = [*vars(lin).items(), ("_compiled_call_impl", hooks.touch)]
        return (copyreg.__newobj__, (type(lin),), state)


buf = io.BytesIO()
p = Forger(buf, protocol=4)
p.dump(model)
data = buf.getvalue()
get = lambda i: b"j" + struct.pack("<I", i)
text = lambda t: b"\\x8c" + bytes([len(t)]) + t.encode()
touch = p.memo[id(hooks.touch)][0]
if form == "again":  # a second BUILD on the Linear, after the whole model
    pair = text("_compiled_call_impl") + get(touch) + b"\\x86"
    data = data[:-1] + get(p.memo[id(lin)][0]) + b"(" + pair + b"lb0."
elif form == "after":  # a hook set in the Linear's own hook dict, after its BUILD
    hooks_of = p.memo[id(lin._forward_hooks)][0]
    data = data[:-1] + get(hooks_of) + b"Kc" + get(touch) + b"s0."
open(sys.argv[1], "wb").write(data)
"""


@pytest.mark.parametrize(
    ("form", "why"),
    [
        ("list", "BUILD state is a list, not a dict"),
        ("pairs", "BUILD state is a tuple, not a dict"),
        ("again", "a second BUILD on one object"),
        ("after", "SETITEM changes a container a BUILD already restored"),
    ],
)
def test_build_forms_pickle_never_writes_run_under_plain_pickle_and_are_refused(
    hook_project: Path, form: str, why: str
) -> None:
    """nn.Module.__setstate__ is ``self.__dict__.update(state)``: a list (or tuple) of pairs
    sets ``_compiled_call_impl`` past every check of a dict state; a second BUILD on a module,
    or a hook put into its dict after its BUILD was judged, does the same later. Each runs the
    project's own function under plain pickle; the scan and the loader refuse each."""
    root = hook_project
    (root / "forms.py").write_text(_FORMS)
    path = root / f"{form}.pkl"
    made = _plain(
        f"import runpy, sys; sys.argv = ['forms', {str(path)!r}, {form!r}]\n"
        "runpy.run_path('forms.py')",
        root,
    )
    assert made.returncode == 0, made.stderr
    _proven_live(path, root, "1, 4")
    canary = root / "canary"
    try:
        allowlist, _ = _live_trust(root)
        _refused(path, allowlist, why)
        assert not canary.exists()
    finally:
        sys.modules.pop("hooks", None)


BOUND = """\
import pathlib

import torch

CANARY = pathlib.Path(__file__).with_name("canary")


def touch(*args):
    CANARY.write_text("ran")
    return args[-1]


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.cb = self.helper  # a bound method: pickled as getattr(<M>, 'helper')
        self.touched = touch

    def helper(self, x):
        return x

    def forward(self, x):
        return self.cb(self.lin(x))
"""


def test_getattr_of_a_built_object_fetches_only_the_method_the_live_pickle_fetches(
    tmp_path: Path,
) -> None:
    """The live model's bound method makes ``getattr(<M>, 'helper')`` trusted; a golden that
    then fetches ``getattr(<M>, '__dict__')`` after M's BUILD gets M's own instance dict and sets
    ``_compiled_call_impl`` in it, past every BUILD check: proven live under plain pickle, refused
    by the scan and the loader. The live model's own bound method still loads."""
    import struct

    (tmp_path / "bound.py").write_text(BOUND)
    sys.path.insert(0, str(tmp_path))
    try:
        import bound

        model = bound.M()
        buf = io.BytesIO()
        pickler = pickle._Pickler(buf, protocol=4)  # type: ignore[attr-defined]
        pickler.dump(model)
        live = buf.getvalue()
        get = lambda i: b"j" + struct.pack("<I", i)  # noqa: E731
        me, touch = pickler.memo[id(model)][0], pickler.memo[id(bound.touch)][0]
        forged = (
            live[:-1]
            + sg("builtins", "getattr")
            + get(me)
            + sbu("__dict__")
            + b"\x86R"
            + sbu("_compiled_call_impl")
            + get(touch)
            + b"s0."
        )
        path = _write(tmp_path, forged, "forged.pkl")
        _proven_live(path, tmp_path, "1, 2")
        canary = tmp_path / "canary"
        allowlist = Allowlist(tmp_path, trust=trust_from_pickle(live))
        loaded = load_bundle(_write(tmp_path, live, "live.pkl"), allowlist)
        assert loaded.cb.__func__ is bound.M.helper and loaded.cb.__self__ is loaded
        _refused(path, allowlist, "getattr of '__dict__' of a built object")
        assert not canary.exists()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bound", None)
