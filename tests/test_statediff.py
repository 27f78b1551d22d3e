"""The state diff (issue 13): golden vs live state, path by path, through the structure walk."""

from __future__ import annotations

import copy
import io
import pickle
import sys
from pathlib import Path

import pytest
import torch

from pytest_modelpack.statediff import state_diff

sys.path.insert(0, str(Path(__file__).resolve().parent / "zoo"))
import bert  # noqa: E402
import spm  # noqa: E402

sys.path.pop(0)


class Holder:
    def __init__(self, layer: torch.nn.Module, labels: dict, note: str = "x") -> None:
        self.layer = layer
        self.labels = labels
        self.note = note


def make(seed: int = 0) -> Holder:
    torch.manual_seed(seed)
    return Holder(torch.nn.Embedding(100, 64), {"pos": 1, "neg": 0})


def test_identical_state_has_no_differing_paths_and_counts_the_equal_ones() -> None:
    golden = make()
    live = pickle.loads(pickle.dumps(golden))
    diff = state_diff(golden, live)
    assert diff.differing == []
    # weight, labels['pos'], labels['neg'], note, and the module's public config values
    assert diff.equal >= 4
    assert diff.summary().startswith(f"state diff: all {diff.equal} paths")


def test_a_changed_weight_is_named_with_its_max_abs_difference_and_shape() -> None:
    golden = make()
    live = copy.deepcopy(golden)
    with torch.no_grad():
        live.layer.weight[3, 5] += 0.83
    diff = state_diff(golden, live)
    assert diff.differing == ["model.layer.weight: max abs diff 0.83 (shape 100×64)"]
    assert diff.paths == ["model.layer.weight"]
    lines = diff.lines()
    assert (
        lines[0] == f"state diff (golden vs live model): 1 of {diff.equal + 1} paths differ, "
        f"{diff.equal} equal"
    )


def test_other_seed_differs_in_every_weight_but_not_in_config() -> None:
    diff = state_diff(make(0), make(1))
    assert diff.paths == ["model.layer.weight"]


def test_dtype_shape_scalar_and_missing_paths() -> None:
    golden, live = make(), make()
    live.layer.weight = torch.nn.Parameter(golden.layer.weight.detach().half())
    live.labels = {"pos": 2, "neutral": 0}
    live.note = "y"
    diff = state_diff(golden, live)
    assert "model.layer.weight: dtype float32 -> float16" in diff.differing
    assert "model.labels['pos']: int = 1 -> int = 2" in diff.differing
    assert "model.labels['neg']: only in the golden (int = 0)" in diff.differing
    assert "model.labels['neutral']: only in the live model (int = 0)" in diff.differing
    assert "model.note: str = 'x' -> str = 'y'" in diff.differing
    live.layer.weight = torch.nn.Parameter(torch.zeros(3, 64))
    assert "model.layer.weight: shape 100×64 -> 3×64" in state_diff(golden, live).differing


def test_integer_tensors_count_differing_elements() -> None:
    a, b = torch.arange(10), torch.arange(10)
    b[2] = 0
    assert state_diff({"t": a}, {"t": b}).differing == [
        "model['t']: 1 of 10 elements differ (shape 10)"
    ]


def test_a_tokenizer_is_compared_by_its_vocabulary() -> None:
    stable = bert.train_wordpiece()
    assert state_diff({"tok": stable}, {"tok": bert.train_wordpiece()}).differing == []
    renumbered = bert._empty(
        bert.models.WordPiece(
            vocab={t: (i + 1) % len(stable.get_vocab()) for t, i in stable.get_vocab().items()},
            unk_token="[UNK]",
        )
    )
    (line,) = state_diff({"tok": stable}, {"tok": renumbered}).differing
    assert line.startswith(
        "model['tok']: vocabulary differs: 80 of 80 tokens have other ids (e.g. "
    )


def test_a_sentencepiece_processor_is_compared_by_its_pieces() -> None:
    golden = spm.PiecePipeline()
    assert state_diff(golden, spm.PiecePipeline()).differing == []
    small = spm.PiecePipeline(vocab_size=40)
    (line,) = state_diff(golden, small).differing
    assert line.startswith("model.processor: vocabulary differs: ")
    assert "tokens only in the golden" in line


def test_opaque_objects_fall_back_to_a_digest_of_their_pickled_state() -> None:
    golden = {"buf": io.BytesIO(b"abc")}
    assert state_diff(golden, {"buf": io.BytesIO(b"abc")}).differing == []
    (line,) = state_diff(golden, {"buf": io.BytesIO(b"abd")}).differing
    assert line.startswith("model['buf']: pickled state differs (sha256 ")


@pytest.mark.parametrize("shown", [1, 8])
def test_lines_show_a_bounded_number_of_paths(shown: int) -> None:
    golden = {f"w{i}": torch.zeros(2) for i in range(5)}
    live = {f"w{i}": torch.ones(2) for i in range(5)}
    lines = state_diff(golden, live).lines(shown=shown)
    assert len(lines) == 1 + min(shown, 5) + (1 if shown < 5 else 0)


def test_containers_too_long_to_walk_are_compared_whole() -> None:
    words = [f"w{i}" for i in range(100)]
    assert state_diff({"words": words}, {"words": list(words)}).differing == []
    changed = [*words[:50], "other", *words[51:]]
    assert state_diff({"words": words}, {"words": changed}).differing == [
        "model['words']: builtins.list (100 items), contents differ"
    ]
    assert state_diff({"words": words}, {"words": words[:99]}).differing == [
        "model['words']: builtins.list (100 items) -> builtins.list (99 items)"
    ]


def test_reproducibility_is_diagnosed_only_without_drift_and_with_differing_state() -> None:
    from pytest_modelpack.diagnose.reproducibility import explain_state_difference

    diff = state_diff(make(0), make(1))
    assert explain_state_difference(diff, drift_clean=False, nodeid="t.py::t") is None
    assert explain_state_difference(state_diff(make(), make()), True, "t.py::t") is None
    explained = explain_state_difference(diff, drift_clean=True, nodeid="t.py::t")
    assert explained is not None
    detail, fix = explained
    assert "the fixture does not build the same model in every process" in detail[0]
    assert "(model.layer.weight)" in detail[0]
    assert detail[1].startswith("weights differ: unseeded random initialisation")
    assert fix.startswith("make the fixture build the same model in every process: seed it")
    assert fix.endswith("pytest --modelpack-regen t.py::t")
