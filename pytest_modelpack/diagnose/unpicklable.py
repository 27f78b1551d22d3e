"""UNPICKLABLE: which part of the model pickle refuses, what it is, why, and the fix."""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import sys
import types
from pathlib import Path
from typing import Any

from .. import errors
from ..walk import pickled_nodes, pickles, qualified_name
from .frames import source_line, user_frame, where
from .missing import not_importable_reason

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One part of an object graph that pickle refuses."""

    path: str
    what: str
    why: str
    fix: str
    #: The source line that created it (a lambda's line), when known.
    source: str | None = None

    def lines(self, nested: bool = True) -> list[str]:
        """Detail lines; ``nested`` indents why/fix under the path (one of several findings),
        else the fix is left to the error's own fix line."""
        indent = "  " if nested else ""
        out = [f"{self.path}: {self.what}"]
        if self.source:
            out.append(f"    {self.source}")
        out.append(f"{indent}why: {self.why}")
        if nested:
            out.append(f"{indent}fix: {self.fix}")
        return out


# -- what a part is, why pickle refuses it, how to fix it --------------------------------------


def _is_lambda(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and value.__name__ == "<lambda>"


def _lock_type(value: Any) -> bool:
    kind = type(value)
    return kind.__module__ in ("_thread", "threading") and (
        "lock" in kind.__name__.lower() or kind.__name__ in ("Condition", "Semaphore", "Event")
    )


def _script_module(value: Any) -> bool:
    """A TorchScript module or function (``torch.jit.script`` / ``torch.jit.trace``)."""
    jit = getattr(sys.modules.get("torch"), "jit", None)
    return jit is not None and isinstance(value, (jit.ScriptModule, jit.ScriptFunction))


def _log_handler(value: Any) -> bool:
    logging = sys.modules.get("logging")
    return logging is not None and isinstance(value, logging.Handler)


def opaque_part(value: Any) -> bool:
    """Third-party objects reported as one part: their insides (C++ handles, a handler's lock
    and stream) are not what the user put on the model, so the walk does not descend."""
    return _script_module(value) or _log_handler(value)


def _kind(value: Any) -> str:
    """What a part is, for the why and the fix (in this order of precedence)."""
    if _script_module(value):
        return "script"
    if _log_handler(value):
        return "handler"
    if isinstance(value, types.FunctionType):
        return "lambda" if _is_lambda(value) else "function"
    if isinstance(value, type):
        return "local class" if "<locals>" in value.__qualname__ else "class"
    if isinstance(value, types.MethodType):
        return "method"
    if "<locals>" in type(value).__qualname__:
        return "local instance"
    if isinstance(value, io.IOBase):
        return "file"
    if _lock_type(value):
        return "lock"
    if isinstance(value, types.GeneratorType):
        return "generator"
    return "module" if isinstance(value, types.ModuleType) else "object"


def describe_object(value: Any, relative_to: Any = None) -> str:
    """What an object is, in words a user recognises."""
    kind, klass = _kind(value), qualified_name(type(value))
    if kind == "local instance" and isinstance(value, io.IOBase):
        kind = "file"  # an open file first, whatever its class
    if kind == "script":
        return f"a TorchScript module ({klass})"
    if kind == "handler":
        stream = getattr(value, "stream", None)
        name = getattr(stream, "name", None)
        held = (
            f" holding the stream {name!r}"
            if isinstance(name, str)
            else f" holding a stream ({type(stream).__name__})"
            if stream is not None
            else ""
        )
        return f"a logging handler ({klass}){held}"
    if kind == "lambda":
        return f"a lambda defined at {where(value, relative_to)}"
    if kind == "function" and "<locals>" in value.__qualname__:
        return f"a local function {value.__qualname__} defined at {where(value, relative_to)}"
    if kind == "function":
        reason = not_importable_reason(value.__module__, value.__qualname__) or ""
        extra = " (not importable by that name)" if "cannot be found" in reason else ""
        return f"the function {value.__module__}.{value.__qualname__}{extra}"
    if kind == "local class":
        return f"a local class {value.__qualname__} defined at {where(value, relative_to)}"
    if kind == "file":
        name = getattr(value, "name", None)
        if isinstance(name, str):
            return f"an open file {name!r} ({type(value).__name__})"
        return f"a file object ({type(value).__name__})"
    if kind == "local instance":
        where_ = where(type(value), relative_to)
        return f"an instance of the local class {type(value).__qualname__} defined at {where_}"
    if kind == "class":
        return f"the class {qualified_name(value)}"
    if kind == "method":
        return f"a bound method {value.__qualname__}"
    if kind == "generator":
        return f"a generator ({value.__qualname__})"
    if kind == "module":
        return f"the module {value.__name__}"
    return f"a lock ({klass})" if kind == "lock" else f"an object of type {klass}"


_CODE_WHY = (
    "pickle saves a function or class by reference (module + qualified name) and imports it again "
    "when loading; {} has no name it can be imported by (pickle says: {{said}})"
)
_WHY = {
    "script": "a TorchScript module is a compiled C++ object; pickle cannot save it, only "
    "torch.jit.save can (torch says: {said})",
    "handler": "a logging handler holds a lock and usually an open stream: state of this process, "
    "not data (pickle says: {said})",
    "lambda": _CODE_WHY.format("a lambda"),
    "function": _CODE_WHY.format("a function defined inside another function"),
    "local class": _CODE_WHY.format("a class defined inside a function"),
    "local instance": "pickle saves an instance's class by reference (module + qualified name); a "
    "class defined inside a function cannot be imported by name (pickle says: {said})",
    "file": "an open file is operating-system state of this process (a descriptor and a "
    "position), not data (pickle says: {said})",
    "lock": "a lock is synchronisation state of this process, not data (pickle says: {said})",
    "generator": "a generator is a paused function call; its frame cannot be saved ({said})",
    "module": "pickle saves classes and functions by reference, never modules ({said})",
}


def _why(value: Any, error: Exception) -> str:
    said = f"{type(error).__name__}: {_ADDRESS.sub('', str(error))}"
    return _WHY.get(_kind(value), "pickle refuses it: {said}").format(said=said)


def leaf_name(path: str) -> str:
    """The last attribute, key or index of ``path`` (``model.layer.rnn`` -> ``rnn``)."""
    tail = re.split(r"[.\[]", path)[-1].rstrip("]")
    return tail.strip("'\"") or path


def _owner_attr(path: str) -> str:
    """The attribute that holds the part, on the object that owns it: what that object's
    ``__getstate__`` should drop (``model.tok.norm`` -> ``norm``, on ``model.tok``;
    ``model.hooks[2]`` -> ``hooks``: a list element cannot be dropped on its own)."""
    parts = path.split(".")
    for part in reversed(parts[1:]):
        name = re.split(r"[\[(]", part)[0]
        if name.isidentifier() and not (name.startswith("__") and name.endswith("__")):
            return name
    return path


_FIX = {
    "script": "keep the eager nn.Module on the object and script it where it runs "
    "(torch.jit.script in __setstate__ or at serving time), or ship it separately with "
    "torch.jit.save / torch.jit.load; {leave_out}",
    "handler": "hold a logging.Logger instead (pickle saves a logger by name, "
    "logging.getLogger(name)) and attach handlers where logging is configured; {leave_out}",
    "hooks": "register a module-level function as the hook (pickle saves a reference to it), or "
    "remove the hook (handle.remove()) before pickling and register it again after loading",
    "code": "define it at module level{in_file} (def {name}(...): ...) and assign that function, "
    "or use functools.partial of a module-level function; {leave_out}; or pin it by value in the "
    "golden: modelpack_serializer = dill (or cloudpickle)",
    "local instance": "define the class {cls} at module level; {leave_out}",
    "file": "keep the file's path instead and open it when needed, {leave_out}",
    "lock": "leave {top!r} out in __getstate__ and create a new lock in __setstate__",
    "generator": "store the data (a list) or what recreates the generator instead, {leave_out}",
    "module": "import the module where it is used instead of storing it on the object, {leave_out}",
    "object": "give {qualname} a __reduce__ or __getstate__/__setstate__ that pickles, {leave_out}",
}


def _fix_for(value: Any, path: str, relative_to: Any = None) -> str:
    attr, top, kind = leaf_name(path), _owner_attr(path), _kind(value)
    held = repr(top) if top.isidentifier() else "it"
    facts = {
        "leave_out": f"or leave {held} out in __getstate__ and rebuild it in __setstate__",
        "top": top,
        "cls": type(value).__name__,
        "qualname": type(value).__qualname__,
        "name": attr if attr.isidentifier() and attr != "<lambda>" else "a_name",
        "in_file": "",
    }
    if kind not in ("script", "handler") and "_hooks" in path:
        kind = "hooks"
    elif kind in ("lambda", "function", "method", "local class"):
        file = where(getattr(value, "__func__", value), relative_to).rsplit(":", 1)[0]
        facts["in_file"] = f" of {file}" if file.endswith(".py") else ""
        kind = "code"
    return _FIX.get(kind, _FIX["object"]).format(**facts)


def find_unpicklable(
    obj: Any,
    root: str = "model",
    limit: int = 10,
    relative_to: Any = None,
    pickler: type[pickle.Pickler] = pickle.Pickler,
) -> list[Finding]:
    """Every smallest part of ``obj`` that ``pickler`` refuses, by path (empty: it pickles)."""
    failing: list[tuple[str, Any, int, Exception]] = []
    refused: set[int] = set()  # only a part pickle refuses is walked into

    def descend(value: Any) -> bool:
        return id(value) in refused and not opaque_part(value)

    for path, value, depth in pickled_nodes(obj, root, descend):
        error = pickles(value, pickler)
        if error is not None:
            refused.add(id(value))
            failing.append((path, value, depth, error))
    findings: list[Finding] = []
    for i, (path, value, depth, error) in enumerate(failing):
        # The smallest failing parts: no failing part below them (depth first: those follow).
        inner = i + 1 < len(failing) and failing[i + 1][2] > depth
        local_class = "<locals>" in type(value).__qualname__ and not isinstance(value, type)
        if inner and not local_class:
            continue
        findings.append(
            Finding(
                path=path,
                what=describe_object(value, relative_to),
                why=_why(value, error),
                fix=_fix_for(value, path, relative_to),
                source=source_line(value) if _is_lambda(value) else None,
            )
        )
        if len(findings) >= limit:
            break
    return findings


def unpicklable_error(
    model: Any, exc: Exception, project_root: Path, serializer: Any = None
) -> errors.ModelpackError:
    """UNPICKLABLE for ``model``, whose dump by ``serializer`` (default: pickle) raised ``exc``:
    the parts that fail, judged by that serializer's own pickler (a lambda is fine under dill and
    cloudpickle; a lock or an open file fails under all)."""
    pickler = serializer.pickler_class() if serializer is not None else pickle.Pickler
    findings = find_unpicklable(model, relative_to=project_root, pickler=pickler)
    if not findings:  # every part pickles on its own: say what pickle said, and where
        frame = user_frame(exc, project_root)
        return errors.Unpicklable(
            f"the model cannot be pickled: {type(exc).__name__}: {exc}",
            detail=[f"where: {frame}"] if frame else [],
            fix="give the class that fails a __getstate__ or __reduce__ that returns only "
            "picklable state",
        )
    if len(findings) == 1:
        (finding,) = findings
        return errors.Unpicklable(
            f"{finding.path} cannot be pickled",
            detail=finding.lines(nested=False),
            fix=finding.fix,
        )
    return errors.Unpicklable(
        f"{len(findings)} parts of the model cannot be pickled: "
        + ", ".join(f.path for f in findings),
        detail=[line for finding in findings for line in finding.lines()],
        fix="fix each part as shown above: a module-level function instead of a lambda or local "
        "function, and process state (files, locks, generators) left out in __getstate__",
    )
