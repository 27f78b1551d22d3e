"""Which globals a golden may use, and in which role: the policy the interpreter is judged by.

A name is first decided as a whole (:meth:`Allowlist.check`: may it be imported at all?), then
each use of it by its :class:`~pytest_modelpack.safety.refs.Role` (:meth:`Allowlist.judge`).
Four sources, nothing else (in particular nothing the golden itself says):

* a built-in policy: the REDUCE table of :mod:`pytest_modelpack.safety.calls` (torch rebuild
  functions, containers, codecs... each with argument checks), ``torch.nn`` module classes built
  and restored, dtypes and torch functions referenced, numpy arrays, sentencepiece processors;
* classes and functions defined in the project's own modules (referenced, instantiated, restored
  with a default ``__setstate__``; never *called* unless the live model's pickle calls them);
* :class:`Trust` derived from the live model's own pickle (:func:`trust_from_pickle`): every
  global it uses, in the role it uses it (and for calls, the call shape);
* the ``extra`` entries the user configured (``modelpack_safe_globals``): ``module.qualname`` or
  ``module:qualname`` trusts one global in every role; ``package.*`` trusts every class under a
  package and ``package.module:*`` those of one module, as classes: referenced, instantiated and
  restored, never called.
"""

from __future__ import annotations

import _compat_pickle
import enum
import functools
import importlib
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_modelpack.errors import UsageError
from pytest_modelpack.project import (
    Location,
    ModuleKind,
    Project,
    _valid_dotted,
    is_library_module,
    is_stdlib_module,
)
from pytest_modelpack.safety.byvalue import (
    BY_VALUE_TABLE,
    CODE_BUILDERS,
    CODE_CHANGED,
    MODULE,
    is_pinned,
)
from pytest_modelpack.safety.calls import BUILD_TYPES, PLAIN_TYPES, REDUCE_TABLE
from pytest_modelpack.safety.classes import BY_VALUE, CLASS_CHANGED
from pytest_modelpack.safety.nnclasses import PREFIX as NN_PREFIX
from pytest_modelpack.safety.nnclasses import TORCH_MODULE_CLASSES
from pytest_modelpack.safety.refs import STORAGE_ELEMENT_SIZE, GlobalRef, Role

#: Referenced (never called by the pickle) torch functions a model may hold as attributes:
#: activation functions of nn.TransformerEncoderLayer, HF's ACT2FN... pure tensor functions.
#: (``torch.nn.modules.*`` holds no such function, only module classes, listed in
#: :mod:`.nnclasses`, and registries: ``register_module_forward_hook`` hooks every module.)
_REFERENCE_PREFIXES = ("torch.nn.functional", "torch._C._nn")

#: Beside the names of the call table and of BUILD_TYPES (:mod:`.calls`): what a golden may
#: reference (and instantiate, as the policy's roles say).
_REFERENCED = (
    ("torch", "Tensor"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("torch.nn.parameter", "Parameter"),
    *(("torch", f"{t}Storage") for t in STORAGE_ELEMENT_SIZE),
    # Plain value types: constructing them runs no user-controlled code. int is what a pickled
    # SentencePieceProcessor references (its _return_type attribute).
    *PLAIN_TYPES,
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("numpy", "ndarray"),
)


#: torch attributes that pickle as globals: dtypes, layouts, qschemes (sparse and quantized
#: rebuilds), memory formats. Listed, not computed, so that judging a name never imports torch;
#: tests/test_scan.py checks the list against the installed torch.
TORCH_VALUE_NAMES = frozenset(
    (
        # dtypes
        "bfloat16 bit bits16 bits1x8 bits2x4 bits4x2 bits8 bool cdouble cfloat chalf complex128 "
        "complex32 complex64 double float float16 float32 float4_e2m1fn_x2 float64 float8_e4m3fn "
        "float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu half int int1 int16 int2 int3 "
        "int32 int4 int5 int6 int64 int7 int8 long qint32 qint8 quint2x4 quint4x2 quint8 short "
        "uint1 uint16 uint2 uint3 uint32 uint4 uint5 uint6 uint64 uint7 uint8 "
        # layouts
        "_mkldnn jagged sparse_bsc sparse_bsr sparse_coo sparse_csc sparse_csr strided "
        # qschemes
        "per_channel_affine per_channel_affine_float_qparams per_channel_symmetric "
        "per_tensor_affine per_tensor_symmetric "
        # memory formats
        "channels_last channels_last_3d contiguous_format legacy_contiguous_format preserve_format"
    ).split()
)


#: Roles whose trust, where a use has a shape, is for that shape only (REDUCE: always).
_SHAPED = (Role.BUILD, Role.NEWOBJ)
#: What starts the part of a BUILD shape that lists the callables its state puts into private
#: attributes (``_compiled_call_impl``) and into the dicts they hold (``_forward_hooks``).
PRIVATE_CALLABLES = "sets "
#: The BUILD shape's mark of a state that is neither a dict nor a (dict, slots) pair.
STATE_FORM = "form:"


def _private_part(shape: str | None) -> str:
    part = (shape or "").partition(PRIVATE_CALLABLES)[2]
    return part if len(part) <= 200 else part[:200] + "..."


@functools.lru_cache(maxsize=1)
def builtin_globals() -> frozenset[tuple[str, str]]:
    """The built-in allowlist as exact ``(module, qualname)`` pairs; imports nothing.

    Besides these, the nn.Module classes of ``torch.nn.modules.*`` (listed in :mod:`.nnclasses`)
    and ``numpy.dtypes.*DType`` (by pattern) are allowed (see :meth:`Allowlist.check`).
    """
    pairs = set(_REFERENCED) | set(REDUCE_TABLE) | set(BUILD_TYPES)
    pairs.update(("torch", name) for name in TORCH_VALUE_NAMES)
    return frozenset(pairs)


@dataclass(frozen=True)
class Trust:
    """What the trusted live model's own pickle does: (module, qualname, role) uses, and for
    calls the shape of each call (see :func:`pytest_modelpack.safety.trust.trust_from_pickle`)."""

    uses: frozenset[tuple[str, str, Role]] = field(default_factory=frozenset)
    shapes: frozenset[tuple[str, str, str]] = field(default_factory=frozenset)

    def allows(self, module: str, qualname: str, role: Role, shape: str | None) -> bool:
        if (module, qualname, role) not in self.uses:
            return False
        if role is Role.REDUCE or (role in _SHAPED and shape is not None):
            return (module, qualname, shape or "") in self.shapes
        return True

    def knows(self, module: str, qualname: str) -> bool:
        return any((module, qualname, role) in self.uses for role in Role)


class Kind(str, enum.Enum):
    """Why a global is allowed (or that it is not): its value is what manifests and reports say."""

    BUILTIN = "builtin"  # the standard library, on the built-in set
    THIRD_PARTY = "third-party"  # torch, numpy ... on the built-in set
    PROJECT = "project"
    EXTRA = "extra"  # the user's configured safe globals
    LIVE = "live"  # used this way by the live model's own pickle
    GOLDEN_CODE = "golden-code"  # the golden's own pinned code (--modelpack-trust-golden-code)
    REFUSED = "refused"

    def __str__(self) -> str:
        return self.value


class Missing(enum.Enum):
    """What of a refused name does not resolve: a renamed or moved class, not an attack."""

    MODULE = "module"  # ModuleNotFoundError, as pickle.load would raise
    ATTRIBUTE = "attribute"  # AttributeError


@dataclass(frozen=True)
class Decision:
    """Whether one global may be unpickled (``kind``), and why (``reason``). ``missing``: what
    of a refused name does not resolve at all (a load error rather than an attack)."""

    allowed: bool
    kind: Kind
    reason: str
    missing: Missing | None = None


def _split_extra(entry: str) -> tuple[str, str | None]:
    """'module:qualname' -> (module, qualname); 'module.qualname' -> (dotted, None)."""
    text = entry.strip()
    module, colon, qualname = (part.strip() for part in text.partition(":"))
    if colon and _valid_dotted(module) and _valid_dotted(qualname):
        return module, qualname
    if not colon and _valid_dotted(text) and "." in text:
        return text, None
    raise UsageError(
        f"invalid safe-global entry {entry!r}",
        fix=f"write it as module.qualname or module:qualname, e.g. mypkg.model{colon or '.'}Net",
    )


def _refused(reason: str, missing: Missing | None = None) -> Decision:
    return Decision(False, Kind.REFUSED, reason, missing)


class Allowlist:
    """Decides, per exact ``(module, qualname)``, whether a golden may import a global.

    ``project_root`` is the project whose own classes and functions are trusted (None: no project
    code). ``extra`` holds the user's additional entries, ``"module.qualname"`` or
    ``"module:qualname"``; the colon form is exact, the dotted form is split at the longest prefix
    that names an existing module. Decisions are cached.
    """

    def __init__(
        self,
        project_root: Path | str | None,
        extra: Iterable[str] = (),
        trust: Trust | None = None,
        trust_golden_code: bool = False,
    ) -> None:
        self.project = Project(project_root)
        #: ``--modelpack-trust-golden-code``: a golden may build code objects the live model's
        #: own pickle does not (the golden's own pinned code, from a trusted branch).
        self.trust_golden_code = trust_golden_code
        self.project_root = self.project.root
        self.trust = trust if trust is not None else Trust()
        self._extra_exact: set[tuple[str, str]] = set()
        self._extra_dotted: set[str] = set()
        self._extra_packages: set[str] = set()  # "pkg.*": pkg and every module below it
        self._extra_modules: set[str] = set()  # "pkg.mod:*": that module only
        for entry in extra:
            text = entry.strip()
            if not text:
                continue
            if text.endswith((".*", ":*")):
                module = text[:-2]
                if not _valid_dotted(module):
                    raise UsageError(
                        f"invalid safe-global entry {entry!r}",
                        fix="trust a package's classes as package.* (or one module's as "
                        "package.module:*)",
                    )
                (self._extra_packages if text.endswith(".*") else self._extra_modules).add(module)
                continue
            module, qualname = _split_extra(entry)
            if qualname is None:
                self._extra_dotted.add(module)
            else:
                self._extra_exact.add((module, qualname))
        self._cache: dict[tuple[str, str], Decision] = {}
        self._splits: dict[str, tuple[str, str]] = {}

    def check(self, module: str, qualname: str) -> Decision:
        """Decide whether ``module.qualname`` may be unpickled."""
        key = (module, qualname)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._cache[key] = self._decide(module, qualname)
        return decision

    def judge(self, ref: GlobalRef) -> Decision:
        """Decide one use of a global: ``ref.module.ref.qualname`` in ``ref.role``.

        Nothing in ``ref`` but its names, role and call shape counts: the golden cannot widen
        trust. A REDUCE of anything outside the built-in table needs the live model's pickle to
        make the same call (or an exact ``modelpack_safe_globals`` entry).
        """
        if ref.problem is not None:
            return _refused(ref.problem)
        module, qualname, role = ref.module, ref.qualname, ref.role
        key = (module, qualname)
        name = self.check(module, qualname)
        if self.trust.allows(module, qualname, role, ref.shape):
            return Decision(True, Kind.LIVE, "used this way by the live model's own pickle")
        if self._extra_listed(module, qualname):
            return Decision(True, Kind.EXTRA, "listed in the extra safe globals")
        if role is Role.NEWOBJ and ref.shape:
            return _refused(
                f"instantiated with keyword arguments ({ref.shape}) the live model's own pickle "
                "never passes it (NEWOBJ_EX: they reach the class's __new__ unchecked)"
            )
        if role is Role.BUILD and PRIVATE_CALLABLES in (ref.shape or ""):
            return _refused(
                "BUILD state puts a function, class or partial into a private attribute or a "
                f"hook dict ({_private_part(ref.shape)}) where the live model's own pickle does "
                "not: whoever calls the object (its hooks, nn.Module._compiled_call_impl) "
                "would run it"
            )
        if (
            role is Role.BUILD
            and STATE_FORM in (ref.shape or "")
            and (name.kind == Kind.PROJECT or module.split(".")[0] == "torch")
        ):
            form = (ref.shape or "").partition(STATE_FORM)[2].split(" ")[0]
            return _refused(
                f"BUILD state is a {form}, not a dict, where the live model's own pickle never "
                "restores this class so (nn.Module.__setstate__ sets whatever names a list of "
                "pairs holds)"
            )
        if role is not Role.REDUCE and self._in_extra_package(module):
            return Decision(True, Kind.EXTRA, "a class of a package listed in the safe globals")
        if role is Role.REDUCE and is_pinned(ref):
            if self.trust_golden_code and key in CODE_BUILDERS:
                # (never a class: its metaclass, __init_subclass__ and __setstate__ would run
                # the golden's own code while it loads)
                return Decision(
                    True,
                    Kind.GOLDEN_CODE,
                    "the golden's own code, trusted by --modelpack-trust-golden-code",
                )
            return _refused(CODE_CHANGED if key in CODE_BUILDERS else CLASS_CHANGED)
        if role is Role.REFERENCE and qualname == MODULE:
            if self.trust.knows(module, qualname):
                return Decision(True, Kind.LIVE, "a module the live model's own pickle imports")
            return _refused("a module the live model's own pickle never imports")
        if role is Role.REFERENCE:
            if (
                name.allowed
                and name.kind == Kind.PROJECT
                and self._project_function(module, qualname)
            ):
                # A function stored as a value is called by whoever reads it (a planted
                # ``preprocess``, a hook): only where the live model's own pickle stores it too.
                if self.trust.knows(module, qualname):
                    return Decision(True, Kind.LIVE, "used by the live model's own pickle")
                return _refused(
                    "a project function the live model's own pickle never references: a golden "
                    "may neither call it nor store it (whoever reads it would call it)"
                )
            if name.allowed:
                return name
            if module.startswith(_REFERENCE_PREFIXES) and _torch_function_name(qualname):
                return Decision(True, Kind.THIRD_PARTY, "a torch function")
            if self.trust.knows(module, qualname):
                return Decision(True, Kind.LIVE, "used by the live model's own pickle")
            return name
        if role is Role.REDUCE:
            if key in REDUCE_TABLE:
                return Decision(True, name.kind, "on the built-in call table (arguments checked)")
            if name.allowed and name.kind == Kind.PROJECT:
                return _refused(
                    "a project function or class called by the golden, but the live model's "
                    "own pickle never calls it this way"
                )
            if key in BY_VALUE_TABLE:
                return _refused(
                    "a by-value builder called in a way the live model's own pickle never does"
                )
            return self._refuse_role(name, role)
        # NEWOBJ / BUILD: torch modules, project classes, the built-in restorable types.
        if key in TORCH_MODULE_CLASSES:
            return Decision(True, Kind.THIRD_PARTY, "a torch.nn module class")
        if key in BUILD_TYPES or (role is Role.NEWOBJ and key in PLAIN_TYPES):
            return Decision(True, name.kind, "on the built-in allowlist")
        if name.allowed and name.kind == Kind.PROJECT:
            return name
        return self._refuse_role(name, role)

    def _project_function(self, module: str, qualname: str) -> bool:
        """Is the (already allowed, so imported) project global a function, not a class?"""
        obj: object = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        return obj is not None and not isinstance(obj, type)

    def _refuse_role(self, name: Decision, role: Role) -> Decision:
        if not name.allowed:
            return name
        return _refused(
            f"not allowed to be {role} by a golden (the live model's own pickle never does this)"
        )

    def _in_extra_package(self, module: str) -> bool:
        if module in self._extra_modules:
            return True
        parts = module.split(".")
        return any(".".join(parts[:i]) in self._extra_packages for i in range(1, len(parts) + 1))

    def classify(self, module: str) -> ModuleKind:
        """Standard library, project or third-party (see :mod:`pytest_modelpack.project`)."""
        return self.project.module_kind(module)

    # -- decisions -----------------------------------------------------------------------------

    def _decide(self, module: str, qualname: str) -> Decision:
        if module == BY_VALUE:
            return _refused(
                "a class the golden built by value that the live model's own pickle does not "
                "use this way"
            )
        if "<locals>" in qualname.split("."):
            return _refused("a class or function defined inside a function (<locals>)")
        if not (_valid_dotted(module) and _valid_dotted(qualname)):
            return _refused("not a valid module and qualified name")
        top = module.partition(".")[0]
        # Python 2 names (__builtin__, copy_reg...) are standard library too, never "renamed
        # project code": a protocol 3+ stream asking for them is refused, not aliased.
        stdlib = is_stdlib_module(module) or top in _compat_pickle.IMPORT_MAPPING
        if (
            (module, qualname) in builtin_globals()
            or (module, qualname) in TORCH_MODULE_CLASSES
            or (module == "numpy.dtypes" and qualname.endswith("DType"))
        ):
            kind = Kind.BUILTIN if stdlib else Kind.THIRD_PARTY
            return Decision(True, kind, "on the built-in allowlist")
        project_refusal: Decision | None = None
        if self.project_root is not None and not stdlib:
            project = self._decide_project(module, qualname)
            if project is not None:
                if project.allowed:
                    return project
                project_refusal = project
        if self._extra_listed(module, qualname):
            return Decision(True, Kind.EXTRA, "listed in the extra safe globals")
        if project_refusal is not None:
            return project_refusal
        if stdlib:
            where = "standard library code"
        elif module.startswith(NN_PREFIX):
            where = "not an nn.Module class of torch.nn.modules (a name that module imports)"
        elif is_library_module(module):
            where = "third-party code"
        else:  # not installed, and not under the project root (the CLI without --root)
            where = "neither installed nor project code"
        return _refused(f"not on the allowlist: {where}")

    def _decide_project(self, module: str, qualname: str) -> Decision | None:
        """The verdict for a project module; None when ``module`` is not project code."""
        status, detail = self.project.locate_module(module)
        if status is Location.OUTSIDE:
            return None
        if status is Location.MISSING:
            # Not found anywhere we may look: a renamed or moved project module, most likely.
            return _refused(detail, missing=Missing.MODULE)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            return _refused(f"cannot import {module}: {exc}", missing=Missing.MODULE)
        except (Exception, SystemExit) as exc:
            # Project code failed at import: report, don't crash the scan. SystemExit too: a
            # golden naming e.g. ``setup.x`` makes us import a project's setup.py, whose setup()
            # exits on our argv; that must refuse the name, not end the scan (or the pytest run).
            return _refused(f"importing {module} failed: {type(exc).__name__}: {exc}")
        # An import hook (sys.meta_path) could have loaded something other than the file found.
        origin = getattr(mod, "__file__", None)
        if origin is None or not self.project.contains_file(origin):
            return _refused(f"module {module} was imported from outside the project")
        obj: object = mod
        parts = qualname.split(".")
        for i, part in enumerate(parts):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                return _refused(
                    f"module {module} has no attribute {'.'.join(parts[: i + 1])}",
                    missing=Missing.ATTRIBUTE,
                )
            except Exception as exc:
                return _refused(f"looking up {qualname} failed: {exc}")
            if i < len(parts) - 1 and not isinstance(obj, type):
                what = "a module object" if inspect.ismodule(obj) else type(obj).__name__
                return _refused(
                    f"{module}.{'.'.join(parts[: i + 1])} is {what}; a qualified name may only "
                    "pass through classes"
                )
        if inspect.ismodule(obj):
            return _refused("resolves to a module object")
        if not (isinstance(obj, type) or inspect.isfunction(obj)):
            return _refused(f"resolves to a {type(obj).__name__}, not a class or function")
        if obj.__module__ != module or obj.__qualname__ != qualname:
            return _refused(f"resolves to {obj.__module__}.{obj.__qualname__}, defined elsewhere")
        where = Path(os.path.realpath(origin)).relative_to(self.project_root or "/")
        return Decision(True, Kind.PROJECT, f"defined in the project ({where.as_posix()})")

    def _extra_listed(self, module: str, qualname: str) -> bool:
        """An exact extra entry, or a dotted one that splits at ``module``?"""
        entry = f"{module}.{qualname}"
        if (module, qualname) in self._extra_exact:
            return True
        if entry not in self._extra_dotted:
            return False
        split = self._splits.get(entry)
        if split is None:
            split = self._splits[entry] = _split_dotted(entry)
        return split == (module, qualname)


def _split_dotted(entry: str) -> tuple[str, str]:
    """Split ``a.b.C.meth`` at the longest prefix that names an existing module.

    Found without importing (sys.modules, then the import path). When no prefix is found, the
    qualified name starts at the first capitalized part (a class, by convention), else it is the
    last part.
    """
    parts = entry.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if _module_locations(".".join(parts[:i])) is not False:
            return ".".join(parts[:i]), ".".join(parts[i:])
    for i in range(1, len(parts)):
        if parts[i][:1].isupper():
            return ".".join(parts[:i]), ".".join(parts[i:])
    return ".".join(parts[:-1]), parts[-1]


def _module_locations(name: str) -> list[str] | None | bool:
    """False when ``name`` is no module; else its package search locations (None: not a package).

    Never imports: sys.modules first, then ``PathFinder`` over the parent package's locations.
    """
    loaded = sys.modules.get(name)
    if loaded is not None:
        path = getattr(loaded, "__path__", None)
        return list(path) if path is not None else None
    parent, _, _ = name.rpartition(".")
    search = None
    if parent:
        found = _module_locations(parent)
        if not isinstance(found, list):
            return False
        search = found
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, search)
    except (ImportError, ValueError, OSError):
        return False
    if spec is None:
        return False
    locations = spec.submodule_search_locations
    return list(locations) if locations is not None else None


def _public_name(qualname: str) -> bool:
    """One public identifier, no dots: a prefix-trusted torch module's own name, never an
    attribute walk (``torch.nn.functional`` + ``torch.os.system`` resolves to ``os.system``)
    nor ``_global_forward_pre_hooks``, a process-wide registry."""
    return qualname.isidentifier() and not qualname.startswith("_")


def _torch_function_name(qualname: str) -> bool:
    """A prefix-trusted torch function by its name: public, and never a registration
    (``register_*``, ``*hook*``: it changes what every later module call runs)."""
    return (
        _public_name(qualname)
        and not qualname.startswith("register_")
        and "hook" not in qualname.lower()
    )
