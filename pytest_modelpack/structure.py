"""The structure tree of a model object: what a reviewer reads in a golden's diff.

A flat, ordered mapping from attribute path (``model.layer.rnn.weight_ih_l0``) to a one-line
description (``Parameter float32[192, 32]``). Flat, so that a pull request diff shows one changed
line per changed attribute, and so that two trees compare path by path (lossy round-trips).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from typing import Any

from .walk import instance_state

__all__ = ["Node", "structure_nodes", "structure_tree", "qualified_name", "diff_trees"]

#: Strings up to this length are shown verbatim; longer ones by length only.
MAX_STR = 80
#: Containers longer than this are summarised, not walked item by item.
MAX_ITEMS = 32
MAX_DEPTH = 12


def qualified_name(obj_or_type: Any) -> str:
    klass = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    module = getattr(klass, "__module__", "?")
    return f"{module}.{klass.__qualname__}"


def _tensor_line(value: Any) -> str:
    kind = "Parameter" if type(value).__name__ == "Parameter" else "Tensor"
    dtype = str(value.dtype).replace("torch.", "")
    shape = ", ".join(str(s) for s in value.shape)
    return f"{kind} {dtype}[{shape}]"


def _scalar_line(value: Any) -> str | None:
    if value is None or isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} = {value!r}"
    if isinstance(value, str):
        if len(value) <= MAX_STR:
            return f"str = {value!r}"
        return f"str (len {len(value)})"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} ({len(value)} bytes)"
    return None


_FUNCTION_TYPES = frozenset(
    {
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.ClassMethodDescriptorType,
    }
)


def _special_line(value: Any) -> str | None:
    """One-line summaries for well-known leaf objects whose insides are not attributes."""
    name = qualified_name(value)
    if name == "_io.BytesIO":
        return f"_io.BytesIO ({len(value.getbuffer())} bytes)"
    if name.startswith("sentencepiece.") and hasattr(value, "get_piece_size"):
        try:
            return f"{name} (vocab {value.get_piece_size()})"
        except Exception:  # an uninitialised processor
            return f"{name} (not loaded)"
    if type(value).__module__ == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"numpy.ndarray {value.dtype}[{', '.join(str(s) for s in value.shape)}]"
    if type(value) in _FUNCTION_TYPES:
        # A real function (pickled by reference: its names are the running process's own), never
        # any callable carrying a __qualname__: an object's own attributes could name a function
        # it is not, and hide what it holds from the walk.
        return f"function {getattr(value, '__module__', '?')}.{value.__qualname__}"
    if isinstance(value, type):
        return f"class {qualified_name(value)}"
    return None


def _compiled(module: Any) -> bool:
    """A ``torch.compile``d module (``torch._dynamo.eval_frame.OptimizedModule``)."""
    return type(module).__name__ == "OptimizedModule" and "_orig_mod" in module._modules


def _module_children(module: Any) -> list[tuple[str, Any]]:
    """Submodules, parameters, buffers, then small public config values of an nn.Module."""
    items: list[tuple[str, Any]] = []
    items.extend((k, v) for k, v in module._modules.items())
    items.extend((k, v) for k, v in module._parameters.items())
    items.extend((k, v) for k, v in module._buffers.items())
    if _compiled(module):
        # torch.compile's wrapper: its dynamo context is rebuilt (recompiled) on load by torch's
        # own __reduce__, so the state that counts is the original module's.
        return items
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        items.append((key, value))
    return items


def _object_children(value: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in instance_state(value).items() if not k.startswith("__")]


@dataclasses.dataclass(frozen=True)
class Node:
    """One attribute path of the structure walk: the value there and its one-line description.

    ``leaf`` nodes are not walked into (tensors, scalars, opaque objects such as a tokenizer,
    repeated references, the depth limit); the others are containers, modules and objects whose
    parts are the nodes that follow.
    """

    path: str
    value: Any
    line: str
    leaf: bool
    #: True when ``value`` is a repeated reference (``same object as ...``).
    repeat: bool = False


def structure_nodes(obj: Any, root: str = "model") -> Iterator[Node]:
    """Walk ``obj`` the way the structure tree describes it, yielding each :class:`Node`."""
    import torch

    seen: dict[int, str] = {}

    def walk(value: Any, path: str, depth: int) -> Iterator[Node]:
        if id(value) in seen and not isinstance(value, (int, float, str, bool, type(None))):
            yield Node(path, value, f"same object as {seen[id(value)]}", True, repeat=True)
            return
        line = _scalar_line(value)
        if line is not None:
            yield Node(path, value, line, True)
            return
        seen[id(value)] = path
        if isinstance(value, torch.Tensor):
            yield Node(path, value, _tensor_line(value), True)
            return
        if isinstance(value, (torch.dtype, torch.device, torch.Size)):
            yield Node(path, value, f"{qualified_name(value)} = {value}", True)
            return
        special = _special_line(value)
        if special is not None:
            yield Node(path, value, special, True)
            return
        if depth >= MAX_DEPTH:
            note = f"{qualified_name(value)} (not walked: deeper than {MAX_DEPTH})"
            yield Node(path, value, note, True)
            return
        if isinstance(value, dict):
            walked = len(value) <= MAX_ITEMS
            yield Node(path, value, f"{qualified_name(value)} ({len(value)} items)", not walked)
            if walked:
                for key, item in value.items():
                    yield from walk(item, f"{path}[{key!r}]", depth + 1)
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            walked = len(value) <= MAX_ITEMS and not isinstance(value, (set, frozenset))
            yield Node(path, value, f"{qualified_name(value)} ({len(value)} items)", not walked)
            if walked:
                for index, item in enumerate(value):
                    yield from walk(item, f"{path}[{index}]", depth + 1)
            return
        if isinstance(value, torch.nn.Module):
            children = _module_children(value)
            yield Node(path, value, f"{qualified_name(value)} (nn.Module)", False)
        else:
            children = _object_children(value)
            yield Node(path, value, qualified_name(value), not children)
        for key, item in children:
            yield from walk(item, f"{path}.{key}", depth + 1)

    yield from walk(obj, root, 0)


def structure_tree(obj: Any, root: str = "model") -> dict[str, str]:
    """Describe ``obj`` as ``{attribute path: description}`` in walk order."""
    return {node.path: node.line for node in structure_nodes(obj, root)}


def diff_trees(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable lines for paths removed, added or changed between two trees."""
    lines = []
    for path, line in before.items():
        if path not in after:
            lines.append(f"- {path}: {line}  (missing)")
        elif after[path] != line:
            lines.append(f"~ {path}: {line}  ->  {after[path]}")
    for path, line in after.items():
        if path not in before:
            lines.append(f"+ {path}: {line}  (new)")
    return lines
