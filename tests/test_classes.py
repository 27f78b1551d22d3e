"""Classes pinned by value (pytest_modelpack/safety/classes.py): every kind of class dill and
cloudpickle pin (local classes, enums, namedtuples, dataclasses, slots, ABCs, metaclasses,
descriptors) loads from a golden written by another process, built only as the live model's own
pickle builds it; a class arranged differently from today's, from the very same code objects, is
refused; and the loader never hands back, or rewrites, a class of this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_modelpack.errors import ModelpackError
from pytest_modelpack.safety import Allowlist, scan_file
from pytest_modelpack.safety.classes import CLASS_CHANGED
from pytest_modelpack.safety.load import load_bundle
from pytest_modelpack.safety.trust import scan_live, trust_from_refs

torch = pytest.importorskip("torch")
pytest.importorskip("dill")
pytest.importorskip("cloudpickle")

KINDS = """\
import abc, collections, dataclasses, enum, typing
import torch


def make_enums():
    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    class Flag(enum.IntFlag):
        A = 1
        B = 2

    return Color.RED, Flag.A | Flag.B


def make_all(enums=True):
    Point = collections.namedtuple("Point", "x y")

    class Pair(typing.NamedTuple):
        a: int
        b: float = 1.0

    @dataclasses.dataclass
    class Config:
        width: int = 3
        name: str = "x"

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        k: int = 1

    class Slotted:
        __slots__ = ("a", "b")

        def __init__(self):
            self.a, self.b = 1, 2

    class Base(abc.ABC):
        @abc.abstractmethod
        def f(self): ...

    class Impl(Base):
        def f(self):
            return 1

    class Meta(type):
        pass

    class WithMeta(metaclass=Meta):
        pass

    class Outer:
        class Inner:
            z = 1

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.color, self.flag = make_enums() if enums else (1, 3)
            self.point = Point(1, 2)
            self.pair = Pair(1)
            self.config = Config()
            self.frozen = Frozen()
            self.slotted = Slotted()
            self.impl = Impl()
            self.meta = WithMeta()
            self.inner = Outer.Inner()

        @property
        def width(self):
            return self.config.width

        @staticmethod
        def double(x):
            return 2 * x

        @classmethod
        def named(cls):
            return cls.__name__

        def forward(self, x):
            return self.double(self.lin(x)) * self.width

    torch.manual_seed(0)
    return Net()
"""


def _write_golden(folder: Path, serializer: str, protocol: int, enums: bool) -> Path:
    """The golden as regen writes it: in another process (other tracker ids, other objects)."""
    path = folder / f"{serializer}-{protocol}.pkl"
    code = (
        f"import sys, {serializer}\nsys.path.insert(0, {str(folder)!r})\nfrom kinds import make_all\n"
        f"open({str(path)!r}, 'wb').write({serializer}.dumps(make_all({enums}), "
        f"protocol={protocol}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("kinds")
    (folder / "kinds.py").write_text(KINDS)
    sys.path.insert(0, str(folder))
    try:
        import kinds as module  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(folder))
    return folder, module


def _trust(serializer: str, obj: Any, protocol: int) -> Allowlist:
    dumps = __import__(serializer).dumps
    return Allowlist(None, trust=trust_from_refs(scan_live(dumps(obj, protocol=protocol))))


# dill pickles no local enum at all ("it's not found as ..."): its zoo holds plain ints there.
@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("serializer", ["cloudpickle", "dill"])
def test_every_kind_of_class_loads_as_today_builds_it(
    serializer: str, protocol: int, kinds: tuple[Path, Any]
) -> None:
    folder, module = kinds
    enums = serializer == "cloudpickle"
    path = _write_golden(folder, serializer, protocol, enums)
    live = module.make_all(enums)
    allowlist = _trust(serializer, live, protocol)
    verdict = scan_file(path, allowlist)
    assert verdict.safe, verdict.refused
    golden = load_bundle(path, allowlist)
    assert type(golden) is not type(live)  # built from the golden, as production builds it
    x = torch.randn(3, 2)
    assert torch.equal(golden(x), live(x))
    assert golden.named() == "Net" and golden.width == 3
    assert (golden.point, tuple(golden.pair)) == ((1, 2), (1, 1.0))
    assert repr(golden.config).endswith("(width=3, name='x')") and golden.frozen.k == 1
    assert (golden.slotted.a, golden.impl.f(), golden.inner.z) == (1, 1, 1)
    assert type(type(golden.meta)).__name__ == "Meta"
    if enums:
        assert golden.color.name == "RED" and int(golden.flag) == 3
        assert golden.color is type(golden.color).RED  # one member, as enums keep them


def test_bytes_of_this_process_never_return_or_rewrite_its_class(kinds: tuple[Path, Any]) -> None:
    """cloudpickle keys a by-value class by a tracker id: the bytes this process wrote name its
    live class, which plain ``cloudpickle.loads`` hands back and rewrites. The loader builds a
    fresh class, and the live one keeps its own methods."""
    import cloudpickle

    _, module = kinds
    live = module.make_all()
    data = cloudpickle.dumps(live)
    forward = type(live).forward
    assert type(cloudpickle.loads(data)) is type(live)  # the hazard: the live class itself
    type(live).forward = forward  # (what the plain load set there)
    allowlist = Allowlist(None, trust=trust_from_refs(scan_live(data)))
    path = Path(kinds[0]) / "same-process.pkl"
    path.write_bytes(data)
    golden = load_bundle(path, allowlist)
    assert type(golden) is not type(live)
    assert type(live).forward is forward


SWAPPED = """\
class Model:
    def first(self):
        return 1

    def second(self):
        return 2
"""


@pytest.mark.parametrize("serializer", ["cloudpickle", "dill"])
def test_a_class_arranged_otherwise_from_the_same_code_is_refused(
    serializer: str, tmp_path: Path
) -> None:
    """The golden's class holds exactly today's code objects, two methods swapped: every code
    object is the live model's, the class is not."""
    dumps = __import__(serializer).dumps

    def model(swap: bool) -> Any:
        namespace: dict[str, Any] = {"__name__": "pinned_nowhere"}
        exec(SWAPPED, namespace)
        cls = namespace["Model"]
        if swap:
            cls.first, cls.second = cls.second, cls.first
        return cls()

    allowlist = _trust(serializer, model(False), 4)
    path = tmp_path / "bundle.pkl"
    path.write_bytes(dumps(model(True), protocol=4))
    verdict = scan_file(path, allowlist)
    assert not verdict.safe
    assert CLASS_CHANGED in {reason for _, reason in verdict.refused}
    with pytest.raises(ModelpackError) as caught:
        load_bundle(path, allowlist)
    assert caught.value.kind == "UNSAFE GOLDEN" and CLASS_CHANGED in str(caught.value)
    # and the same class, arranged as today's, passes
    path.write_bytes(dumps(model(False), protocol=4))
    assert scan_file(path, allowlist).safe


ANNOTATED = """\
class Model:
    x: "int"

    def first(self):
        return 1
"""


@pytest.mark.parametrize("serializer", ["cloudpickle", "dill"])
def test_a_class_whose_text_differs_is_refused(serializer: str, tmp_path: Path) -> None:
    """Text is part of a class's fingerprint: an annotation ``typing.get_type_hints`` would
    evaluate, a name, a module."""
    dumps = __import__(serializer).dumps

    def model(annotation: str) -> Any:
        namespace: dict[str, Any] = {"__name__": "pinned_nowhere"}
        exec(ANNOTATED.replace('"int"', repr(annotation)), namespace)
        return namespace["Model"]()

    allowlist = _trust(serializer, model("int"), 4)
    path = tmp_path / "bundle.pkl"
    path.write_bytes(dumps(model("__import__('os').getcwd()"), protocol=4))
    verdict = scan_file(path, allowlist)
    assert CLASS_CHANGED in {reason for _, reason in verdict.refused}


def test_a_namedtuple_of_another_module_is_refused_before_it_imports(tmp_path: Path) -> None:
    """dill's ``_create_namedtuple(name, fields, module)`` imports ``module`` first: a golden
    naming another module than the live model's namedtuple runs that module's import-time code
    under plain ``dill.load`` (proven in a subprocess), and is refused here before anything
    imports."""
    import dill

    from .serializer_payloads import Call

    canary = tmp_path / "canary"
    (tmp_path / "planted.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    payload = dill.dumps(Call(dill._dill._create_namedtuple, "Point", ("x", "y"), "planted"))
    path = tmp_path / "bundle.pkl"
    path.write_bytes(payload)
    subprocess.run(
        [sys.executable, "-c", f"import dill; dill.load(open({str(path)!r}, 'rb'))"],
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
    )
    assert canary.exists(), "the payload is not live under plain dill.load"
    canary.unlink()

    namespace: dict[str, Any] = {"__name__": "pinned_nowhere"}
    exec("import collections\nPoint = collections.namedtuple('Point', 'x y')\n", namespace)
    allowlist = _trust("dill", namespace["Point"](1, 2), dill.DEFAULT_PROTOCOL)
    sys.path.insert(0, str(tmp_path))
    try:
        assert not scan_file(path, allowlist).safe
        with pytest.raises(ModelpackError) as caught:
            load_bundle(path, allowlist)
    finally:
        sys.path.remove(str(tmp_path))
    assert caught.value.kind == "UNSAFE GOLDEN"
    assert not canary.exists() and "planted" not in sys.modules
