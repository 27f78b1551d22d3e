"""Small models for the engine's direct unit tests (tests/test_engine.py).

They live in a module of their own, not in a test module: a class defined in ``test_*.py`` pickles
but would not load in another process, and the engine refuses it (UNPICKLABLE), rightly.
"""

from __future__ import annotations

import random

import torch


class Scaler(torch.nn.Module):
    """``x -> x * weight``: one parameter, deterministic, a plain nn.Module."""

    def __init__(self, weight: float = 2.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([weight]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def scale(model: Scaler, x: float) -> float:
    """apply= for Scaler on plain floats."""
    with torch.no_grad():
        return float(model(torch.tensor([x]))[0])


class Noisy:
    """Disagrees with itself: a different answer on every call."""

    def __call__(self, x: float) -> float:
        return x + random.random()


class ForgetsOffset:
    """A __getstate__ that leaves ``offset`` out: lost by the round-trip."""

    def __init__(self) -> None:
        self.offset = 3.0

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __call__(self, x: float) -> float:
        return x + getattr(self, "offset", 0.0)


class BadSetstate:
    """A __setstate__ that cannot rebuild the object from its own state."""

    def __init__(self) -> None:
        self.value = 1

    def __setstate__(self, state: dict[str, object]) -> None:
        raise ValueError("cannot rebuild from this state")

    def __call__(self, x: float) -> float:
        return x


class Holder:
    """Holds whatever it is given: a lambda, say."""

    def __init__(self, **parts: object) -> None:
        self.__dict__.update(parts)

    def __call__(self, x: float) -> float:
        return x


class Activated:
    """Calls what it holds: ``x -> act(x)`` (a planted ``act`` would run on every input)."""

    def __init__(self, act: object) -> None:
        self.act = act

    def __call__(self, x: float) -> float:
        with torch.no_grad():
            return float(self.act(torch.tensor([x]))[0])  # type: ignore[operator]
