"""The ``modelpack`` fixture object: the thin adapter between a test and the golden lifecycle."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import errors
from .fixes import test_of
from .options import Settings

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from .engine import CheckResult
    from .session import SessionState

#: Golden names become folder names (and ``.NAME.new-*`` temporary folders): keep them short.
MAX_NAME = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def device_unavailable(device: str) -> str | None:
    """Why ``device`` cannot run here, or None when it can."""
    if device == "cpu":
        return None
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"{device}: torch.cuda.is_available() is False"
        if ":" in device and int(device.split(":", 1)[1]) >= torch.cuda.device_count():
            return f"{device}: only {torch.cuda.device_count()} CUDA device(s) visible"
        return None
    if device == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            return "mps: torch.backends.mps.is_available() is False"
    return None


def claimant_of(node: pytest.Item, device: str) -> str:
    """The test's node id without the device parameter: what owns a golden."""
    base = test_of(node.nodeid)
    callspec = getattr(node, "callspec", None)
    if callspec is None:
        return base
    parts = callspec.id.split("-")
    if device in parts:
        parts.remove(device)
    return f"{base}[{'-'.join(parts)}]" if parts else base


class Modelpack:
    """The ``modelpack`` fixture: ``modelpack.check(model, inputs=...)`` in a test."""

    def __init__(
        self, request: pytest.FixtureRequest, state: SessionState, device: str, settings: Settings
    ) -> None:
        self._request = request
        self._state = state
        self.device = device
        self.settings = settings

    @property
    def mode(self) -> str:
        """``roundtrip``, ``golden`` (--modelpack-golden) or ``regen`` (--modelpack-regen)."""
        return self.settings.mode

    def check(
        self,
        model: Any,
        *,
        inputs: SearchStrategy[Any],
        name: str | None = None,
        apply: Callable[[Any, Any], Any] | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        examples: int | None = None,
        serializer: str | None = None,
    ) -> CheckResult:
        """Check ``model`` in the session's mode; fail the test loudly on any problem.

        ``inputs`` is a Hypothesis strategy of single model inputs. ``name`` names the golden
        (default: the test function's name). ``apply(model, x)`` runs the model on one input
        (default: :func:`pytest_modelpack.apply_model`). ``rtol``/``atol`` override tolerances;
        ``examples`` overrides how many Hypothesis inputs are tried. ``serializer`` (``pickle``,
        ``torch``, ``dill`` or ``cloudpickle``) overrides ``modelpack_serializer`` for this golden.
        """
        __tracebackhide__ = True
        from .engine import CheckRequest, run_check
        from .engine.request import display_path
        from .report.junit import junit_properties

        node = self._request.node
        name = name if name is not None else getattr(node, "originalname", node.name)
        problem = self._validate(name, inputs, apply, rtol, atol, examples)
        if problem is not None:
            pytest.fail(problem.with_name(name).render(), pytrace=False)
        settings = self.settings
        if serializer is not None:
            from .options import parse_serializer

            try:
                chosen = parse_serializer(serializer, "serializer=")
            except ValueError as exc:
                pytest.fail(errors.UsageError(str(exc)).with_name(name).render(), pytrace=False)
            settings = dataclasses.replace(settings, serializer=chosen)
        path = Path(node.path).parent / self.settings.golden_dir / name
        claimant = claimant_of(node, self.device)
        other = self._state.claim(path, claimant)
        if other is not None:
            error = errors.DuplicateGolden(
                f"two tests write the golden {name!r}",
                name=name,
                detail=[
                    f"golden folder: {path}",
                    f"already claimed by: {other}",
                    f"and by: {claimant}",
                ],
                fix="give each check its own name=... (goldens are per name, not per test)",
            )
            pytest.fail(error.render(), pytrace=False)
        request = CheckRequest(
            model=model,
            name=name,
            inputs=inputs,
            settings=settings,
            device=self.device,
            golden_folder=path,
            project_root=self._state.root,
            nodeid=test_of(node.nodeid),
            apply=apply,
            rtol=rtol,
            atol=atol,
            examples=examples,
            writes_golden=self.device == self.settings.devices[0],
            prefetched=self._state.take_prefetched(node.nodeid, path),
            manifest_seen=self._state.manifests.pop(path, None),
            item=node.nodeid,
            claimant=claimant,
        )
        result = run_check(request)
        row = result.to_dict()
        self._state.report.add(row)
        node.user_properties.extend(junit_properties(row, display_path(path, self._state.root)))
        if result.error is not None:
            pytest.fail(result.error.render(), pytrace=False)
        return result

    @staticmethod
    def _validate(
        name: Any, inputs: Any, apply: Any, rtol: Any, atol: Any, examples: Any
    ) -> errors.ModelpackError | None:
        from hypothesis.strategies import SearchStrategy

        if isinstance(name, str) and len(name) > MAX_NAME:
            return errors.UsageError(
                f"golden name too long ({len(name)} characters, at most {MAX_NAME})",
                fix="pass a shorter name=... (it becomes a folder name, and file systems limit "
                "those)",
            )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            return errors.UsageError(
                f"invalid golden name {name!r}",
                fix="use letters, digits, '_', '.' and '-' (it becomes a folder name)",
            )
        if not isinstance(inputs, SearchStrategy):
            return errors.UsageError(
                "inputs= must be a Hypothesis strategy of single model inputs, got "
                f"{type(inputs).__name__}",
                fix="pass e.g. inputs=st.text(min_size=1); "
                "for fixed inputs use st.sampled_from([...])",
            )
        if apply is not None and not callable(apply):
            return errors.UsageError("apply= must be a callable apply(model, x)")
        for label, value in (("rtol", rtol), ("atol", atol)):
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                return errors.UsageError(f"{label}= must be a number >= 0, got {value!r}")
        if examples is not None and (not isinstance(examples, int) or examples < 1):
            return errors.UsageError(f"examples= must be a whole number >= 1, got {examples!r}")
        return None
