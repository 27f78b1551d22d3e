"""The model zoo (issue 13): real compound models of third-party parts, each a small user project
run through round-trip, regen and the gate as a user would.

Each model lives in ``tests/zoo/<name>.py`` and is copied into the project as ``package.py``; the
project's session fixture builds it with a fixed torch seed. Tiny configs, random init, nothing
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers  # noqa: F401
import transformers.activations  # noqa: F401
import transformers.generation.configuration_utils  # noqa: F401
import transformers.pytorch_utils  # noqa: F401
from transformers import BertForSequenceClassification, GPT2LMHeadModel  # noqa: F401

from .conftest import EXAMPLE, SeedProject

# Imported here for the reason tests/conftest.py gives: a module first imported inside an
# in-process pytester run is dropped afterwards and imported again by the next run, so a class
# pickled in one run is "not the same object" as the one the next run finds (transformers loads
# its model modules lazily, on first use).

ZOO = Path(__file__).resolve().parent / "zoo"

#: The ``modelpack_safe_globals`` lines each zoo model needs until trust is derived from the live
#: model (issue 10). Once that lands, empty this table: every zoo model must pass with zero config.
TRUST_LINES: dict[str, list[str]] = {
    "seed": [],
    "bert": [
        "tokenizers.Tokenizer",
        "tokenizers.models.Model",
        "torch.Tensor",
        "torch._C._nn.gelu",
        "transformers.activations.GELUActivation",
        "transformers.models.bert.configuration_bert.BertConfig",
        "transformers.models.bert.modeling_bert.BertAttention",
        "transformers.models.bert.modeling_bert.BertEmbeddings",
        "transformers.models.bert.modeling_bert.BertEncoder",
        "transformers.models.bert.modeling_bert.BertForSequenceClassification",
        "transformers.models.bert.modeling_bert.BertIntermediate",
        "transformers.models.bert.modeling_bert.BertLayer",
        "transformers.models.bert.modeling_bert.BertModel",
        "transformers.models.bert.modeling_bert.BertOutput",
        "transformers.models.bert.modeling_bert.BertPooler",
        "transformers.models.bert.modeling_bert.BertSelfAttention",
        "transformers.models.bert.modeling_bert.BertSelfOutput",
    ],
    "gpt2": [
        "transformers.activations.NewGELUActivation",
        "transformers.generation.configuration_utils.GenerationConfig",
        "transformers.models.gpt2.configuration_gpt2.GPT2Config",
        "transformers.models.gpt2.modeling_gpt2.GPT2Attention",
        "transformers.models.gpt2.modeling_gpt2.GPT2Block",
        "transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel",
        "transformers.models.gpt2.modeling_gpt2.GPT2MLP",
        "transformers.models.gpt2.modeling_gpt2.GPT2Model",
        "transformers.pytorch_utils.Conv1D",
    ],
    "encoder": [
        "torch.nn.functional.relu",
        "torch.nn.modules.linear.NonDynamicallyQuantizableLinear",
    ],
    "attention": ["torch.nn.modules.linear.NonDynamicallyQuantizableLinear"],
    "spm": [],
}

#: The Hypothesis strategy of one input, as source in the project's test module.
WORDS = 'st.lists(st.sampled_from(package.WORDS), min_size=1, max_size=6).map(" ".join)'
STRATEGIES = {
    "seed": "sentences()",
    "bert": WORDS,
    "gpt2": 'st.text(alphabet="abc helowrd", min_size=1, max_size=12)',
    "encoder": "st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=1, max_size=6)",
    "attention": "st.lists(st.integers(0, 49), min_size=1, max_size=8)",
    "spm": WORDS,
}

CONFTEST = """\
import pytest
import torch
from package import build_model

SEED = 0


@pytest.fixture(scope="session")
def zoo_model():
    torch.manual_seed(SEED)
    return build_model()
"""

TEST_MODELS = """\
from hypothesis import strategies as st

import package
from strategies import sentences


def test_zoo(modelpack, zoo_model):
    modelpack.check(zoo_model, name="{name}", inputs={strategy})
"""

SEED_BUILD = """
from package import build_model as _build_seed


def build_model():
    return _build_seed(CORPUS)
"""


def trust_ini(lines: list[str]) -> str:
    if not lines:
        return ""
    return 'modelpack_safe_globals = """\n' + "\n".join(lines) + '\n"""'


def make_zoo_project(pytester: pytest.Pytester, name: str) -> SeedProject:
    """A user project holding zoo model ``name`` (``seed``: the example project's model)."""
    project = SeedProject(pytester)
    project.write("strategies.py", (EXAMPLE / "strategies.py").read_text())
    if name == "seed":
        project.write("corpus.txt", (EXAMPLE / "corpus.txt").read_text())
        seed = (EXAMPLE / "package.py").read_text()
        project.write(
            "package.py",
            seed
            + '\nCORPUS = __import__("pathlib").Path(__file__).with_name('
            + '"corpus.txt")\n'
            + SEED_BUILD,
        )
    else:
        project.write("package.py", (ZOO / f"{name}.py").read_text())
    project.write("conftest.py", CONFTEST)
    project.write("test_models.py", TEST_MODELS.format(name=name, strategy=STRATEGIES[name]))
    project.ini(examples=5, recorded=3, extra=trust_ini(TRUST_LINES[name]))
    return project


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_zoo_model_round_trips_regenerates_and_passes_the_gate(
    pytester: pytest.Pytester, name: str
) -> None:
    project = make_zoo_project(pytester, name)
    result = project.run()
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"{name} *cpu*roundtrip*passed*5*"])

    result = project.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"{name} *cpu*regen*created*3*"])

    before = project.snapshot()
    result = project.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    # 5 round-trip + 3 golden replays + 5 golden-vs-live + 3 live replays
    result.stdout.fnmatch_lines([f"{name} *cpu*golden*passed*16*"])
    assert project.snapshot() == before
