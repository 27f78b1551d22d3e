"""Unit tests of the pure safety core: scan.py, allowlist.py, load.py.

The malicious corpus is built here, byte by byte. Every payload, if unpickled naively, creates a
canary file; the live-payload controls prove that, so "the canary was not created" means the
scanner and loader stopped it, not that the payload was broken.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import time
import tracemalloc
import uuid
import warnings
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_modelpack.errors import CorruptGolden, LoadError, UnsafeGolden, UsageError  # noqa: E402
from pytest_modelpack.safety import (  # noqa: E402  # noqa: E402
    Allowlist,  # noqa: E402
    GlobalRef,
    ScanError,
    iter_globals,
    load_bundle,
    loads_bundle,
    pickle_protocol,
    scan_file,
    scan_stream,
)

from .adversarial_payloads import (  # noqa: E402
    binbytes,
    binunicode,
    os_system,
    p4,
    sbu,
    sg,
    touch,
)

ROOT = Path(__file__).resolve().parents[1]
LFB = "torch.storage._load_from_bytes"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C


# ----------------------------------------------------------------------------- fixtures/helpers


class Point:
    """Module-level (project) classes: a pickle of both memoizes this module's name."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class Pair:
    def __init__(self, a: object, b: object) -> None:
        self.a, self.b = a, b


class Smuggle:
    """Pickles as ``torch.storage._load_from_bytes(payload)``, in every protocol's own encoding."""

    def __init__(self, payload: object) -> None:
        self.payload = payload

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


@pytest.fixture(scope="module")
def allowlist() -> Allowlist:
    return Allowlist(ROOT)


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(20, 8), torch.nn.GRU(8, 8, batch_first=True), torch.nn.Linear(8, 3)
    )


def names(refs) -> set[str]:
    return {ref.name for ref in refs}


def refused_names(verdict) -> set[str]:
    return {ref.name for ref, _reason in verdict.refused}


def scan_bytes(data: bytes, allowlist: Allowlist):
    return scan_stream(io.BytesIO(data), allowlist, "<test>")


# Opcode builders for hand-crafted pickles: one set, shared with the adversarial corpus.
stack_global = sg
os_system_p2 = os_system


def legacy_stream(object_pickle: bytes) -> bytes:
    """A legacy torch.save stream around ``object_pickle``: 3 valid header pickles first."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    head = pickle.dumps(TORCH_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)
    return head + object_pickle + pickle.dumps([], 2)


def torch_zip_with(data_pkl: bytes) -> bytes:
    """A real torch.save zip checkpoint whose archive/data.pkl is replaced by ``data_pkl``."""
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data_pkl
            dst.writestr(info.filename, data)
    return out.getvalue()


# ----------------------------------------------------------------------------- the corpus


def _corpus() -> list[tuple[str, object, str, bool]]:
    """(id, builder(canary) -> bytes, a refused name, the payload is a plain-pickle.loads RCE)."""
    return [
        (
            "os.system GLOBAL p0",
            lambda c: f"cos\nsystem\n(S'{touch(c)}'\ntR.".encode(),
            "os.system",
            True,
        ),
        (
            "posix.system GLOBAL p0",
            lambda c: f"cposix\nsystem\n(S'{touch(c)}'\ntR.".encode(),
            "posix.system",
            True,
        ),
        (
            "os.system STACK_GLOBAL p4",
            lambda c: p4(stack_global("os", "system") + sbu(touch(c)) + b"\x85R"),
            "os.system",
            True,
        ),
        (
            "builtins.exec p4",
            lambda c: p4(
                stack_global("builtins", "exec") + sbu(f"open({str(c)!r}, 'w').close()") + b"\x85R"
            ),
            "builtins.exec",
            True,
        ),
        (
            "__builtin__.eval p2 (mapped to builtins.eval)",
            lambda c: (
                b"\x80\x02c__builtin__\neval\n"
                + binunicode(f"open({str(c)!r}, 'w').close()")
                + b"\x85R."
            ),
            "builtins.eval",
            True,
        ),
        (
            "INST os.system p0",
            lambda c: f"(S'{touch(c)}'\nios\nsystem\n.".encode(),
            "os.system",
            True,
        ),
        (
            "subprocess.Popen list args",
            lambda c: p4(
                stack_global("subprocess", "Popen")
                + b"(]("
                + sbu("touch")
                + sbu(str(c))
                + b"et"  # (['touch', c],)
                + b"R"
            ),
            "subprocess.Popen",
            True,
        ),
        (
            "memoized module string then BINGET",
            lambda c: p4(
                sbu("os")
                + b"\x94"
                + b"0"
                + b"h\x00"
                + sbu("system")
                + b"\x93"
                + sbu(touch(c))
                + b"\x85R"
            ),
            "os.system",
            True,
        ),
        (
            "dotted name torch + serialization.os.system",
            lambda c: p4(
                stack_global("torch", "serialization.os.system") + sbu(touch(c)) + b"\x85R"
            ),
            "torch.serialization.os.system",
            True,
        ),
        (
            "module object torch + serialization",
            lambda c: p4(stack_global("torch", "serialization")),
            "torch.serialization",
            False,
        ),
        (
            "bare payload in _load_from_bytes bytes",
            lambda c: pickle.dumps(Smuggle(os_system_p2(c)), protocol=4),
            "os.system",
            True,
        ),
        (
            "payload after a valid legacy header",
            lambda c: pickle.dumps(Smuggle(legacy_stream(os_system_p2(c))), protocol=4),
            "os.system",
            True,
        ),
        (
            "payload after a legacy header, protocol 2 text, > 64 KiB",
            lambda c: pickle.dumps(
                Smuggle(legacy_stream(os_system_p2(c)) + bytes(range(256)) * 400), protocol=2
            ),
            "os.system",
            True,
        ),
        (
            "payload after a legacy header, protocol 0 text, > 64 KiB",
            lambda c: pickle.dumps(
                Smuggle(legacy_stream(os_system_p2(c)) + bytes(range(256)) * 400), protocol=0
            ),
            "os.system",
            True,
        ),
        (
            "torch zip in _load_from_bytes with malicious data.pkl",
            lambda c: pickle.dumps(Smuggle(torch_zip_with(os_system_p2(c))), protocol=4),
            # issue 10: torch never writes a zip into a pickled storage; refused as such
            "<zip archive>.data.pkl",
            True,
        ),
        (
            "functools.partial(_load_from_bytes, payload)()",
            lambda c: p4(
                stack_global("functools", "partial")
                + stack_global("torch.storage", "_load_from_bytes")
                + binbytes(os_system_p2(c))
                + b"\x86R)R"
            ),
            "functools.partial",  # issue 10: REDUCE only calls the table, partial is not on it
            True,
        ),
        (
            "_load_from_bytes on a non-literal argument",
            lambda c: pickle.dumps(Smuggle(collections.OrderedDict()), protocol=4),
            LFB,
            False,
        ),
    ]


CORPUS = _corpus()
CORPUS_IDS = [case[0] for case in CORPUS]


@pytest.mark.parametrize(("label", "build", "refused", "live"), CORPUS, ids=CORPUS_IDS)
def test_scan_refuses_malicious(tmp_path, canary, allowlist, label, build, refused, live):
    path = tmp_path / "bundle.pkl"
    path.write_bytes(build(canary))
    verdict = scan_file(path, allowlist)
    assert not verdict.safe
    assert refused in refused_names(verdict), verdict
    assert not canary.exists()


@pytest.mark.parametrize(("label", "build", "refused", "live"), CORPUS, ids=CORPUS_IDS)
def test_load_bundle_refuses_malicious(tmp_path, canary, allowlist, label, build, refused, live):
    path = tmp_path / "bundle.pkl"
    path.write_bytes(build(canary))
    with pytest.raises(UnsafeGolden) as info:
        load_bundle(path, allowlist)
    assert "UNSAFE GOLDEN" in str(info.value)
    assert not canary.exists()


@pytest.mark.parametrize(
    ("label", "build"),
    [(case[0], case[1]) for case in CORPUS if case[3]],
    ids=[case[0] for case in CORPUS if case[3]],
)
def test_corpus_payloads_are_live(canary, label, build):
    """Control: a naive pickle.loads of each payload does create the canary."""
    data = build(canary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            obj = pickle.loads(data)
        except Exception:
            obj = None  # e.g. torch's magic-number check fails after the payload already ran
    if isinstance(obj, subprocess.Popen):
        obj.wait()
    elif label.startswith("subprocess"):
        deadline = time.monotonic() + 5
        while not canary.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert canary.exists()


def test_extension_registry_refused(allowlist):
    verdict = scan_bytes(b"\x80\x02\x82\x01.", allowlist)
    assert not verdict.safe
    assert verdict.refused[0][0].module == "<extension registry>"


def test_non_literal_stack_global_refused(allowlist):
    verdict = scan_bytes(p4(b"K\x01" + sbu("system") + b"\x93"), allowlist)
    assert refused_names(verdict) == {"<non-literal>.<non-literal>"}


def test_non_literal_load_from_bytes_where(allowlist):
    data = pickle.dumps(Smuggle(collections.OrderedDict()), protocol=4)
    (ref, reason) = scan_bytes(data, allowlist).refused[0]
    assert ref.qualname == "_load_from_bytes"
    assert ref.role == "called"  # issue 10: every refusal names the role
    assert "literal bytes" in reason


def test_malicious_torch_zip_file(tmp_path, allowlist, canary):
    path = tmp_path / "model.pt"
    path.write_bytes(torch_zip_with(os_system_p2(canary)))
    verdict = scan_file(path, allowlist)
    assert refused_names(verdict) == {"os.system"}
    (ref, _reason) = verdict.refused[0]
    assert ref.where == "zip member archive/data.pkl"


def test_malicious_legacy_torch_file(tmp_path, allowlist, canary):
    """A top-level legacy torch.save file: the object is the 4th pickle, after the magic."""
    path = tmp_path / "model.pt"
    path.write_bytes(legacy_stream(os_system_p2(canary)))
    assert refused_names(scan_file(path, allowlist)) == {"os.system"}


def test_nested_where_and_offset(allowlist, canary):
    data = pickle.dumps(Smuggle(legacy_stream(os_system_p2(canary))), protocol=4)
    (ref, _reason) = scan_bytes(data, allowlist).refused[0]
    assert ref.where.startswith("nested storage (torch.storage._load_from_bytes) at byte ")
    start = int(ref.where.rsplit(" ", 1)[1])
    nested = data[start:]
    assert nested[ref.offset : ref.offset + 1] == b"c"  # the GLOBAL opcode of os.system


# ----------------------------------------------------------------------------- benign


@pytest.mark.parametrize("protocol", range(6))
def test_project_classes_all_protocols(protocol, allowlist):
    data = pickle.dumps([Point(1, 2), Pair(Point(3, 4), "x")], protocol=protocol)
    if protocol >= 4:
        # The second class's module string comes from the memo (BINGET before STACK_GLOBAL).
        ops = [op.name for op, _arg, _pos in pickletools.genops(data)]
        idx = [i for i, name in enumerate(ops) if name == "STACK_GLOBAL"]
        assert any(ops[i - 3] in ("BINGET", "LONG_BINGET", "GET") for i in idx), ops
    refs = list(iter_globals(io.BytesIO(data)))
    assert {f"{Point.__module__}.Point", f"{Pair.__module__}.Pair"} <= names(refs)
    verdict = scan_bytes(data, allowlist)
    assert verdict.safe, verdict
    assert {ref.name: allowlist.check(ref.module, ref.qualname).kind for ref in verdict.globals}[
        f"{Point.__module__}.Point"
    ] == "project"
    loaded = loads_bundle(data, allowlist)
    assert loaded[0] == Point(1, 2) and loaded[1].b == "x"


@pytest.mark.parametrize("protocol", range(6))
def test_torch_modules_all_protocols(protocol, allowlist):
    model = build_model()
    data = pickle.dumps(model, protocol=protocol)
    verdict = scan_bytes(data, allowlist)
    assert verdict.safe, verdict.refused
    got = names(verdict.globals)
    assert {
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.sparse.Embedding",
        "torch.nn.modules.rnn.GRU",
        "torch.nn.modules.linear.Linear",
        "torch._utils._rebuild_parameter",
        LFB,
        "torch.FloatStorage",
    } <= got
    assert len(got) == len(verdict.globals)  # deduplicated
    nested = [ref for ref in verdict.globals if ref.name == "torch.FloatStorage"]
    assert nested[0].where.startswith("nested storage")
    loaded = loads_bundle(data, allowlist)
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(
            loaded[2](loaded[1](loaded[0](x))[0]), model[2](model[1](model[0](x))[0])
        )


def test_state_dict_and_large_text_payload(allowlist):
    state = build_model().state_dict()
    state["big"] = torch.arange(40000, dtype=torch.float32)  # > 64 KiB: scanned lazily
    for protocol in (0, 2, 4, 5):
        data = pickle.dumps(state, protocol=protocol)
        verdict = scan_bytes(data, allowlist)
        assert verdict.safe, (protocol, verdict)
        assert "torch.FloatStorage" in names(verdict.globals)
        loaded = loads_bundle(data, allowlist)
        assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_torch_save_files(tmp_path, allowlist):
    state = build_model().state_dict()
    zipped = tmp_path / "zip.pt"
    torch.save(state, zipped)
    verdict = scan_file(zipped, allowlist)
    assert verdict.safe, verdict
    # torch names the archive folder after the file: zip/data.pkl
    assert any(ref.where == "zip member zip/data.pkl" for ref in verdict.globals), verdict
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    verdict = scan_file(legacy, allowlist)
    assert verdict.safe, verdict
    assert "torch.FloatStorage" in names(verdict.globals)


def test_numpy_arrays(allowlist):
    np = pytest.importorskip("numpy")
    value = {"a": np.arange(6.0).reshape(2, 3), "s": np.float32(1.5), "d": np.dtype("int64")}
    for protocol in (2, 4, 5):
        data = pickle.dumps(value, protocol=protocol)
        assert scan_bytes(data, allowlist).safe
        loaded = loads_bundle(data, allowlist)
        assert np.array_equal(loaded["a"], value["a"]) and loaded["s"] == value["s"]


@pytest.fixture(scope="module")
def sentencepiece_processor(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm")
    corpus = folder / "corpus.txt"
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "model", "pickle", "golden", "test"]
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=8)) for _ in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=24, minloglevel=3
    )
    return spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))


def test_sentencepiece_processor(sentencepiece_processor, allowlist):
    data = pickle.dumps(sentencepiece_processor, protocol=4)
    verdict = scan_bytes(data, allowlist)
    assert verdict.safe, verdict
    assert "sentencepiece.SentencePieceProcessor" in names(verdict.globals)
    loaded = loads_bundle(data, allowlist)
    text = "alpha beta model"
    assert loaded.encode(text) == sentencepiece_processor.encode(text)


def test_cuda_tagged_bundle_loads_on_cpu(tmp_path, allowlist):
    """A storage saved on 'cuda:0' (location patched on CPU) loads with map_location='cpu'."""
    tensor = torch.arange(6, dtype=torch.float32)
    func, args = tensor.__reduce_ex__(2)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(args[0], buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    cpu, cuda = binunicode("cpu"), binunicode("cuda:0")
    assert raw.count(cpu) == 1
    patched = raw.replace(cpu, cuda)

    class CudaTensor:
        def __reduce__(self):
            return (func, (Smuggle(patched), *args[1:]))

    path = tmp_path / "bundle.pkl"
    path.write_bytes(pickle.dumps({"t": CudaTensor()}, protocol=4))
    assert scan_file(path, allowlist).safe
    if not torch.cuda.is_available():  # control: the tag is real, a naive load needs CUDA
        with pytest.raises(RuntimeError, match="CUDA"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pickle.loads(path.read_bytes())
    loaded = load_bundle(path, allowlist, map_location="cpu")
    assert loaded["t"].device.type == "cpu"
    assert torch.equal(loaded["t"], tensor)


def test_unseekable_stream(allowlist):
    data = pickle.dumps(build_model(), protocol=4)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._src = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            chunk = self._src.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    assert scan_stream(Pipe(), allowlist, "<pipe>").safe


def test_big_model_scans_fast_with_bounded_memory(tmp_path, allowlist):
    model = torch.nn.Embedding(8192, 1024)  # 32 MiB of weights
    path = tmp_path / "big.pkl"
    with open(path, "wb") as f:
        pickle.dump(model, f, protocol=4)
    scan_file(path, allowlist)  # warm caches (builtin allowlist)
    tracemalloc.start()
    start = time.perf_counter()
    verdict = scan_file(path, allowlist)
    elapsed = time.perf_counter() - start
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert verdict.safe
    assert elapsed < 0.2
    assert peak < 4 * 1024 * 1024  # the 32 MiB payload is never read


# ----------------------------------------------------------------------------- unreadable input


def test_truncated_pickles_give_errors(allowlist):
    data = pickle.dumps(build_model(), protocol=4)
    cuts = sorted({*range(0, len(data), max(1, len(data) // 80)), len(data) - 1, len(data) - 2})
    for cut in cuts:
        verdict = scan_bytes(data[:cut], allowlist)
        assert verdict.error is not None, cut
        assert not verdict.safe
    for protocol in (0, 2):
        data = pickle.dumps(build_model(), protocol=protocol)
        for cut in range(1, len(data), max(1, len(data) // 40)):
            assert scan_bytes(data[:cut], allowlist).error is not None, (protocol, cut)


def test_truncated_payload_length(allowlist):
    # BINBYTES8 claims 1 GiB; the file ends after 3 bytes.
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 30) + b"abc"
    assert "truncated" in scan_bytes(data, allowlist).error


def test_iter_globals_raises_scan_error():
    with pytest.raises(ScanError):
        list(iter_globals(io.BytesIO(b"\x80\x04")))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world\n",
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b'{"json": true}',
        bytes(random.Random(1).getrandbits(8) for _ in range(256)),
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n",
        b"PK\x03\x04 not really a zip",
    ],
    ids=["empty", "text", "png", "json", "random", "lfs-pointer", "fake-zip"],
)
def test_non_pickles_give_errors(tmp_path, allowlist, content):
    path = tmp_path / "bundle.pkl"
    path.write_bytes(content)
    verdict = scan_file(path, allowlist)
    assert verdict.error is not None
    assert not verdict.safe
    with pytest.raises(CorruptGolden):
        verdict.raise_if_unsafe("g")


def test_empty_file_message(tmp_path, allowlist):
    path = tmp_path / "bundle.pkl"
    path.write_bytes(b"")
    assert scan_file(path, allowlist).error == "empty file"


def test_missing_file(tmp_path, allowlist):
    assert scan_file(tmp_path / "nope.pkl", allowlist).error.startswith("unreadable")


def test_pickle_protocol(tmp_path):
    path = tmp_path / "p.pkl"
    for protocol in range(6):
        path.write_bytes(pickle.dumps([1], protocol=protocol))
        assert pickle_protocol(path) == (protocol if protocol >= 2 else 0)


def test_load_refuses_persistent_ids(allowlist):
    with pytest.raises(UnsafeGolden, match="persistent id"):
        loads_bundle(b"\x80\x02K\x01Q.", allowlist)


def test_load_truncated_is_corrupt(allowlist):
    with pytest.raises(CorruptGolden):
        loads_bundle(pickle.dumps([1, 2, 3], protocol=4)[:-3], allowlist)


# ----------------------------------------------------------------------------- allowlist


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throwaway project with one package, plus modules outside it that must never import."""
    root = tmp_path / "proj"
    pkg = f"pkg_{uuid.uuid4().hex[:8]}"
    (root / pkg).mkdir(parents=True)
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "mod.py").write_text(
        "import os\n"
        "from os import system\n"
        "from json import dumps\n"
        "value = 3\n"
        "class Good:\n"
        "    class Inner:\n"
        "        pass\n"
        "    def method(self):\n"
        "        pass\n"
        "def helper():\n"
        "    pass\n"
    )
    canary = tmp_path / "imported"
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = f"evil_{uuid.uuid4().hex[:8]}"
    (outside / f"{evil}.py").write_text(f"open({str(canary)!r}, 'w').close()\nclass Thing: pass\n")
    venv = root / ".venv" / "lib" / "site-packages"
    venv.mkdir(parents=True)
    vendored = f"vend_{uuid.uuid4().hex[:8]}"
    (venv / f"{vendored}.py").write_text(f"open({str(canary)!r}, 'w').close()\nclass Thing: pass\n")
    for folder in (root, outside, venv):
        monkeypatch.syspath_prepend(str(folder))
    yield root, pkg, evil, vendored, canary
    for name in [m for m in sys.modules if m.startswith((pkg, evil, vendored))]:
        del sys.modules[name]


def test_allowlist_project_code(project):
    root, pkg, evil, vendored, canary = project
    allow = Allowlist(root)
    mod = f"{pkg}.mod"
    for qualname in ("Good", "Good.Inner", "Good.method", "helper"):
        decision = allow.check(mod, qualname)
        assert decision.allowed and decision.kind == "project", (qualname, decision)
    assert "module object" in allow.check(mod, "os").reason
    assert "module object" in allow.check(mod, "os.system").reason
    assert "defined elsewhere" in allow.check(mod, "dumps").reason
    assert "not a class or function" in allow.check(mod, "system").reason
    assert not allow.check(mod, "value").allowed
    gone = allow.check(f"{pkg}.gone", "X")
    assert not gone.allowed and gone.missing
    assert allow.check(mod, "Nope").missing
    assert allow.classify(mod) == "project"
    assert allow.classify("torch.nn") == "third-party"
    assert allow.classify("collections") == "builtin"


def test_allowlist_never_imports_outside_the_project(project):
    root, pkg, evil, vendored, canary = project
    allow = Allowlist(root)
    for module in (evil, vendored):
        decision = allow.check(module, "Thing")
        assert not decision.allowed and not decision.missing, decision
        assert module not in sys.modules
    assert not canary.exists()
    assert allow.classify(vendored) == "third-party"


def test_allowlist_builtins_and_refusals():
    allow = Allowlist(None)
    for module, qualname in [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch", "bfloat16"),
        ("torch", "Size"),
        ("torch.nn.modules.rnn", "GRU"),
        ("collections", "OrderedDict"),
        ("numpy._core.multiarray", "_reconstruct"),
    ]:
        assert allow.check(module, qualname).allowed, (module, qualname)
    assert allow.check("collections", "OrderedDict").kind == "builtin"
    assert allow.check("torch", "Size").kind == "third-party"
    for module, qualname in [
        ("os", "system"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("builtins", "getattr"),
        ("torch", "serialization"),
        ("x", "<locals>.f"),
    ]:
        decision = allow.check(module, qualname)
        assert not decision.allowed and decision.kind == "refused", (module, qualname)


def test_allowlist_extra_entries(project):
    root, pkg, evil, vendored, canary = project
    allow = Allowlist(root, [f"{evil}.Thing", "json:JSONDecoder", "collections.abc.Mapping"])
    assert allow.check(evil, "Thing").kind == "extra"
    assert allow.check("json", "JSONDecoder").kind == "extra"
    assert allow.check("collections.abc", "Mapping").allowed
    # The dotted entry splits at the longest module prefix, so this spelling is not it.
    assert not allow.check("collections", "abc.Mapping").allowed
    assert not canary.exists()
    with pytest.raises(UsageError):
        Allowlist(root, ["not a name"])


def test_missing_project_class_is_a_load_error(project, tmp_path):
    root, pkg, evil, vendored, canary = project
    allow = Allowlist(root)
    data = p4(stack_global(f"{pkg}.renamed", "Model") + b")\x81")
    verdict = scan_bytes(data, allow)
    assert [ref.name for ref in verdict.missing] == [f"{pkg}.renamed.Model"]
    with pytest.raises(LoadError):
        verdict.raise_if_unsafe("g")
    with pytest.raises(ModuleNotFoundError):
        loads_bundle(data, allow)


def test_golden_cannot_widen_the_allowlist(allowlist, canary):
    """A stream that mentions an allowed name first is judged name by name all the same."""
    data = p4(
        stack_global("collections", "OrderedDict")
        + b"0"
        + stack_global("os", "system")
        + sbu(touch(canary))
        + b"\x85R"
    )
    assert refused_names(scan_bytes(data, allowlist)) == {"os.system"}


def test_globalref_is_frozen():
    ref = GlobalRef("a", "b")
    with pytest.raises(AttributeError):
        ref.module = "c"  # type: ignore[misc]


def test_core_modules_import_cheaply():
    code = (
        "import sys, pytest_modelpack.safety;"
        "print(sorted(m for m in ('torch', 'numpy', 'hypothesis') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_torch_value_names_match_the_installed_torch():
    """The built-in names are listed (judging a name never imports torch): keep them in step."""
    from pytest_modelpack.safety.policy import TORCH_VALUE_NAMES

    kinds = (torch.dtype, torch.layout, torch.qscheme, torch.memory_format)
    installed = {name for name, value in vars(torch).items() if isinstance(value, kinds)}
    assert installed <= TORCH_VALUE_NAMES, sorted(installed - TORCH_VALUE_NAMES)


# ------------------------------- issue 22 round 3: a file in no known format is unreadable


def _tar(names: list[str]) -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


def _cli_scan(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from pytest_modelpack import cli

    code = cli.main(["scan", str(path)])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (_tar(["hello.txt"]), "a tar archive without the members of a legacy torch file (hello."),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "(the file starts like a PNG image)"),
        (__import__("gzip").compress(b"x" * 100), "(the file starts like gzip data)"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(range(200)), "(the file starts like a 7-Zip"),
        (b'{"a": [1, 2, 3], "b": "json"}\n', "(the file starts like JSON text)"),
        (bytes(4096), "(the file is all zero bytes)"),
    ],
    ids=["tar", "png", "gzip", "7z", "json", "zeros"],
)
def test_a_file_in_another_format_is_unreadable_with_what_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, found: str
) -> None:
    """Before: a tar archive (any tar: its header checksum made it a "legacy torch file") and a
    PNG (its 'P' read as a persistent id) were UNSAFE, exit 1; the rest were unreadable without
    saying what the file is."""
    path = tmp_path / "bundle.pkl"
    path.write_bytes(data)
    code, out = _cli_scan(path, capsys)
    assert code == 2, out
    assert out.startswith(f"{path}: unreadable — "), out
    assert found in out.splitlines()[0], out
    assert "UNSAFE" not in out


def test_a_tar_archive_holding_torch_members_stays_unsafe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.load unpickles the members of a legacy tar archive ("pickle", "storages",
    "tensors"), which the scan never sees: that file is still refused."""
    path = tmp_path / "bundle.pt"
    for names in (
        ["sys_info", "pickle", "storages", "tensors"],
        [*(f"pad{i}" for i in range(80)), "storages"],  # (torch finds it past any first few)
    ):
        path.write_bytes(_tar(names))
        code, out = _cli_scan(path, capsys)
        assert code == 1, out
        assert "UNSAFE" in out and "<tar archive>.members" in out
