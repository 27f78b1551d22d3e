"""Shared fixtures: a user project built from the seed's model, run through pytester."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401
import pytest
import sentencepiece  # noqa: F401
import torch  # noqa: F401

# pytester's in-process runs restore sys.modules afterwards: a heavy extension module first imported
# inside an inner run would be dropped and imported a second time, which torch does not survive
# ("SystemError: bad call flags"). Importing them here keeps one copy for the whole session.

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"

CONFTEST = """\
from pathlib import Path

import pytest
import torch
from package import build_model

CORPUS = Path(__file__).with_name("corpus.txt")
SEED = 0


@pytest.fixture(scope="session")
def sentiment_model():
    torch.manual_seed(SEED)
    return build_model(CORPUS)
"""

TEST_MODELS = """\
from strategies import sentences


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences())
"""

PYPROJECT = """\
[tool.pytest.ini_options]
modelpack_examples = "{examples}"
modelpack_recorded = "{recorded}"
{extra}
"""

#: Flags every inner run gets: no cache folder, and no pytest-benchmark folder where it is installed,
#: so that "writes nothing" can be checked on the project folder as a whole.
QUIET = ("-p", "no:cacheprovider", "-p", "no:benchmark")


#: What Hypothesis itself keeps in its home folder between runs: the unicode charmap that st.text
#: builds, the constants it collects from the project's source, a scratch folder for writing them
#: atomically, and the .gitignore it puts there. Never an example database ("examples").
HYPOTHESIS_CACHES = ("unicode_data", "constants", "tmp", ".gitignore")


def is_hypothesis_cache(relative: Path) -> bool:
    parts = relative.parts
    return len(parts) >= 2 and parts[0] == ".hypothesis" and parts[1] in HYPOTHESIS_CACHES


@dataclasses.dataclass
class SeedProject:
    """A small user project holding the seed's model (package.py) and a corpus."""

    pytester: pytest.Pytester

    @property
    def path(self) -> Path:
        return self.pytester.path

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest(*QUIET, *args)

    def write(self, name: str, text: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.path / name
        text = path.read_text()
        assert old in text, f"{old!r} not in {name}"
        path.write_text(text.replace(old, new, 1))

    def ini(self, examples: int = 5, recorded: int = 4, extra: str = "") -> None:
        self.write(
            "pyproject.toml", PYPROJECT.format(examples=examples, recorded=recorded, extra=extra)
        )

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the project (relative path -> bytes), to prove what was written.

        Hypothesis' own caches in its home folder (``.hypothesis/``, pointed at the project by the
        ``seed_project`` fixture) are left out: Hypothesis keeps them for any project, and they
        persist between runs on purpose (issue 12). Anything else there, such as an example
        database, counts.
        """
        return {
            str(p.relative_to(self.path)): p.read_bytes()
            for p in sorted(self.path.rglob("*"))
            if p.is_file()
            and "__pycache__" not in p.parts
            and not is_hypothesis_cache(p.relative_to(self.path))
        }

    def golden(self, name: str = "sentiment") -> Path:
        return self.path / "goldens" / name

    def manifest(self, name: str = "sentiment") -> dict:
        return json.loads((self.golden(name) / "manifest.json").read_text())


@pytest.fixture
def seed_project(pytester: pytest.Pytester) -> Iterator[SeedProject]:
    from hypothesis import configuration

    project = SeedProject(pytester)
    for name in ("package.py", "corpus.txt", "strategies.py"):
        project.write(name, (EXAMPLE / name).read_text())
    project.write("conftest.py", CONFTEST)
    project.write("test_models.py", TEST_MODELS)
    project.ini()
    # Inner runs are in-process: point Hypothesis' home at the project, as a run started in the
    # project folder would have it, so that whatever Hypothesis writes shows in snapshot().
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(project.path / ".hypothesis")
    try:
        yield project
    finally:
        configuration.set_hypothesis_home_dir(previous)


@pytest.fixture
def regenerated(seed_project: SeedProject) -> SeedProject:
    """The seed project with its goldens freshly written by --modelpack-regen."""
    result = seed_project.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    return seed_project


# -- every golden regen writes passes the pre-commit scan (issue 22) ------------------------------

#: What ``modelpack scan --root`` said of a golden an in-process regen had just written, when it
#: refused it: (golden folder, exit code, output). Checked after each test.
_SCAN_REFUSALS: list[tuple[str, int, str]] = []


def _scan_what_regen_wrote() -> None:
    """Wrap regen's last step (writing the golden's section of goldens.trust) so that every golden
    any in-process regen of this suite writes is scanned right away, as the pre-commit hook scans
    it: ``modelpack scan --root <project> <golden>``, with no trust written by hand."""
    import contextlib
    import io

    from pytest_modelpack import cli
    from pytest_modelpack.engine import regen

    real = regen.write_trust

    def write_trust(facts, store):  # type: ignore[no-untyped-def]
        changed = real(facts, store)
        if (
            facts.request.settings.safe_globals
        ):  # the project's own hand-written trust: not this claim
            return changed
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(["scan", "--root", str(facts.request.project_root), str(store.folder)])
        if code != 0:
            _SCAN_REFUSALS.append((str(store.folder), code, out.getvalue()))
        return changed

    regen.write_trust = write_trust


_scan_what_regen_wrote()


@pytest.fixture(autouse=True)
def _goldens_regen_wrote_scan_safe() -> Iterator[None]:
    yield
    refusals, _SCAN_REFUSALS[:] = list(_SCAN_REFUSALS), []
    assert not refusals, "modelpack scan refused a golden regen wrote:\n" + "\n".join(
        f"{folder} (exit {code}):\n{output}" for folder, code, output in refusals
    )
