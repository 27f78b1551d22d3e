"""Count what one gate check does to the live model and the golden files (issue 19).

    python benchmarks/count_gate.py                         # the example project, every serializer
    python benchmarks/count_gate.py --serializer pickle     # one golden

The example project is copied to a temporary folder, its goldens are regenerated, and then each
golden's gate check runs alone (``pytest --modelpack-golden -k <test>``) in this process, with
counters on:

* live walks: calls of ``walk.nodes`` whose root is the live model (the one state walk);
* placements: ``placed()`` blocks per (model, device): the live model, and the loaded ones
  (the round-trip's reloaded copy, then the golden), each walked once for its block;
* live pickles: how often the live model is pickled, by any pickler at any protocol (counted
  in its class's ``__reduce_ex__``, which every pickler and ``torch.save`` calls once per dump);
* opens: each file under the golden's folder, counted by the ``open`` audit event (``open()``,
  ``io.open``, ``os.open``: a file mapped with ``mmap`` is opened once for it).

Model calls are counted too, so the table shows that the walk count does not grow with them.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
TESTS = {
    "pickle": "test_sentiment and not any_text and not serialized",
    "torch": "serialized and torch",
    "dill": "serialized and dill",
    "cloudpickle": "serialized and cloudpickle",
}
NAMES = {
    "pickle": "sentiment",
    "torch": "sentiment_torch",
    "dill": "sentiment_dill",
    "cloudpickle": "sentiment_cloudpickle",
}


class Counters:
    def __init__(self, golden_dir: Path) -> None:
        self.golden_dir = str(golden_dir)
        self.on = False
        self.live: Any = None
        self.walks = 0
        self.placements: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self.dumps = 0
        self.calls = 0
        self.opens: collections.Counter[str] = collections.Counter()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.on and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(self.golden_dir + os.sep):
                self.opens[os.path.relpath(path, self.golden_dir)] += 1


def install(counters: Counters) -> None:
    from pytest_modelpack import apply, fixture, walk

    sys.addaudithook(counters.audit)

    real_check = fixture.Modelpack.check

    def check(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        counters.live = model
        real_forward = type(model).forward

        def forward(this: Any, *a: Any, **k: Any) -> Any:
            if counters.on:
                counters.calls += 1
            return real_forward(this, *a, **k)

        real_reduce = type(model).__reduce_ex__

        def reduce_ex(this: Any, protocol: Any) -> Any:
            if counters.on and this is counters.live:
                counters.dumps += 1
            return real_reduce(this, protocol)

        type(model).forward = forward
        type(model).__reduce_ex__ = reduce_ex
        try:
            return real_check(self, model, *args, **kwargs)
        finally:
            type(model).forward = real_forward
            type(model).__reduce_ex__ = real_reduce

    fixture.Modelpack.check = check  # type: ignore[method-assign]

    real_nodes = walk.nodes

    def nodes(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if counters.on and obj is counters.live:
            counters.walks += 1
        return real_nodes(obj, *args, **kwargs)

    real_placed = apply.placed

    def placed(model: Any, device: str | None, *args: Any, **kwargs: Any) -> Any:
        if counters.on:
            who = "live" if model is counters.live else "loaded"
            counters.placements[(who, device)] += 1
        return real_placed(model, device, *args, **kwargs)

    # every module that imported them by name
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if not name.startswith("pytest_modelpack"):
            continue
        if getattr(module, "nodes", None) is real_nodes:
            module.nodes = nodes  # type: ignore[attr-defined]
        if getattr(module, "placed", None) is real_placed:
            module.placed = placed  # type: ignore[attr-defined]


def import_engine() -> None:
    """Import every module of the package, so :func:`install` finds each name it patches."""
    import importlib
    import pkgutil

    import pytest_modelpack

    for info in pkgutil.walk_packages(pytest_modelpack.__path__, "pytest_modelpack."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serializer", choices=[*TESTS, "all"], default="all")
    args = parser.parse_args()
    chosen = list(TESTS) if args.serializer == "all" else [args.serializer]

    import pytest

    import_engine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelpack-count-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("goldens*"))
        os.chdir(project)
        sys.path.insert(0, str(project))
        quiet = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
        for name in chosen:
            if pytest.main([*quiet, "--modelpack-regen", "-k", TESTS[name]]) != 0:
                print(f"regen of {name} failed", file=sys.stderr)
                return 1
        counters = Counters(project / "goldens")
        install(counters)
        for name in chosen:
            counters.__init__(project / "goldens" / NAMES[name])  # type: ignore[misc]
            counters.on = True
            code = pytest.main([*quiet, "--modelpack-golden", "-k", TESTS[name]])
            counters.on = False
            if code != 0:
                print(f"gate of {name} failed (exit {code})", file=sys.stderr)
                return 1
            rows.append(
                (
                    name,
                    counters.calls,
                    counters.walks,
                    dict(counters.placements),
                    counters.dumps,
                    dict(counters.opens),
                )
            )
    print()
    print(
        f"{'golden':<12} {'forward calls':>13} {'live walks':>10} {'live pickles':>10}  "
        "placements (model, device): blocks   opens per golden file"
    )
    for name, calls, walks, placements, dumps, opens in rows:
        places = ", ".join(f"{w}/{d}: {n}" for (w, d), n in sorted(placements.items(), key=str))
        files = ", ".join(f"{f}: {n}" for f, n in sorted(opens.items()))
        print(f"{name:<12} {calls:>13} {walks:>10} {dumps:>10}  {places}   {files}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
