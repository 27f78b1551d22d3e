"""The one pickle interpreter: the same opcode walk scans (judges, builds nothing) and loads.

Modelled on torch's ``_weights_only_unpickler.Unpickler``: one reader for GLOBAL/STACK_GLOBAL, one
dispatch, and every global judged by the role its use gives it (:class:`Role`): referenced,
instantiated (NEWOBJ, NEWOBJ_EX, copyreg), called (REDUCE, only the table of
:mod:`pytest_modelpack.safety.calls` plus what the live model's pickle calls) or built (BUILD, only
for what this stream itself constructed). In scan mode every use is recorded and the walk goes on
over placeholder values (:mod:`pytest_modelpack.safety.values`); in load mode each use is judged
by the policy before it happens and a refusal stops the load. So what is judged is what runs.

Resources are bounded: every read is checked against the bytes present before anything is
allocated, the memo is a dict (an index is not a size), steps and materialised bytes are capped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_modelpack.safety import construct as c
from pytest_modelpack.safety import opcodes as o
from pytest_modelpack.safety.machine import Machine, Persid, Session
from pytest_modelpack.safety.sources import Source


def interpret(session: Session, src: Source, where: str, depth: int, persid: Persid) -> Any:
    """Interpret ONE pickle of ``src`` (to its STOP) in ``session``'s mode; return its value."""
    return Machine(session, src, where, depth, persid, DISPATCH).run()


DISPATCH: dict[int, Callable[[Machine, int], Any]] = {
    ord("("): o.op_mark,
    ord("."): o.op_stop,
    ord("0"): o.op_pop,
    ord("1"): o.op_pop_mark,
    ord("2"): o.op_dup,
    ord("F"): o.op_float,
    ord("I"): o._int_line(False),
    ord("J"): o._unpacked("<i"),
    ord("K"): o._unpacked("<B"),
    ord("L"): o._int_line(True),
    ord("M"): o._unpacked("<H"),
    ord("N"): o._push(None),
    ord("P"): c.op_persid,
    ord("Q"): c.op_binpersid,
    ord("R"): c.op_reduce,
    ord("S"): o.op_string,
    ord("T"): o.op_binstring,
    ord("U"): o._sized("<B", o._str2),
    ord("V"): o.op_unicode,
    ord("X"): o._sized("<I", o._text),
    ord("a"): o._appends("APPEND", 1),
    ord("b"): c.op_build,
    ord("c"): o.op_global,
    ord("d"): o.op_dict,
    ord("}"): o._container("dict", dict),
    ord("e"): o._appends("APPENDS", None),
    ord("g"): o._get(None),
    ord("h"): o._get("<B"),
    ord("i"): c.op_inst,
    ord("j"): o._get("<I"),
    ord("l"): o.op_list,
    ord("]"): o._container("list", list),
    ord("o"): c.op_obj,
    ord("p"): o._put(None),
    ord("q"): o._put("<B"),
    ord("r"): o._put("<I"),
    ord("s"): o._setitems("SETITEM", 2),
    ord("t"): o._tuple(None),
    ord(")"): o._push(()),
    ord("u"): o._setitems("SETITEMS", None),
    ord("G"): o._unpacked(">d"),
    0x80: o.op_proto,
    0x81: c.op_newobj,
    0x82: o._ext(1),
    0x83: o._ext(2),
    0x84: o._ext(4),
    0x85: o._tuple(1),
    0x86: o._tuple(2),
    0x87: o._tuple(3),
    0x88: o._push(True),
    0x89: o._push(False),
    0x8A: o.op_long1,
    0x8B: o.op_long4,
    ord("B"): o._sized("<I", o._bytes),
    ord("C"): o._sized("<B", o._bytes),
    0x8C: o._sized("<B", o._text),
    0x8D: o._sized("<Q", o._text),
    0x8E: o._sized("<Q", o._bytes),
    0x8F: o._container("set", set),
    0x90: o.op_additems,
    0x91: o.op_frozenset,
    0x92: c.op_newobj_ex,
    0x93: o.op_stack_global,
    0x94: o.op_memoize,
    0x95: o.op_frame,
    0x96: o.op_bytearray8,
    0x97: o.op_buffer,
    0x98: o.op_readonly_buffer,
}
