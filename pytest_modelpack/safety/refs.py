"""What the pickle interpreter reports: globals with the role each use gives them.

Pure data, no torch, no pickle machinery: imported by the interpreter, the policy and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

#: ``torch.serialization.MAGIC_NUMBER``: the first pickle of a legacy ``torch.save`` stream.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Bytes per element of each legacy ``torch.<T>Storage`` (torch's _element_size), known without
#: torch; an untyped storage's are single bytes. The quantized ones: a quantize_dynamic
#: Linear's packed params pickle one nested.
STORAGE_ELEMENT_SIZE = {
    **dict.fromkeys(("Double", "Long", "ComplexFloat"), 8),
    **dict.fromkeys(("Float", "Int", "QInt32"), 4),
    **dict.fromkeys(("Half", "BFloat16", "Short"), 2),
    **dict.fromkeys(("Char", "Byte", "Bool", "QInt8", "QUInt8", "QUInt4x2", "QUInt2x4"), 1),
    "ComplexDouble": 16,
}


class ScanError(Exception):
    """The stream cannot be interpreted: empty, truncated, not a pickle, or malformed."""


class Role(str, Enum):
    """How a pickle uses a global; trust is given per (global, role)."""

    REFERENCE = "reference"  # imported and pushed (kept as a value: a dtype, a class, a function)
    NEWOBJ = "instantiated"  # cls.__new__(cls, ...) via NEWOBJ(_EX), copyreg, INST/OBJ without args
    REDUCE = "called"  # func(*args) via REDUCE (or INST/OBJ with arguments)
    BUILD = "built"  # target of BUILD: __setstate__ or __dict__ update of what it produced

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class GlobalRef:
    """One use of a global by a pickle stream.

    ``module``/``qualname`` are the names the unpickler looks up (after Python 2 name mapping for
    protocols 0-2); ``role`` how it is used; ``where`` which stream (``"top level"``, ``"nested
    storage (torch.storage._load_from_bytes) at byte 87"``, ``"zip member archive/data.pkl"``)
    and ``offset`` the opcode's byte offset in it. ``problem`` is set when the use is refused
    whatever the policy says (arguments a table callable does not accept, a loader the
    interpreter cannot follow). ``shape`` is the call shape of a REDUCE (argument kinds).
    """

    module: str
    qualname: str
    where: str = "top level"
    offset: int = 0
    problem: str | None = None
    role: Role = Role.REFERENCE
    shape: str | None = None

    @property
    def name(self) -> str:
        """``module.qualname``."""
        return f"{self.module}.{self.qualname}"


@dataclass(frozen=True)
class BytesRef:
    """A bytes value of the stream, by position: ``length`` bytes at ``offset``, never read."""

    offset: int
    length: int
