"""Unit tests: the seed's apply-model pattern, batching, and device placement."""

from __future__ import annotations

import collections
import sys

import pytest
import torch

from pytest_modelpack import apply_model
from pytest_modelpack.apply import collate, placed, reachable_modules, to_device, uncollate
from pytest_modelpack.compare import compare

from .conftest import EXAMPLE


@pytest.fixture(scope="module")
def seed_model():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import package

        torch.manual_seed(0)
        yield package.build_model(EXAMPLE / "corpus.txt")
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("package", None)


def test_apply_model_follows_the_seed_pattern(seed_model) -> None:
    out = apply_model(seed_model, "lorem ipsum")
    assert set(out) == {"decision", "prediction"}
    assert out["decision"] in ("good", "bad", "ugly")
    # By hand: preprocess, batch of one, forward under no_grad in eval mode, item 0, postprocess.
    seed_model.eval()
    with torch.no_grad():
        batch = seed_model.preprocess("lorem ipsum").unsqueeze(0)
        expected = seed_model.postprocess(seed_model.forward(batch)[0])
    assert out == expected


def test_batched_apply_equals_single(seed_model) -> None:
    texts = ["good movie", "awful plot", "fine"]
    singles = [apply_model(seed_model, t) for t in texts]
    # Same-length inputs can be batched; mixed lengths must be padded by preprocess.
    batched = apply_model(seed_model, ["good movie"] * 2, single=False, batch_size=2)
    # Batched GRU kernels may round differently in the last bit: compare with float32 tolerance.
    assert compare([singles[0], singles[0]], batched, exact=False) == []
    with pytest.raises(ValueError, match="cannot batch tensors of different shapes"):
        apply_model(seed_model, texts, single=False, batch_size=3)


def test_apply_model_restores_training_flags(seed_model) -> None:
    seed_model.layer.train()
    apply_model(seed_model, "lorem ipsum")
    assert seed_model.layer.training and seed_model.layer.rnn.training
    seed_model.layer.eval()


def test_plain_callables_are_called_directly() -> None:
    linear = torch.nn.Linear(2, 1)
    linear.train()
    out = apply_model(linear, torch.ones(2))
    assert out.shape == (1,) and not out.requires_grad  # ran under no_grad
    assert linear.training  # eval only for the call
    assert apply_model(len, "abc") == 3


def test_collate_and_uncollate_nested_structures() -> None:
    Pair = collections.namedtuple("Pair", "a b")
    items = [
        {
            "ids": torch.tensor([1, 2]),
            "meta": (torch.tensor(1.0), "x"),
            "p": Pair(torch.zeros(2), 3),
        }
        for _ in range(2)
    ]
    batch = collate(items)
    assert batch["ids"].shape == (2, 2)
    assert batch["meta"][0].shape == (2,) and batch["meta"][1] == ["x", "x"]
    assert isinstance(batch["p"], Pair) and batch["p"].b == [3, 3]
    split = uncollate({"scores": torch.arange(6).reshape(2, 3), "n": torch.tensor([4, 5])}, 2)
    assert split[1]["scores"].tolist() == [3, 4, 5] and split[1]["n"].item() == 5
    with pytest.raises(ValueError, match="expected a first \\(batch\\) dimension of 2"):
        uncollate(torch.zeros(3, 1), 2)


def test_to_device_moves_nested_tensors() -> None:
    value = {"a": [torch.ones(1), (torch.zeros(1), "s")]}
    moved = to_device(value, "meta")
    assert moved["a"][0].device.type == "meta"
    assert moved["a"][1][0].device.type == "meta" and moved["a"][1][1] == "s"


class Holder:
    """A plain (non-Module) wrapper, like the seed's final MyCompoundClass."""

    def __init__(self) -> None:
        self.layer = torch.nn.GRU(3, 4, batch_first=True)
        self.norm = torch.nn.BatchNorm1d(4)
        self.scale = torch.tensor([2.0])
        self.extra = {"bias": torch.ones(4)}


def test_placed_moves_modules_and_loose_tensors_and_restores_them_exactly() -> None:
    holder = Holder()
    holder.layer.train()
    params = {id(p): p.data.data_ptr() for p in holder.layer.parameters()}
    buffers = dict(holder.norm._buffers)
    scale, bias = holder.scale, holder.extra["bias"]
    before = holder.layer(torch.ones(1, 2, 3))[0]
    # "meta" stands in for a GPU: a real device move on any machine.
    with placed(holder, "meta"):
        assert {p.device.type for p in holder.layer.parameters()} == {"meta"}
        assert holder.norm.running_mean.device.type == "meta"
        assert holder.scale.device.type == "meta" and holder.extra["bias"].device.type == "meta"
        holder.layer.eval()
    assert {id(p): p.data.data_ptr() for p in holder.layer.parameters()} == params
    assert all(holder.norm._buffers[k] is v for k, v in buffers.items())
    assert holder.scale is scale and holder.extra["bias"] is bias
    assert holder.layer.training  # flag restored
    assert torch.equal(holder.layer(torch.ones(1, 2, 3))[0], before)  # flat weights rebuilt


def test_placed_restores_even_when_the_block_raises() -> None:
    holder = Holder()
    with pytest.raises(RuntimeError, match="boom"), placed(holder, "meta"):
        raise RuntimeError("boom")
    assert {p.device.type for p in holder.layer.parameters()} == {"cpu"}
    assert holder.scale.device.type == "cpu"


def test_reachable_modules_finds_modules_in_plain_objects_and_containers() -> None:
    holder = Holder()
    holder.more = [torch.nn.Linear(1, 1), {"k": torch.nn.ReLU()}]
    names = sorted(type(m).__name__ for m in reachable_modules(holder))
    assert names == ["BatchNorm1d", "GRU", "Linear", "ReLU"]
