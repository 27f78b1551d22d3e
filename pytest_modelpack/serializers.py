"""The four serializers a golden can be written with, each exactly as production writes it.

* ``pickle`` — ``bundle.pkl`` = ``pickle.dump(model, f)``: classes and functions by reference
  (module + name), no code pinned;
* ``torch`` — ``bundle.pt`` = ``torch.save(model, f)``: a zip holding ``data.pkl`` (pickle
  protocol 2) and one record per tensor storage; no code pinned;
* ``dill`` — ``bundle.pkl`` = ``dill.dump(model, f)``: pins lambdas, closures, local functions
  and classes, ``__main__`` code by value;
* ``cloudpickle`` — ``bundle.pkl`` = ``cloudpickle.dump(model, f)``: the same, plus the modules
  named in ``modelpack_by_value``.

The code dill and cloudpickle pin by value is trusted by value only (see
:mod:`pytest_modelpack.safety.byvalue`): a golden builds a code object only when the live model's
own pickle builds the same one.

Each serializer also gives the pickler of the live model's in-memory dump (torch storages out of
band, every other object pickled exactly as that serializer pickles it): what the check's trust,
UNPICKLABLE diagnosis and round-trip are judged on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import sys
from collections.abc import Iterable, Iterator
from typing import Any

NAMES = ("pickle", "torch", "dill", "cloudpickle")


class SerializerMissing(ValueError):
    """A serializer that is not installed: the message holds the pip line."""


@dataclasses.dataclass(frozen=True)
class Serializer:
    name: str
    #: The bundle's file name in the golden folder.
    bundle: str
    #: The pickle protocol of the pickle it writes (torch.save: protocol 2 inside the zip).
    protocol: int
    #: The distribution that provides it (None: the standard library).
    dist: str | None

    def module(self) -> Any:
        """The serializer's module; :class:`SerializerMissing` with the pip line when absent."""
        try:
            return __import__(self.name)
        except ImportError:
            raise SerializerMissing(
                f"the serializer {self.name!r} is not installed: pip install "
                f"'pytest-modelpack[{self.name}]' (or pip install {self.dist})"
            ) from None

    def version(self) -> str | None:
        if self.dist is None:
            return f"protocol {self.protocol}"
        from importlib import metadata

        try:
            return metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            return None

    def pickler_class(self) -> Any:
        """The pickler class this serializer pickles objects with."""
        return self.module().Pickler if self.by_value else pickle.Pickler

    def unpickler_class(self) -> Any:
        """The unpickler that loads what it writes (dill resolves its own ``__builtin__`` names)."""
        if self.name == "dill":
            return self.module().Unpickler  # type: ignore[no-any-return]
        return pickle.Unpickler

    def dump(self, model: Any, f: Any, by_value: Iterable[str] = ()) -> None:
        """Write ``model`` to ``f`` exactly as production would."""
        if self.name == "torch":
            import torch

            torch.save(model, f)
            return
        with self.pinning(by_value):
            self.module().dump(model, f, protocol=self.protocol)

    @contextlib.contextmanager
    def pinning(self, modules: Iterable[str]) -> Iterator[None]:
        """cloudpickle only: ``modules`` registered to be pickled by value while inside."""
        names = [m for m in modules if m]
        if self.name != "cloudpickle" or not names:
            yield
            return
        cloudpickle = self.module()
        registered = []
        try:
            for name in names:
                module = sys.modules.get(name)
                if module is None:
                    module = _import_by_value(name)
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
            yield
        finally:
            for module in registered:
                with contextlib.suppress(ValueError):
                    cloudpickle.unregister_pickle_by_value(module)

    @property
    def by_value(self) -> bool:
        """Does it pickle code by value (code objects, functions, classes)?"""
        return self.name in ("dill", "cloudpickle")


def _import_by_value(name: str) -> Any:
    from .errors import UsageError

    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise UsageError(
            f"modelpack_by_value names the module {name!r}, which does not import: {exc}",
            fix="name importable modules of your project, separated by spaces or lines "
            "(modelpack_by_value = mypackage mypackage.layers), or remove the entry",
        ) from None


SERIALIZERS = {
    "pickle": Serializer("pickle", "bundle.pkl", pickle.DEFAULT_PROTOCOL, None),
    "torch": Serializer("torch", "bundle.pt", 2, "torch"),
    "dill": Serializer("dill", "bundle.pkl", pickle.DEFAULT_PROTOCOL, "dill"),
    "cloudpickle": Serializer("cloudpickle", "bundle.pkl", pickle.DEFAULT_PROTOCOL, "cloudpickle"),
}
BUNDLE_NAMES = tuple(sorted({s.bundle for s in SERIALIZERS.values()}))


def serializer(name: str) -> Serializer:
    return SERIALIZERS[name]
