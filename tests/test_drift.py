"""Code drift (issue 4): fingerprints of project code, CODE DRIFT in the gate, ENV DRIFT warnings.

Unit tests of the pure core (normalised source, transitive discovery of the code a pickle depends
on, comparison and rendering) and end-to-end tests on a user project built from the seed's model.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Imported here, once: pytester's in-process runs drop the modules they imported, and torch's C
# extension cannot be imported a second time.
import torch  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_modelpack.drift import (
    code_units,
    compare_code,
    describe_code_change,
    env_changes,
    normalized_source,
)
from pytest_modelpack.drift.diff import drift_detail, drift_summary

from .conftest import SeedProject

# -- normalised source -------------------------------------------------------------------------

FORWARD = """\
def forward(self, args):
    output = self.layer(args)[:, -1, :]
    return output
"""

FORWARD_COSMETIC = '''\
def forward(
    self,
    args,
):
    """Score the last time step."""

    # the GRU returns one score vector per step; keep the last one
    output = (self.layer(args))[:, -1, :]  # (batch, classes)


    return output
'''


def test_normalized_source_ignores_comments_docstrings_blank_lines_and_layout() -> None:
    assert normalized_source(FORWARD) == normalized_source(FORWARD_COSMETIC)


def test_normalized_source_ignores_quote_style_and_indentation() -> None:
    a = "x = {'a': 1, \"b\": [1, 2, 3]}\n"
    b = "x = {\n    \"a\": 1,\n    'b': [\n        1, 2, 3,\n    ],\n}\n"
    assert normalized_source(a) == normalized_source(b)
    assert normalized_source(textwrap.indent(FORWARD, "    ")) == normalized_source(FORWARD)


@pytest.mark.parametrize(
    "edit",
    [
        ("[:, -1, :]", "[:, 0, :]"),
        ("[:, -1, :]", "[:, -20, :]"),
        ("return output", "return output.clone()"),
        ("def forward(self, args)", "def forward(self, args, extra=None)"),
        ("output = ", "result = "),
    ],
)
def test_normalized_source_sees_real_changes(edit: tuple[str, str]) -> None:
    assert normalized_source(FORWARD) != normalized_source(FORWARD.replace(*edit))


def test_a_string_statement_after_the_first_is_code_not_a_docstring() -> None:
    with_doc = 'def f():\n    "doc"\n    return 1\n'
    assert normalized_source(with_doc) == normalized_source("def f():\n    return 1\n")
    later = 'def f():\n    x = 1\n    "not a docstring"\n    return x\n'
    assert normalized_source(later) != normalized_source("def f():\n    x = 1\n    return x\n")


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),
            st.sampled_from(["", "# a comment", "    # indented comment", "   "]),
        ),
        max_size=6,
    )
)
def test_inserted_comment_and_blank_lines_never_change_the_fingerprint(
    data: list[tuple[int, str]],
) -> None:
    lines = FORWARD.splitlines()
    for position, text in data:
        lines.insert(min(position, len(lines)), text)
    assert normalized_source("\n".join(lines) + "\n") == normalized_source(FORWARD)


# -- discovery on small modules ----------------------------------------------------------------


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write modules under a project root (tmp_path/proj) and import them; returns their names.

    Module names are unique per test, so tests never share an imported module.
    """
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    tag = uuid.uuid4().hex[:8]
    created: list[str] = []

    def write(stem: str, source: str, *, load: bool = True) -> str:
        name = f"{stem}_{tag}"
        (root / f"{name}.py").write_text(textwrap.dedent(source).replace("{tag}", tag))
        created.append(name)
        importlib.invalidate_caches()
        if load:
            importlib.import_module(name)
        return name

    write.root = root  # type: ignore[attr-defined]
    yield write
    for name in created:
        sys.modules.pop(name, None)


def units_of(modules: Callable[..., str], module: str, *qualnames: str) -> dict:
    return code_units([(module, q) for q in qualnames], modules.root)  # type: ignore[attr-defined]


def test_units_per_class_header_and_method(modules: Callable[..., str]) -> None:
    mod = modules(
        "simple",
        '''
        import torch


        class Model(torch.nn.Module):
            """A model."""

            scale = 2

            def __init__(self):
                super().__init__()
                self.proj = torch.nn.Linear(2, 2)

            def forward(self, x):
                return self.proj(x) * self.scale
        ''',
    )
    units = units_of(modules, mod, "Model")
    assert sorted(units) == [f"{mod}.Model", f"{mod}.Model.__init__", f"{mod}.Model.forward"]
    header = units[f"{mod}.Model"]
    assert header["kind"] == "class"
    assert header["source"].startswith("class Model(torch.nn.Module):")
    assert "scale = 2" in header["source"] and "def forward" not in header["source"]
    forward = units[f"{mod}.Model.forward"]
    assert forward["kind"] == "method"
    assert forward["file"] == f"{mod}.py"
    assert forward["line"] == 14
    assert (
        forward["source"] == "    def forward(self, x):\n        return self.proj(x) * self.scale\n"
    )
    # torch.nn.Module (third-party) is in the MRO but is not project code
    assert not any(name.startswith("torch") for name in units)


def test_transitive_discovery(modules: Callable[..., str]) -> None:
    helpers = modules(
        "helpers",
        """
        def shout(text):
            return text.upper()


        def unused():
            return 0
        """,
    )
    mod = modules(
        "model",
        f"""
        import json
        import functools

        import {helpers} as helpers


        LABELS = ("good", "bad")
        SCALE = functools.partial(round, ndigits=2)


        def softmax(xs):
            return [x / sum(xs) for x in xs]


        def normalise(xs):
            return softmax(xs)


        def in_lambda(x):
            return x


        def in_comprehension(x):
            return x


        def in_inner(x):
            return x


        def never_called():
            return 1


        class Base:
            def postprocess(self, xs):
                return {{"label": LABELS[0], "scores": normalise(xs)}}


        class Reader(Base):
            def __call__(self, xs):
                f = lambda v: in_lambda(v)
                ys = [in_comprehension(x) for x in xs]

                def inner():
                    return in_inner(ys)

                return helpers.shout(json.dumps([f(1), inner(), SCALE(1.234)]))

            def local_import(self):
                from {helpers} import shout

                return shout("x")
        """,
    )
    units = units_of(modules, mod, "Reader")
    names = set(units)
    assert {
        f"{mod}.Reader",
        f"{mod}.Reader.__call__",
        f"{mod}.Reader.local_import",
        f"{mod}.Base",  # base class in the MRO
        f"{mod}.Base.postprocess",
        f"{mod}.normalise",  # module global named in a base-class method
        f"{mod}.softmax",  # ... and transitively from there
        f"{mod}.in_lambda",  # nested code objects: lambda, comprehension, inner function
        f"{mod}.in_comprehension",
        f"{mod}.in_inner",
        f"{helpers}.shout",  # through a project module attribute, and a local import
        f"{mod}.LABELS",  # module constants the code reads
        f"{mod}.SCALE",
    } <= names, sorted(names)
    assert f"{mod}.never_called" not in names
    assert f"{helpers}.unused" not in names
    assert not any(n.startswith(("json", "functools", "builtins")) for n in names)
    assert units[f"{mod}.LABELS"]["kind"] == "global"
    assert units[f"{mod}.LABELS"]["source"] == 'LABELS = ("good", "bad")\n'
    assert units[f"{mod}.softmax"]["kind"] == "function"
    assert units[f"{helpers}.shout"]["file"] == f"{helpers}.py"


def test_descriptors_and_decorators(modules: Callable[..., str]) -> None:
    mod = modules(
        "decorated",
        """
        import functools


        def traced(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)

            return wrapper


        def plain_decorator(func):
            def wrapper(*args):
                return func(*args)

            return wrapper


        def helper_for_static():
            return 1


        def helper_for_wrapped():
            return 2


        @traced
        def decorated_function():
            return helper_for_wrapped()


        class Thing:
            @property
            def size(self):
                return self._size

            @size.setter
            def size(self, value):
                self._size = value

            @staticmethod
            def make():
                return helper_for_static()

            @classmethod
            def build(cls):
                return cls()

            @traced
            def run(self):
                return decorated_function()

            @plain_decorator
            def other(self):
                return 3
        """,
    )
    units = units_of(modules, mod, "Thing")
    for member in ("size", "size.setter", "make", "build", "run", "other"):
        assert units[f"{mod}.Thing.{member}"]["kind"] == "method", member
    assert units[f"{mod}.Thing.size.setter"]["source"].lstrip().startswith("@size.setter")
    assert units[f"{mod}.Thing.run"]["source"].lstrip().startswith("@traced")
    assert {
        f"{mod}.traced",  # the decorators' own code
        f"{mod}.plain_decorator",
        f"{mod}.helper_for_static",  # reached through a staticmethod
        f"{mod}.decorated_function",  # a functools.wraps-decorated function: its own source
        f"{mod}.helper_for_wrapped",  # ... and what it calls, through __wrapped__
    } <= set(units), sorted(units)
    assert units[f"{mod}.decorated_function"]["source"].startswith(
        "@traced\ndef decorated_function"
    )


def test_code_outside_the_project_is_never_imported_or_fingerprinted(
    modules: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "site"
    outside.mkdir()
    name = f"outside_{uuid.uuid4().hex[:8]}"
    (outside / f"{name}.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(outside))
    venv = modules.root / ".venv" / "lib" / "site-packages"  # type: ignore[attr-defined]
    venv.mkdir(parents=True)
    vendored = f"vendored_{uuid.uuid4().hex[:8]}"
    (venv / f"{vendored}.py").write_text("class V:\n    def f(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(venv))
    try:
        importlib.import_module(vendored)
        units = code_units(
            [(name, "Anything"), (vendored, "V"), ("json", "dumps")],
            modules.root,  # type: ignore[attr-defined]
        )
    finally:
        sys.modules.pop(vendored, None)
    assert units == {}
    assert name not in sys.modules


def test_stdlib_is_not_project_code_even_under_the_project_root() -> None:
    stdlib = Path(json.__file__).resolve().parent.parent
    assert code_units([("json", "dumps"), ("json.decoder", "JSONDecoder")], stdlib) == {}


def test_dataclasses_enums_torch_decorators_and_dynamic_classes(
    modules: Callable[..., str],
) -> None:
    mod = modules(
        "kinds",
        """
        import dataclasses
        import enum

        import torch


        def clamp(x):
            return x


        @dataclasses.dataclass
        class Config:
            size: int = 4
            names: tuple = ("a", "b")


        class Mode(enum.Enum):
            FAST = 1
            SLOW = 2


        class Net(torch.nn.Module):
            mode = Mode.FAST

            @torch.no_grad()
            def forward(self, x):
                return clamp(x)


        def dynamic_method(self):
            return 0


        Dynamic = type("Dynamic", (), {"f": dynamic_method})
        """,
    )
    units = units_of(modules, mod, "Config", "Mode", "Net", "Dynamic")
    assert units[f"{mod}.Config"]["source"].startswith("@dataclasses.dataclass\nclass Config:")
    assert "size: int = 4" in units[f"{mod}.Config"]["source"]
    assert not any(name.startswith(f"{mod}.Config.") for name in units)  # generated methods
    assert f"{mod}.Mode" in units
    assert units[f"{mod}.Net.forward"]["source"].lstrip().startswith("@torch.no_grad()")
    assert f"{mod}.clamp" in units  # through torch's wrapper, via __wrapped__
    assert f"{mod}.Dynamic" not in units  # no source to fingerprint; its function still is
    assert f"{mod}.dynamic_method" in units


def test_a_project_module_not_imported_yet_is_imported(modules: Callable[..., str]) -> None:
    lazy = modules("lazy", "class Late:\n    def f(self):\n        return 1\n", load=False)
    assert lazy not in sys.modules
    units = units_of(modules, lazy, "Late")
    assert sorted(units) == [f"{lazy}.Late", f"{lazy}.Late.f"]


# -- comparison and rendering ------------------------------------------------------------------


def unit(source: str, line: int = 10, kind: str = "method", sha: str | None = None) -> dict:
    return {
        "kind": kind,
        "sha256": sha or normalized_source(source),
        "file": "package.py",
        "line": line,
        "source": source,
    }


def test_compare_code_changed_removed_added() -> None:
    old = {"p.A.f": unit(FORWARD), "p.A.g": unit("def g(self): pass\n"), "p.h": unit("x\n")}
    new = {
        "p.A.f": unit(FORWARD.replace("-1", "0"), line=12),
        "p.h": unit("x\n"),
        "p.A.k": unit("def k(self): pass\n"),
    }
    assert compare_code(old, new) == (["p.A.f"], ["p.A.g"], ["p.A.k"])
    assert describe_code_change(old, new) == ["p.A.f", "p.A.g (removed)", "p.A.k (added)"]
    assert drift_summary(old, new, *compare_code(old, new)) == (
        "1 method changed, 1 method removed, 1 method added"
    )


def test_cosmetic_edits_and_identical_source_are_not_changes() -> None:
    old = {"p.A.f": unit(FORWARD)}
    assert compare_code(old, {"p.A.f": unit(FORWARD_COSMETIC)}) == ([], [], [])
    # A fingerprint written by another normaliser (an older plugin, another Python): the source
    # text is byte-identical, so the code is.
    assert compare_code(old, {"p.A.f": unit(FORWARD, sha="other")}) == ([], [], [])


def test_summary_counts_kinds() -> None:
    old = {
        "p.A": unit("class A: pass\n", kind="class"),
        "p.f": unit("def f(): pass\n", kind="function"),
        "p.g": unit("def g(): pass\n", kind="function"),
        "p.X": unit("X = 1\n", kind="global"),
    }
    new = {
        "p.A": unit("class A(B): pass\n", kind="class"),
        "p.f": unit("def f(): return 1\n", kind="function"),
        "p.g": unit("def g(): return 2\n", kind="function"),
        "p.X": unit("X = 2\n", kind="global"),
    }
    assert drift_summary(old, new, *compare_code(old, new)) == (
        "1 class, 2 functions and 1 module global changed"
    )


def test_detail_has_unified_diffs_numbered_as_in_the_file() -> None:
    method = textwrap.indent(FORWARD, "    ")
    old = {"package.M.forward": unit(method, line=85), "package.gone": unit("def gone(): pass\n")}
    new = {"package.M.forward": unit(method.replace("-1", "0"), line=88)}
    detail = drift_detail(old, new, *compare_code(old, new))
    assert detail == [
        "package.M.forward  (package.py:88)",
        "--- golden",
        "+++ current",
        "@@ -85,3 +88,3 @@",
        "     def forward(self, args):",
        "-        output = self.layer(args)[:, -1, :]",
        "+        output = self.layer(args)[:, 0, :]",
        "         return output",
        "package.gone  no longer exists (was package.py:10)",
        "-def gone(): pass",
    ]


def test_env_changes_tracks_versions_only() -> None:
    old = {"python": "3.11.7", "torch": "2.1.0", "numpy": "1.26.0", "platform": "Linux-x86_64"}
    new = {"python": "3.11.7", "torch": "2.2.0", "numpy": "1.26.0", "platform": "Darwin-arm64"}
    assert env_changes(old, new) == ["torch 2.1.0 -> 2.2.0"]


# -- end to end on the seed's model ------------------------------------------------------------

REGEN = "pytest --modelpack-regen test_models.py::test_sentiment"
FIX = f"  fix: revert the change, or accept it with: {REGEN}"
#: Our own suite turns ModelpackWarning into errors, and pytester's in-process runs inherit the
#: filter; an inner project that wants drift as a warning says so in its own configuration.
WARN_FILTER = 'filterwarnings = ["default::pytest_modelpack.warnings.ModelpackWarning"]'


def lit(text: str) -> str:
    """``text`` as an fnmatch pattern that matches itself (brackets escaped)."""
    return text.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]")


def edit(project: SeedProject, old: str, new: str, name: str = "package.py") -> None:
    """Edit a project file and move its mtime on, so no stale bytecode or linecache survives."""
    project.edit(name, old, new)
    path = project.path / name
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_seed_drift_fails_the_gate_with_the_diff_then_regen_accepts_it(
    regenerated: SeedProject,
) -> None:
    """The seed's caveat: `[:, -1, :]` -> `[:, -20, :]`, an IndexError on short inputs."""
    edit(regenerated, "[:, -1, :]", "[:, -20, :]")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: CODE DRIFT — 1 method changed since the golden was made",
            "  package.MyCompoundClass.forward  (package.py:*)",
            "  --- golden",
            "  +++ current",
            "  @@ -* +* @@",
            "       def forward(self, args):",
            lit("  -        output = self.layer(args)[:, -1, :]"),
            lit("  +        output = self.layer(args)[:, -20, :]"),
            "           return output",
            FIX,
            "sentiment*cpu*golden*failed*CODE DRIFT*",
        ]
    )
    # CODE DRIFT, not an OUTPUT MISMATCH; the golden run with today's code says what changed.
    assert "OUTPUT MISMATCH" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "  behaviour: outputs changed on recorded example #* — the change alters behaviour",
            "    output: expected *, but it raised IndexError: index -20 is out of bounds*",
        ]
    )

    # (a fixed seed: on random inputs all eleven may be shorter than 20 tokens, and EVERY
    # INPUT RAISED is then the right verdict)
    healed = regenerated.run("--modelpack-regen", "--hypothesis-seed=1")
    assert healed.ret == 0, healed.stdout.str()
    healed.stdout.fnmatch_lines(
        ["sentiment*cpu*regen*changed*code changed: package.MyCompoundClass.forward*"]
    )
    code = regenerated.manifest()["code"]
    assert "[:, -20, :]" in code["package.MyCompoundClass.forward"]["source"]
    gate = regenerated.run("--modelpack-golden")
    assert gate.ret == 0, gate.stdout.str()


def test_subtle_drift_is_caught_by_fingerprint_and_by_recorded_examples(
    regenerated: SeedProject,
) -> None:
    """`[:, 0, :]` runs fine and changes outputs: CODE DRIFT first; with modelpack_drift = warn
    the gate goes on, and the recorded examples catch the changed behaviour too."""
    edit(regenerated, "[:, -1, :]", "[:, 0, :]")
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: CODE DRIFT — 1 method changed since the golden was made",
            "  package.MyCompoundClass.forward  (package.py:*)",
            lit("  -        output = self.layer(args)[:, -1, :]"),
            lit("  +        output = self.layer(args)[:, 0, :]"),
            FIX,
        ]
    )
    assert "OUTPUT MISMATCH" not in result.stdout.str()

    regenerated.ini(extra=f'modelpack_drift = "warn"\n{WARN_FILTER}')
    warned = regenerated.run("--modelpack-golden")
    assert warned.ret == 1
    warned.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: OUTPUT MISMATCH — the golden no longer reproduces recorded "
            "example #*",
            "  expected = recorded in examples.json, got = golden loaded today",
            "  CODE DRIFT tolerated (modelpack_drift = warn): 1 method changed since the golden "
            "was made: package.MyCompoundClass.forward; behaviour: outputs changed on recorded "
            "example #* — the change alters behaviour",
            f"  fix: revert the change, or accept it with: {REGEN}",
            "*CodeDriftWarning: modelpack: sentiment: CODE DRIFT — 1 method changed since the "
            "golden was made",
            "sentiment*cpu*golden*failed*OUTPUT MISMATCH*",
            lit(
                "warning: sentiment [cpu]: CODE DRIFT tolerated (modelpack_drift = warn): 1 "
                "method changed since the golden was made: package.MyCompoundClass.forward"
            )
            + "; behaviour: outputs changed on recorded example #* — the change alters behaviour",
        ]
    )


def test_warn_policy_passes_when_outputs_agree_and_warnings_can_be_made_errors(
    regenerated: SeedProject,
) -> None:
    edit(regenerated, "return self.decoder(x)", "return self.decoder(x.clone())")
    regenerated.ini(extra=f'modelpack_drift = "warn"\n{WARN_FILTER}')
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*CodeDriftWarning: modelpack: sentiment: CODE DRIFT — 1 method changed*",
            "*package.MyCompoundClass.postprocess*",
            "sentiment*cpu*golden*passed*",
            lit("warning: sentiment [cpu]: CODE DRIFT tolerated (modelpack_drift = warn): ")
            + "*package.MyCompoundClass.postprocess; behaviour: outputs unchanged on * inputs (* "
            "recorded, * from Hypothesis) — the change looks behaviour-preserving",
        ]
    )
    strict = regenerated.run(
        "--modelpack-golden", "-W", "error::pytest_modelpack.warnings.CodeDriftWarning"
    )
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(
        ["*modelpack: sentiment: CODE DRIFT — 1 method changed since the golden was made", FIX]
    )


def test_drift_in_a_helper_called_from_postprocess(seed_project: SeedProject) -> None:
    """Transitive: postprocess calls a module-level helper; the helper changes, outputs don't."""
    edit(seed_project, "return self.decoder(x)", "return finish(self.decoder(x))")
    seed_project.write(
        "package.py",
        (seed_project.path / "package.py").read_text()
        + '\n\ndef finish(result):\n    """Final touches."""\n    return result\n',
    )
    assert seed_project.run("--modelpack-regen").ret == 0
    assert seed_project.manifest()["code"]["package.finish"]["kind"] == "function"

    edit(seed_project, "    return result\n", "    return dict(result)\n")
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: CODE DRIFT — 1 function changed since the golden was made",
            "  package.finish  (package.py:*)",
            "  --- golden",
            "  +++ current",
            "  -    return result",
            "  +    return dict(result)",
            FIX,
        ]
    )
    regen = seed_project.run("--modelpack-regen")
    regen.stdout.fnmatch_lines(["sentiment*cpu*regen*changed*code changed: package.finish*"])


def test_drift_in_a_base_class_method(seed_project: SeedProject) -> None:
    edit(
        seed_project,
        "class MyCompoundClass:",
        "class Postprocessing:\n"
        "    def postprocess(self, x):\n"
        "        return self.decoder(x)\n\n\n"
        "class MyCompoundClass(Postprocessing):",
    )
    edit(
        seed_project,
        "    def postprocess(self, x):\n        return self.decoder(x)\n\n\ndef",
        "\n\ndef",
    )
    assert seed_project.run("--modelpack-regen").ret == 0
    assert "package.Postprocessing.postprocess" in seed_project.manifest()["code"]

    edit(
        seed_project,
        "        return self.decoder(x)\n",
        "        return self.decoder(x.detach())\n",
    )
    result = seed_project.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: CODE DRIFT — 1 method changed since the golden was made",
            "  package.Postprocessing.postprocess  (package.py:*)",
            "  -        return self.decoder(x)",
            "  +        return self.decoder(x.detach())",
            FIX,
        ]
    )


def test_removed_and_added_members_are_named(regenerated: SeedProject) -> None:
    edit(
        regenerated,
        "    def train(self):\n        self.layer.train()\n",
        "    def describe(self):\n        return repr(self.layer)\n",
    )
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: CODE DRIFT — 1 method removed, 1 method added since the golden "
            "was made",
            "  package.MyCompoundClass.train  no longer exists (was package.py:*)",
            "  -    def train(self):",
            "  package.MyCompoundClass.describe  is new (package.py:*)",
            "  +    def describe(self):",
            FIX,
        ]
    )


def test_comment_docstring_and_formatting_edits_pass(regenerated: SeedProject) -> None:
    edit(
        regenerated,
        "    def forward(self, args):\n        output = self.layer(args)[:, -1, :]\n",
        "    def forward(\n"
        "        self,\n"
        "        args,\n"
        "    ):\n"
        '        """Score of the last time step (a new docstring)."""\n'
        "\n"
        "        # keep the last step only\n"
        "        output = (self.layer(args))[:, -1, :]  # (batch, classes)\n",
    )
    edit(regenerated, '"""Decode a score vector', '"""Turn a score vector')
    edit(
        regenerated,
        "class MyLayer(torch.nn.Module):",
        "# the network\nclass MyLayer(torch.nn.Module):",
    )
    before = regenerated.snapshot()
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    assert "DRIFT" not in result.stdout.str()
    regen = regenerated.run("--modelpack-regen")
    regen.stdout.fnmatch_lines(["sentiment*cpu*regen*unchanged*"])
    assert {k: v for k, v in regenerated.snapshot().items() if k.startswith("goldens")} == {
        k: v for k, v in before.items() if k.startswith("goldens")
    }


def set_torch_version(project: SeedProject, version: str) -> str:
    path = project.golden() / "manifest.json"
    manifest = json.loads(path.read_text())
    recorded = manifest["environment"]["torch"]
    manifest["environment"]["torch"] = version
    path.write_text(json.dumps(manifest, indent=1) + "\n")  # the manifest is not hashed itself
    return recorded


def test_changed_torch_version_only_warns(regenerated: SeedProject) -> None:
    recorded = set_torch_version(regenerated, "0.0.1")
    regenerated.ini(extra=WARN_FILTER)
    result = regenerated.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"*EnvDriftWarning: sentiment: environment changed since the golden was made: "
            f"torch 0.0.1 -> {recorded}",
            "sentiment*cpu*golden*passed*",
            lit(
                "warning: sentiment [cpu]: environment changed since the golden was made: "
                f"torch 0.0.1 -> {recorded}"
            ),
        ]
    )

    # When outputs differ too, the mismatch names the environment change as a suspect.
    edit(regenerated, "SEED = 0", "SEED = 1", name="conftest.py")
    mismatch = regenerated.run("--modelpack-golden")
    assert mismatch.ret == 1
    mismatch.stdout.fnmatch_lines(
        [
            "*modelpack: sentiment: OUTPUT MISMATCH — *",
            f"  environment changed since the golden was made: torch 0.0.1 -> {recorded}",
        ]
    )


def test_env_drift_made_an_error_by_a_warnings_filter_fails_with_a_headline(
    regenerated: SeedProject,
) -> None:
    recorded = set_torch_version(regenerated, "0.0.1")
    result = regenerated.run(
        "--modelpack-golden", "-W", "error::pytest_modelpack.warnings.EnvDriftWarning"
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            f"*modelpack: sentiment: ENV DRIFT — torch 0.0.1 -> {recorded} since the golden was "
            "made",
            f"  fix: run with the recorded versions, or accept the new environment with: {REGEN}",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_a_unit_moved_to_another_module_unchanged_is_not_drift() -> None:
    from pytest_modelpack.drift import compare_code

    unit = {"kind": "method", "qualname": "A.f", "sha256": "s", "source": "def f(self): pass"}
    old = {"package.A.f": {**unit, "module": "package"}}
    moved = {"package2.A.f": {**unit, "module": "package2"}}
    assert compare_code(old, moved) == ([], [], [])
    edited = {"package2.A.f": {**unit, "module": "package2", "sha256": "t", "source": "x"}}
    assert compare_code(old, edited) == ([], ["package.A.f"], ["package2.A.f"])
    from pytest_modelpack.drift.diff import moves

    assert moves(old, moved) == [("package.A.f", "package2.A.f")]
    assert moves(old, edited) == []
    assert moves(old, old) == []
