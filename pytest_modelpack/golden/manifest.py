"""``manifest.json``: the typed :class:`Manifest`, read, validated and written in one place.

A manifest is untrusted input (anyone who can open a pull request can commit one), so every field
is checked for its type when read, and a manifest missing a section the gate needs (``code``,
``globals``, ``environment`` ...) is invalid: drift detection must never switch off silently
because a section went missing. :func:`parse_manifest` and :func:`manifest_bytes` are inverses.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from typing import Any

FORMAT_VERSION = 1
FORMAT_NAME = "pytest-modelpack golden"

#: A code unit (one entry of the ``code`` section): kept as the dict the fingerprinter writes,
#: validated field by field.
CodeUnit = dict[str, Any]


class InvalidManifest(ValueError):
    """A manifest field is missing or of the wrong type; ``field`` is its dotted path."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(f"field {field!r}: {why}")


class UnknownVersion(ValueError):
    def __init__(self, version: Any) -> None:
        self.version = version
        super().__init__(f"unknown format version {version!r}")


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """A file of the golden as the manifest records it."""

    file: str
    size: int
    sha256: str
    #: The pickle protocol (bundle only).
    protocol: int | None = None
    #: How many examples were recorded (examples only).
    count: int | None = None
    #: Bundle only, for big tensors: where their bytes lie in the file, ``(offset, length)``
    #: sorted and disjoint. The interpreter never reads these bytes (it maps them into storages),
    #: so they can be hashed while the gate runs; :attr:`pickle_sha256` covers every other byte
    #: and is checked before any is interpreted.
    storages: tuple[tuple[int, int], ...] | None = None
    #: sha256 of the bundle's bytes outside :attr:`storages`, in file order.
    pickle_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class GlobalEntry:
    """A global the bundle references, with its kind (project / third party / builtin ...)."""

    module: str
    qualname: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}"


@dataclasses.dataclass(frozen=True)
class CreatedBy:
    test: str | None
    device: str | None


@dataclasses.dataclass
class Manifest:
    """What a golden says about itself. Sections: :attr:`code`, :attr:`globals`,
    :attr:`environment`, :attr:`structure`; files: :attr:`bundle`, :attr:`examples`."""

    name: str
    bundle: FileEntry
    examples: FileEntry
    created_by: CreatedBy
    environment: dict[str, str | None]
    globals: list[GlobalEntry]
    code: dict[str, CodeUnit]
    structure: dict[str, str]
    #: What wrote the bundle: ``{"name": "pickle" | "torch" | "dill" | "cloudpickle",
    #: "version": ...}``. Absent in goldens of pytest-modelpack < 0.4: pickle.
    serializer: dict[str, str | None] = dataclasses.field(
        default_factory=lambda: {"name": "pickle", "version": None}
    )
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        def entry(e: FileEntry) -> dict[str, Any]:
            out: dict[str, Any] = {"file": e.file, "size": e.size, "sha256": e.sha256}
            if e.protocol is not None:
                out["protocol"] = e.protocol
            if e.count is not None:
                out["count"] = e.count
            if e.storages is not None:
                # one line, not one per number: a manifest is read in code review
                out["storages"] = _Inline([list(span) for span in e.storages])
                out["pickle_sha256"] = e.pickle_sha256
            return out

        return {
            "format": self.format,
            "format_version": self.format_version,
            "name": self.name,
            "serializer": dict(self.serializer),
            "bundle": entry(self.bundle),
            "examples": entry(self.examples),
            "created_by": {"test": self.created_by.test, "device": self.created_by.device},
            "environment": dict(self.environment),
            "globals": [
                {"global": g.name, "module": g.module, "qualname": g.qualname, "kind": g.kind}
                for g in self.globals
            ],
            "code": {k: dict(v) for k, v in self.code.items()},
            "structure": dict(self.structure),
        }

    @property
    def serializer_name(self) -> str:
        return self.serializer.get("name") or "pickle"

    @property
    def project_globals(self) -> list[tuple[str, str]]:
        """(module, qualname) of the project globals the bundle referenced at regen."""
        return [(g.module, g.qualname) for g in self.globals if g.kind == "project"]

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Validate ``data`` (parsed JSON); :class:`InvalidManifest` names the first bad field."""
        obj = _obj(data, "manifest")
        version = obj.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise UnknownVersion(version)
        created = _section(obj, "created_by")
        return cls(
            format=_typed(_need(obj, "format"), str, "format"),
            format_version=FORMAT_VERSION,
            name=_typed(_need(obj, "name"), str, "name"),
            serializer=_serializer(obj),
            bundle=_file_entry(obj, "bundle", "protocol"),
            examples=_file_entry(obj, "examples", "count"),
            created_by=CreatedBy(
                test=_optional(created.get("test"), str, "created_by.test"),
                device=_optional(created.get("device"), str, "created_by.device"),
            ),
            environment={
                key: _optional(value, str, f"environment.{key}")
                for key, value in _section(obj, "environment").items()
            },
            globals=[
                _global(item, i)
                for i, item in enumerate(_typed(_need(obj, "globals"), list, "globals"))
            ],
            code={
                key: _code_unit(unit, f"code.{key}") for key, unit in _section(obj, "code").items()
            },
            structure={
                key: _typed(value, str, f"structure.{key}")
                for key, value in _section(obj, "structure").items()
            },
        )


def parse_manifest(raw: bytes) -> Manifest:
    """Decode and validate ``manifest.json`` bytes.

    Raises :class:`ValueError` subclasses: ``json.JSONDecodeError`` / ``UnicodeDecodeError`` for
    bytes that are not JSON, :class:`UnknownVersion`, :class:`InvalidManifest`.
    """
    return Manifest.from_json(json.loads(raw, object_pairs_hook=_no_duplicate_keys))


class DuplicateKey(ValueError):
    """A key given twice in one JSON object: ``json.loads`` would keep the last one silently, so
    a reviewer reading the first would be shown another manifest than the gate reads."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key {key!r} appears twice in one object")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


#: No file is larger (the largest file size a 64-bit file system can record).
_MAX_SIZE = (1 << 63) - 1
#: The pickle protocols there are (torch.save writes protocol 2).
_PROTOCOLS = range(0, 6)


class _Inline(list):  # type: ignore[type-arg]
    """A list :func:`manifest_bytes` writes on one line."""


_CREATED_BY_TEST = re.compile(rb'"created_by": \{\s*"test": ("(?:[^"\\]|\\.)*")')


def created_by_test(head: bytes) -> str | None:
    """The test that wrote a golden, from the first bytes of its ``manifest.json`` as
    :func:`manifest_bytes` writes it (None when not found there): a hint to start hashing the
    bundle early, never trusted for anything else."""
    found = _CREATED_BY_TEST.search(head)
    if found is None:
        return None
    try:
        test = json.loads(found.group(1))
    except ValueError:
        return None
    return test if isinstance(test, str) else None


def manifest_bytes(manifest: Manifest) -> bytes:
    data = manifest.to_json()
    inline: dict[str, str] = {}
    token = secrets.token_hex(8)  # no string of a manifest holds it

    def placeholder(value: Any) -> Any:
        if isinstance(value, _Inline):
            key = f"<inline {token} {len(inline)}>"
            inline[json.dumps(key)] = json.dumps(list(value), separators=(", ", ": "))
            return key
        if isinstance(value, dict):
            return {k: placeholder(v) for k, v in value.items()}
        return value

    text = json.dumps(placeholder(data), indent=1, allow_nan=False)
    for key, compact in inline.items():
        text = text.replace(key, compact)
    return text.encode() + b"\n"


# -- field checks --------------------------------------------------------------------------------


def _serializer(obj: dict[str, Any]) -> dict[str, str | None]:
    from ..serializers import BUNDLE_NAMES, NAMES, serializer

    raw = obj.get("serializer")
    if raw is None:
        found: dict[str, str | None] = {"name": "pickle", "version": None}
    else:
        entry = _obj(raw, "serializer")
        name = _typed(_need(entry, "name"), str, "serializer.name")
        if name not in NAMES:
            raise InvalidManifest("serializer.name", f"{name!r} is not one of {', '.join(NAMES)}")
        found = {
            "name": name,
            "version": _optional(entry.get("version"), str, "serializer.version"),
        }
    bundle = obj.get("bundle")
    file = bundle.get("file") if isinstance(bundle, dict) else None
    if isinstance(file, str) and file not in BUNDLE_NAMES:
        raise InvalidManifest("bundle.file", f"{file!r} is not one of {', '.join(BUNDLE_NAMES)}")
    want = serializer(str(found["name"])).bundle
    if isinstance(file, str) and file != want:
        raise InvalidManifest(
            "bundle.file", f"{file!r}: a {found['name']} golden's bundle is {want}"
        )
    return found


_TYPE_WORDS = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _typed(value: Any, kind: type, field: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidManifest(field, f"expected {_TYPE_WORDS[kind]}, got {_describe(value)}")
    return value


def _optional(value: Any, kind: type, field: str) -> Any:
    return None if value is None else _typed(value, kind, field)


def _obj(value: Any, field: str) -> dict[str, Any]:
    return _typed(value, dict, field)  # type: ignore[no-any-return]


def _need(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise InvalidManifest(key, "missing (the gate needs it)")
    return obj[key]


def _section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A required top-level object of the manifest."""
    return _obj(_need(obj, key), key)


def _require(entry: dict[str, Any], field: str, parts: tuple[str, ...]) -> None:
    for part in parts:
        if part not in entry:
            raise InvalidManifest(f"{field}.{part}", "missing")


def _file_entry(obj: dict[str, Any], key: str, extra: str) -> FileEntry:
    entry = _section(obj, key)
    _require(entry, key, ("file", "size", "sha256"))
    size = _typed(entry["size"], int, f"{key}.size")
    if not 0 <= size <= _MAX_SIZE:
        raise InvalidManifest(f"{key}.size", f"expected a size in bytes, got {_describe(size)}")
    sha = _sha256(entry["sha256"], f"{key}.sha256")
    value = _optional(entry.get(extra), int, f"{key}.{extra}")
    if value is not None and extra == "protocol" and value not in _PROTOCOLS:
        raise InvalidManifest(f"{key}.protocol", f"expected 0 to 5, got {_describe(value)}")
    if value is not None and extra == "count" and not 0 <= value <= _MAX_SIZE:
        raise InvalidManifest(f"{key}.count", f"expected a count, got {_describe(value)}")
    storages, pickle_sha = _storages(entry, size) if key == "bundle" else (None, None)
    return FileEntry(
        file=_typed(entry["file"], str, f"{key}.file"),
        size=size,
        sha256=sha,
        storages=storages,
        pickle_sha256=pickle_sha,
        **{extra: value},
    )


def _sha256(value: Any, field: str) -> str:
    sha = _typed(value, str, field)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InvalidManifest(field, f"expected 64 hex digits, got {_describe(sha)}")
    return sha  # type: ignore[no-any-return]


def _storages(
    entry: dict[str, Any], size: int
) -> tuple[tuple[tuple[int, int], ...] | None, str | None]:
    """``bundle.storages`` and ``bundle.pickle_sha256``: both or neither; spans sorted, disjoint,
    non-empty and inside the file."""
    if "storages" not in entry and "pickle_sha256" not in entry:
        return None, None
    for part in ("storages", "pickle_sha256"):
        if part not in entry:
            raise InvalidManifest(f"bundle.{part}", "missing (storages and pickle_sha256 pair)")
    spans = []
    end = 0
    for i, span in enumerate(_typed(entry["storages"], list, "bundle.storages")):
        field = f"bundle.storages[{i}]"
        if not (isinstance(span, list) and len(span) == 2):
            raise InvalidManifest(field, f"expected [offset, length], got {_describe(span)}")
        offset, length = (_typed(v, int, field) for v in span)
        if offset < end or length <= 0 or offset + length > size:
            raise InvalidManifest(
                field,
                f"[{offset}, {length}] is not a span of the {size}-byte bundle after the last one",
            )
        end = offset + length
        spans.append((offset, length))
    return tuple(spans), _sha256(entry["pickle_sha256"], "bundle.pickle_sha256")


def _global(item: Any, index: int) -> GlobalEntry:
    field = f"globals[{index}]"
    entry = _obj(item, field)
    parts = ("module", "qualname", "kind")
    _require(entry, field, parts)
    return GlobalEntry(**{part: _typed(entry[part], str, f"{field}.{part}") for part in parts})


_UNIT_FIELDS: dict[str, tuple[type, bool]] = {
    # field: (type, required)
    "kind": (str, True),
    "module": (str, True),
    "qualname": (str, True),
    "sha256": (str, True),
    "source": (str, True),
    "file": (str, False),
    "line": (int, False),
}


def _code_unit(unit: Any, field: str) -> CodeUnit:
    entry = _obj(unit, field)
    for part, (kind, required) in _UNIT_FIELDS.items():
        if part in entry:
            (_typed if required else _optional)(entry[part], kind, f"{field}.{part}")
        elif required:
            raise InvalidManifest(f"{field}.{part}", "missing")
    return dict(entry)
