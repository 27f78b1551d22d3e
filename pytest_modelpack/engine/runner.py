"""Running a model on one input: the output on the CPU, or the exception it raised."""

from __future__ import annotations

from typing import Any

from ..apply import apply_model, to_device
from ..golden.examples import raised_from
from .request import CheckRequest

__all__ = ["Runner", "tolerance_line"]


class Runner:
    """Applies a model to one input and returns a CPU value, or the exception it raised."""

    def __init__(self, request: CheckRequest) -> None:
        self.request = request
        #: Calls on the live model, and how many of them raised (see :meth:`all_raised`).
        self.live_calls = 0
        self.live_raised: list[Any] = []
        #: Calls on the live model that returned None (see :meth:`all_none`).
        self.live_none = 0

    def __call__(self, model: Any, x: Any, device: str) -> Any:
        live = model is self.request.model
        if live:
            self.live_calls += 1
        try:
            if self.request.apply is not None:
                output = self.request.apply(model, x)
            else:
                output = apply_model(model, x, device=device)
        except Exception as exc:  # raising is behaviour too: compared by type and message
            raised = raised_from(exc)
            if live:
                self.live_raised.append(raised)
            return raised
        if live and output is None:
            self.live_none += 1
        return to_device(output, "cpu")

    def all_raised(self) -> bool:
        """Whether every input the live model ran on raised: a check of exceptions only."""
        return self.live_calls > 0 and len(self.live_raised) == self.live_calls

    def all_none(self) -> bool:
        """Whether no input gave the live model an output but None: nothing was compared."""
        return self.live_none > 0 and self.live_none + len(self.live_raised) == self.live_calls


def tolerance_line(rtol: float | None, atol: float | None, exact: bool) -> str:
    if rtol is None and atol is None:
        return "tolerance: exact" if exact else "tolerance: torch.testing defaults per dtype"
    return f"tolerance: rtol={rtol}, atol={atol}"
