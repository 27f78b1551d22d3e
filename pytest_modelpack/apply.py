"""Running a compound model on one input: the seed's ``apply_model`` pattern, and device placement.

A compound model is rarely one ``nn.Module``: the seed's final wrapper is a plain class holding a
sentencepiece tokenizer, an ``nn.Module`` and a reader, with ``preprocess`` / ``forward`` /
``postprocess``. :func:`apply_model` runs such an object the way production would; plain callables
are just called. :func:`placed` moves every module reachable from the object to a device for the
duration of a check and puts everything back afterwards, so no test leaks state into another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .compare import MAX_NESTING, MAX_VALUES
from .walk import Node, nodes


def _torch() -> Any:
    import torch

    return torch


def collate(items: Sequence[Any]) -> Any:
    """One batch of preprocessed items: tensors and arrays stacked along a new first dimension,
    dicts, lists and tuples position by position (containers of fields, not of samples), any
    other leaf (a string, a number) a list with one entry per sample."""
    torch = _torch()
    first = items[0]
    if isinstance(first, torch.Tensor):
        try:
            return torch.stack(list(items))
        except RuntimeError as exc:
            shapes = sorted({tuple(t.shape) for t in items})
            raise ValueError(
                f"cannot batch tensors of different shapes {shapes}: pad them in preprocess, "
                "or apply the model with single=True"
            ) from exc
    if type(first).__module__ == "numpy" and hasattr(first, "shape"):
        return collate([torch.from_numpy(item) for item in items])
    if isinstance(first, dict):
        return {key: collate([item[key] for item in items]) for key in first}
    if isinstance(first, (list, tuple)):
        fields = [collate(list(group)) for group in zip(*items, strict=True)]
        return type(first)(*fields) if hasattr(first, "_fields") else type(first)(fields)
    return list(items)


def uncollate(batch: Any, n: int) -> list[Any]:
    """Split a model output batch into ``n`` per-sample outputs (inverse of :func:`collate`)."""
    torch = _torch()
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or batch.shape[0] != n:
            raise ValueError(
                f"forward returned a tensor of shape {tuple(batch.shape)}, expected a first "
                f"(batch) dimension of {n}"
            )
        return [batch[i] for i in range(n)]
    if isinstance(batch, dict):
        split = {key: uncollate(value, n) for key, value in batch.items()}
        return [{key: split[key][i] for key in batch} for i in range(n)]
    if isinstance(batch, (list, tuple)):
        if (
            isinstance(batch, list)
            and len(batch) == n
            and not any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in batch)
        ):
            return list(batch)
        columns = [uncollate(value, n) for value in batch]
        rows = [[column[i] for column in columns] for i in range(n)]
        make = type(batch)
        return [make(*row) if hasattr(batch, "_fields") else make(row) for row in rows]
    return [batch] * n


def to_device(value: Any, device: Any) -> Any:
    """Every tensor in a nested dict/list/tuple structure moved to ``device``, by identity: a
    container shared N times is converted once and stays shared (a DAG of shared lists from a few
    hundred bytes of pickle must not become 2**40 copies), a cycle stays a cycle, and nesting
    deeper than :data:`MAX_NESTING` or past :data:`MAX_VALUES` values is left as is (the
    comparison refuses such an output by name; it moves what it compares itself)."""
    torch = _torch()
    memo: dict[int, Any] = {}
    seen = 1  # values, counted as the comparison and examples.json count them

    def move(v: Any, depth: int) -> Any:
        nonlocal seen
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if not isinstance(v, (dict, list, tuple)) or depth > MAX_NESTING:
            return v
        done = memo.get(id(v))
        if done is not None:
            return done
        seen += len(v)
        if seen > MAX_VALUES:
            return v
        if type(v) is list:  # filled after it is memoized: a cycle comes back to it
            out: Any = []
            memo[id(v)] = out
            out.extend(move(x, depth + 1) for x in v)
            return out
        if type(v) is dict:
            out = memo[id(v)] = {}
            out.update((k, move(x, depth + 1)) for k, x in v.items())
            return out
        if isinstance(v, dict):
            out = type(v)((k, move(x, depth + 1)) for k, x in v.items())
        elif isinstance(v, tuple) and hasattr(v, "_fields"):
            out = type(v)(*(move(x, depth + 1) for x in v))
        else:
            out = type(v)(move(x, depth + 1) for x in v)
        memo[id(v)] = out
        return out

    return move(value, 0)


#: The models inside a :func:`placed` block, and their top-level modules: :func:`apply_model`
#: runs them as they are, instead of walking their state again on every call.
_PLACED: dict[int, list[Any]] = {}


def _targets(model: Any, walked: Iterable[Node] | None) -> tuple[list[Any], list[Any]]:
    """Top-level ``nn.Module``s, and ``(holder, key, tensor)`` of the tensors outside any module
    (in an instance's ``__dict__`` or slots, a dict or a list: tuples are immutable)."""
    torch = _torch()
    modules: dict[int, Any] = {}
    loose: dict[int, tuple[Any, Any, Any]] = {}
    for node in nodes(model) if walked is None else walked:
        value = node.value
        if node.repeat or node.in_module:
            continue
        if isinstance(value, torch.nn.Module):
            modules.setdefault(id(value), value)
        elif isinstance(value, torch.Tensor) and node.holder is not None:
            loose.setdefault(id(value), (node.holder, node.key, value))
    return list(modules.values()), list(loose.values())


def reachable_modules(obj: Any) -> list[Any]:
    """Every top-level ``nn.Module`` reachable from ``obj`` (submodules of a found module are not
    listed: moving the parent moves them)."""
    return _targets(obj, None)[0]


@contextlib.contextmanager
def placed(model: Any, device: str | None, walked: Iterable[Node] | None = None) -> Iterator[Any]:
    """Every module and loose tensor reachable from ``model`` on ``device`` for the block, then
    exactly as before: each parameter gets its original tensor back (``param.data``), each buffer
    and loose tensor its object, each module its training flag. Nothing is copied back, so no
    precision is lost and no device or mode change leaks into other tests. ``walked``: the
    model's :func:`~pytest_modelpack.walk.nodes`, when the caller has them."""
    torch = _torch()
    modules, loose = _targets(model, walked)
    every = [m for root in modules for m in root.modules()]
    flags = [(m, m.training) for m in every]
    # Module.to() either swaps param.data in place or (between incompatible tensor types, or
    # with overwrite_module_params_on_conversion) puts new Parameter objects in _parameters:
    # keep both the Parameter objects and their data.
    params = [(p, p.data) for m in every for p in m._parameters.values() if p is not None]
    owners = [(m, dict(m._parameters), dict(m._buffers)) for m in every]
    outer = _PLACED.get(id(model))
    _PLACED[id(model)] = modules
    moved = False
    try:
        if device is not None:
            target = torch.device(device)
            moved = True
            for root in modules:
                root.to(target)
            for holder, key, tensor in loose:
                holder[key] = tensor.to(target)
        yield model
    finally:
        if outer is None:
            _PLACED.pop(id(model), None)
        else:
            _PLACED[id(model)] = outer
        if moved:
            for module, saved_params, saved_buffers in owners:
                module._parameters.update(saved_params)
                module._buffers.update(saved_buffers)
            for param, data in params:
                param.data = data
            for module in every:
                # RNNs cache their weights in _flat_weights; rebuild it from the restored params.
                if hasattr(module, "_init_flat_weights"):
                    module._init_flat_weights()
            for holder, key, tensor in loose:
                holder[key] = tensor
        for module, flag in flags:
            module.training = flag


def apply_model(
    model: Any,
    x: Any,
    single: bool = True,
    batch_size: int | None = None,
    device: str | None = None,
) -> Any:
    """Apply a compound model to one input (``single=True``) or a list of inputs.

    For an object with ``preprocess``/``forward`` (and optionally ``postprocess``): preprocess each
    input, collate a batch, move it to ``device``, run ``forward`` under ``torch.no_grad()`` in eval
    mode, split the batch and postprocess each item. Training flags are restored afterwards. Any
    other callable is called directly (``model(x)``), under ``torch.no_grad()`` and in eval mode
    when it is an ``nn.Module``.

    ``batch_size`` (with ``single=False``) bounds how many inputs go through ``forward`` at once.
    """
    torch = _torch()
    modules = _PLACED.get(id(model))
    if modules is None:  # called on its own: walk the model once, put its flags back after
        with placed(model, None):
            return apply_model(model, x, single, batch_size, device)
    with torch.no_grad():
        eval_mode(model, modules)
        if single:
            return _apply_batch(model, [x], device)[0]
        inputs = list(x)
        size = batch_size or len(inputs) or 1
        outputs: list[Any] = []
        for start in range(0, len(inputs), size):
            outputs.extend(_apply_batch(model, inputs[start : start + size], device))
        return outputs


def eval_mode(model: Any, modules: Iterable[Any]) -> None:
    """``model.eval()``, or each of its ``modules``' when it has none (a plain wrapper class)."""
    if callable(getattr(model, "eval", None)):
        model.eval()
    else:
        for module in modules:
            module.eval()


def _apply_batch(model: Any, inputs: list[Any], device: str | None) -> list[Any]:
    if not (
        callable(getattr(model, "preprocess", None)) and callable(getattr(model, "forward", None))
    ):
        call: Callable[[Any], Any] = model
        return [call(to_device(item, device) if device else item) for item in inputs]
    batch = collate([model.preprocess(item) for item in inputs])
    if device is not None:
        batch = to_device(batch, device)
    items = uncollate(model.forward(batch), len(inputs))
    post = getattr(model, "postprocess", None)
    if callable(post):
        items = [post(item) for item in items]
    return items
