"""NONDETERMINISTIC: why a live model disagrees with itself (train mode, randomness)."""

from __future__ import annotations

import inspect
import re
import sys
import types
from typing import Any

from ..apply import eval_mode, placed
from ..fixes import listed
from ..walk import nodes
from .frames import where
from .lossy import user_class

_RANDOM = re.compile(
    r"\b(torch\.(rand|randn|randint|randperm|bernoulli|multinomial|normal|poisson)\w*"
    r"|\w+\.(rand|randn|randint)_like|random\.\w+|np\.random\.\w+|numpy\.random\.\w+"
    r"|F\.dropout\w*|functional\.dropout\w*|\.uniform_|\.normal_|\.bernoulli_)\s*\("
)


def nondeterminism_hints(model: Any, relative_to: Any = None, walked: Any = None) -> list[str]:
    """Likely reasons ``model`` disagrees with itself: modules still training after
    ``model.eval()``, random calls in the user's own preprocess/forward/postprocess/__call__."""
    hints: list[str] = []
    modules: list[tuple[str, Any]] = []
    if sys.modules.get("torch") is not None:
        walked = list(nodes(model)) if walked is None else walked
        modules = [(n.path, n.value) for n in walked if n.shown and n.line.endswith("(nn.Module)")]
        try:
            with placed(model, None, walked):  # puts every training flag back
                eval_mode(model, [module for _, module in modules])
                training = [p for p, module in modules if module.training and _mode_matters(module)]
        except Exception:
            training = []
        if training:
            hints.append(
                f"still in train mode after model.eval(): {listed(training, 5)} "
                "(eval() does not reach them, so dropout/batch-norm stay random)"
            )
    for klass in dict.fromkeys([type(model), *(type(m) for _, m in modules)]):
        if not user_class(klass):
            continue
        for name in ("preprocess", "forward", "postprocess", "__call__"):
            method = vars(klass).get(name)
            if not isinstance(method, types.FunctionType):
                continue
            try:
                lines, start = inspect.getsourcelines(method)
            except (OSError, TypeError):
                continue
            file = where(method, relative_to).rsplit(":", 1)[0]
            for offset, text in enumerate(lines):
                if _RANDOM.search(text.split("#", 1)[0]):
                    hints.append(
                        f"random call at {file}:{start + offset} in "
                        f"{klass.__qualname__}.{name}: {text.strip()}"
                    )
    return hints


def _mode_matters(module: Any) -> bool:
    """Whether a module's training flag matters: it, or a submodule, is dropout or batch-norm."""
    torch = sys.modules["torch"]
    random_kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, random_kinds) for m in module.modules())
