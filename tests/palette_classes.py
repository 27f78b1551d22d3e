"""Project classes for the palette property test (tests/test_palette.py): they live in a module
of the project, as a user's model code does, so the policy judges them as project code."""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, NamedTuple

import torch


class Color(enum.Enum):
    RED = 1
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Config:
    name: str
    value: Any = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: Any
    b: int = 0


class Point(NamedTuple):
    x: Any
    y: Any


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __eq__(self, other: object) -> bool:
        return type(other) is Slotted and (self.a, self.b) == (other.a, other.b)  # type: ignore[attr-defined]


class Lazy:
    """A value computed once and cached in the instance dict, under the name of the class's
    ``cached_property``: plain pickle restores the cache as state."""

    def __init__(self, base: Any) -> None:
        self.base = base

    @functools.cached_property
    def scale(self) -> Any:
        return [self.base, 2.0]

    def __eq__(self, other: object) -> bool:
        return type(other) is Lazy and vars(self) == vars(other)


class Plain:
    def __init__(self, payload: Any) -> None:
        self.payload = payload


class Tagged(torch.Tensor):
    """A project tensor subclass (pickled through torch._tensor._rebuild_from_type_v2)."""


class Holder(torch.nn.Module):
    """An nn.Module holding an arbitrary value, as a model holds its config or tokenizer."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.lin = torch.nn.Linear(2, 1)
