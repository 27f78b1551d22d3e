"""Do torch's CPU kernels fault or go wrong on a tensor whose data pointer is misaligned for it?

    python benchmarks/misaligned_ops.py                    # the op table (every CPU capability)
    python benchmarks/misaligned_ops.py --caps avx512      # one capability (default, avx2, avx512)
    python benchmarks/misaligned_ops.py --json out.json    # keep every cell's detail
    python benchmarks/misaligned_ops.py --bench            # aligned copy of a mapped range: cost
    python benchmarks/misaligned_ops.py --bench --bench-size 64M --repeat 5

How a misaligned tensor comes about: pickle (torch.save's zip records too, when read through a
mapping of the file) puts a storage's bytes at any byte offset of the file, and a loader that maps
the file and wraps ``torch.frombuffer(mapping, dtype=torch.uint8, offset=at, count=n)`` gets a
storage whose *data pointer* is ``base + at`` (the mapping's base is page aligned). Nothing in
torch refuses it: ``.view(dtype)`` only checks ``storage_offset * 1 % itemsize`` (0 here, the
storage starts at ``at``), ``torch.frombuffer(buf, dtype=torch.float32, offset=1)`` accepts an
offset that is no multiple of the itemsize, and the unpickler's route
``TypedStorage(wrap_storage=view.untyped_storage(), dtype=...)`` then
``torch._utils._rebuild_tensor_v2(typed, 0, size, stride, False, {})`` builds the tensor over it.
(What refuses is ``frombuffer(buf, uint8)[1:17].view(torch.float32)``: storage offset 1.)

Every cell of the table is one op on one dtype@offset, run in a child forked from a worker that has
imported torch and run nothing (so a SIGBUS/SIGSEGV kills only that child and is recorded). The
child builds an aligned tensor (``ref``, torch's 64-byte-aligned allocator) and a misaligned one
holding the same bytes (``mis``), runs the op on a clone of ``ref`` then on ``mis``, and compares
the results bit for bit. Two constructions of ``mis`` (``--constructs``):

* ``view``:    anonymous mmap, ``frombuffer(mm, uint8, offset=k, count=n).view(dtype).view(shape)``
* ``rebuild``: a file mapped ``ACCESS_COPY`` (as pytest-modelpack maps goldens),
               ``frombuffer(...)`` -> ``untyped_storage()`` -> ``TypedStorage`` ->
               ``_rebuild_tensor_v2`` (the unpickler's path)

and each CPU capability (``ATEN_CPU_CAPABILITY`` = default / avx2 / avx512: different vectorized
kernels) in its own worker. Cell codes:

    .   same bits as on the aligned copy          ~   different bits (max |diff| in the details)
    -   raises on the aligned copy too (n/a)      E   raises only on the misaligned tensor
    B   SIGBUS     S   SIGSEGV     K   other signal     T   timeout (60 s)

Columns marked ``*`` are element-aligned controls (offset 0, or a multiple of the itemsize that is
not 64-byte aligned); int8@1 and bool@1 cannot be misaligned for their dtype (itemsize 1).

``--bench``: the cost of an aligned copy of a misaligned 256 MiB range of a mapped file, each method
in a fresh process (wall time of the copy, and peak RSS growth: VmHWM reset through
/proc/self/clear_refs, minus VmRSS before), page cache warm, nothing dropped:

* ``mmap-clone``:        ``torch.frombuffer(mapping, uint8, offset, count).clone()`` (reads the
                         mapping: its file pages join the process RSS)
* ``mmap-chunk-dontneed``: the same copy 16 MiB at a time, ``madvise(MADV_DONTNEED)`` after each
* ``preadv``:            ``os.preadv`` into ``torch.empty(n, dtype=torch.uint8)`` through
                         ``memoryview(t.numpy())`` (the mapping is never touched)
* ``preadv-mapped``:     the same with the file also mapped (untouched), as a loader would have it
* ``readinto``:          ``f.readinto`` (unbuffered file) into the same kind of buffer
* ``preadv-ctypes``:     the buffer through ctypes, no numpy: ``(c_ubyte * n).from_address(ptr)``
* ``mmap-view-touch``:   no copy at all, every page of the view read once (``view.max()``): what
                         mapping instead of copying costs in RSS once the tensor is used
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

R, C = 256, 160  # every test tensor is (R, C): 40960 elements, past the 32768 parallel grain size
CAPS = ("default", "avx2", "avx512")
TIMEOUT = 60.0

# dtype name -> offsets to test (byte offsets of the data pointer from a page boundary)
COLUMNS: list[tuple[str, int]] = [
    ("float32", 0),
    ("float32", 4),
    ("float32", 16),  # controls
    ("float32", 1),
    ("float32", 2),
    ("float32", 3),
    ("float64", 8),  # control
    ("float64", 1),
    ("float64", 2),
    ("float64", 4),
    ("float16", 1),
    ("float16", 3),
    ("bfloat16", 1),
    ("bfloat16", 3),
    ("int64", 1),
    ("int64", 2),
    ("int64", 4),
    ("int32", 1),
    ("int32", 2),
    ("int32", 3),
    ("int8", 1),
    ("bool", 1),
    ("complex64", 1),
    ("complex64", 4),
    ("complex128", 4),
    ("complex128", 8),
]
ALIGN = {
    "float32": 4,
    "float64": 8,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "bool": 1,
    "complex64": 8,
    "complex128": 16,
}
SHORT = {
    "float32": "f32",
    "float64": "f64",
    "float16": "f16",
    "bfloat16": "bf16",
    "int64": "i64",
    "int32": "i32",
    "int8": "i8",
    "bool": "b",
    "complex64": "c64",
    "complex128": "c128",
}


# ----------------------------------------------------------------------------------------------
# the ops


class Aux:
    """Aligned companions of x (same dtype unless said), made after x from a fixed seed."""

    def __init__(self, torch: Any, dtype: Any) -> None:
        g = torch.Generator().manual_seed(1)
        self.dtype = dtype
        self.like = lambda *shape: _random(torch, dtype, shape, g)
        self.idx = torch.randint(0, R, (300,), generator=g)
        self.idx_c = torch.randint(0, C, (40,), generator=g)
        self.offsets = torch.tensor([0, 10, 100, 200])
        self.gather_idx = torch.randint(0, C, (R, 8), generator=g)
        self.mask = torch.rand(R, C, generator=g) > 0.5
        self.table = torch.randn(256, 8, generator=g)
        self.same = self.like(R, C)
        self.inp = self.like(8, C)
        self.w = self.like(64, C)
        self.b = self.like(64)
        self.left = self.like(8, R)
        self.v = self.like(C)
        self.flat = self.like(R * C)
        self.b3 = self.like(4, C, 8)
        self.conv1_w = self.like(8, 64, 3)  # x.view(4, 64, 160) as input
        self.conv1_in = self.like(2, 16, 50)  # x.view(256, 16, 10) as weight
        self.conv2_w = self.like(8, 16, 3, 3)  # x.view(4, 16, 16, 40) as input
        self.conv2_in = self.like(2, 10, 12, 12)  # x.view(256, 10, 4, 4) as weight
        self.ln_in = self.like(32, C)
        self.target = torch.randint(0, C, (R,), generator=g)


def _random(torch: Any, dtype: Any, shape: tuple[int, ...], g: Any) -> Any:
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(
            shape, generator=g, dtype=dtype if dtype.is_complex else torch.float64
        ).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.int8:
        return torch.randint(0, 100, shape, generator=g, dtype=torch.int8)
    return torch.randint(0, 200, shape, generator=g, dtype=dtype)  # usable as indices into R rows


def _ops() -> dict[str, Callable[[Any, Aux], Any]]:
    import torch
    import torch.nn.functional as F

    def lstm(x: Any, a: Aux) -> Any:
        torch.manual_seed(3)  # the other parameters: the same on both sides
        m = torch.nn.LSTM(C, 64, batch_first=True).to(x.dtype)
        params = dict(m.named_parameters())
        params["weight_ih_l0"] = x  # (4*64, 160)
        out, _ = torch.func.functional_call(m, params, (a.inp.view(1, 8, C),))
        return out

    def save_roundtrip(x: Any, a: Aux) -> Any:
        import io

        b = io.BytesIO()
        torch.save(x, b)
        b.seek(0)
        return torch.load(b)

    def pickle_roundtrip(x: Any, a: Aux) -> Any:
        import pickle

        return pickle.loads(pickle.dumps(x))

    def np_bytes(x: Any, a: Aux) -> Any:
        return (
            x.view(torch.uint8).numpy().tobytes()
            if x.dtype == torch.bfloat16
            else x.numpy().tobytes()
        )

    def np_sum(x: Any, a: Aux) -> Any:
        return x.numpy().sum(axis=1)

    def np_copy(x: Any, a: Aux) -> Any:
        return torch.from_numpy(x.numpy().copy())

    def inplace(fn: Callable[[Any], Any]) -> Callable[[Any, Aux], Any]:
        def run(x: Any, a: Aux) -> Any:
            fn(x)
            return x

        return run

    def x_as_bool(x: Any) -> Any:
        return x if x.dtype == torch.bool else x.real > 0 if x.is_complex() else x > 0

    return {
        # embeddings / indexing (x as table unless said)
        "embedding(weight)": lambda x, a: F.embedding(a.idx, x),
        "embedding(indices)": lambda x, a: F.embedding(x, a.table),
        "embedding_bag sum": lambda x, a: F.embedding_bag(a.idx, x, a.offsets, mode="sum"),
        "embedding_bag mean": lambda x, a: F.embedding_bag(a.idx, x, a.offsets, mode="mean"),
        "index_select(0)": lambda x, a: x.index_select(0, a.idx),
        "index_select(1)": lambda x, a: x.index_select(1, a.idx_c),
        "index_select(x as idx)": lambda x, a: a.table.index_select(0, x.reshape(-1)),
        "x[idx] (advanced)": lambda x, a: x[a.idx],
        "x[mask]": lambda x, a: x[a.mask],
        "gather(1)": lambda x, a: x.gather(1, a.gather_idx),
        "take": lambda x, a: x.take(a.idx),
        "index_add_ into x": inplace(lambda x: x.index_add_(0, torch.arange(8), x[8:16].clone())),
        # linear algebra
        "linear(weight)": lambda x, a: F.linear(a.inp, x),
        "linear(input)": lambda x, a: F.linear(x, a.w, a.b),
        "linear(bias)": lambda x, a: F.linear(a.inp, a.w, x.reshape(-1)[:64]),
        "matmul x@W.T": lambda x, a: x @ a.w.T,
        "matmul W@x": lambda x, a: a.left @ x,
        "matmul x@x.T": lambda x, a: x @ x.T,
        "matmul x.T@W": lambda x, a: x.T @ a.left.T,
        "mv": lambda x, a: x @ a.v,
        "dot": lambda x, a: torch.dot(x.reshape(-1), a.flat),
        "bmm": lambda x, a: torch.bmm(x.view(4, 64, C), a.b3),
        "addmm(bias=x)": lambda x, a: torch.addmm(x.reshape(-1)[:64], a.inp, a.w.T),
        "einsum": lambda x, a: torch.einsum("ij,kj->ik", x, a.inp),
        "sdpa": lambda x, a: F.scaled_dot_product_attention(
            x.view(1, 4, 64, C), x.view(1, 4, 64, C), x.view(1, 4, 64, C)
        ),
        "lstm(weight_ih)": lstm,
        "cdist": lambda x, a: torch.cdist(x, a.inp),
        "fft": lambda x, a: torch.fft.fft(x, dim=1),
        # reductions
        "sum": lambda x, a: x.sum(),
        "sum(dim=1)": lambda x, a: x.sum(dim=1),
        "sum(x.T, dim=1)": lambda x, a: x.T.sum(dim=1),
        "sum(dtype=f64)": lambda x, a: x.sum(dtype=torch.float64),
        "mean": lambda x, a: x.mean(),
        "mean(dim=0)": lambda x, a: x.mean(dim=0),
        "prod(dim=1)": lambda x, a: x.prod(dim=1),
        "std": lambda x, a: x.std(),
        "var(dim=1)": lambda x, a: x.var(dim=1),
        "norm": lambda x, a: x.norm(),
        "max": lambda x, a: x.max(),
        "min(dim=1)": lambda x, a: x.min(dim=1),
        "amax(dim=0)": lambda x, a: x.amax(dim=0),
        "argmax": lambda x, a: x.argmax(),
        "argmax(dim=1)": lambda x, a: x.argmax(dim=1),
        "argmin(dim=0)": lambda x, a: x.argmin(dim=0),
        "median(dim=1)": lambda x, a: x.median(dim=1),
        "any": lambda x, a: x.any(),
        "all(dim=1)": lambda x, a: x.all(dim=1),
        "count_nonzero": lambda x, a: torch.count_nonzero(x),
        "cumsum(dim=1)": lambda x, a: x.cumsum(dim=1),
        "cumsum(dim=0)": lambda x, a: x.cumsum(dim=0),
        "cumprod(dim=1)": lambda x, a: x.cumprod(dim=1),
        "bincount": lambda x, a: torch.bincount(x.reshape(-1)),
        "histc": lambda x, a: torch.histc(x, bins=10),
        # elementwise
        "add x+x": lambda x, a: x + x,
        "add x+aligned": lambda x, a: x + a.same,
        "sub": lambda x, a: x - a.same,
        "mul x*x": lambda x, a: x * x,
        "mul x*2": lambda x, a: x * 2,
        "div": lambda x, a: x / 3,
        "abs": lambda x, a: x.abs(),
        "neg": lambda x, a: -x,
        "exp": lambda x, a: x.exp(),
        "sqrt(abs)": lambda x, a: x.abs().sqrt(),
        "clamp": lambda x, a: x.clamp(-1, 1),
        "relu": lambda x, a: F.relu(x),
        "gelu": lambda x, a: F.gelu(x),
        "gelu tanh": lambda x, a: F.gelu(x, approximate="tanh"),
        "sigmoid": lambda x, a: x.sigmoid(),
        "tanh": lambda x, a: x.tanh(),
        "bitwise_and": lambda x, a: x & a.same,
        "logical_not": lambda x, a: x.logical_not(),
        "isnan": lambda x, a: x.isnan(),
        "eq": lambda x, a: x == a.same,
        "lt": lambda x, a: x < a.same,
        "where(c, x, y)": lambda x, a: torch.where(a.mask, x, a.same),
        "where(x as cond)": lambda x, a: torch.where(
            x_as_bool(x), a.table.new_ones(()), a.table.new_zeros(())
        ),
        "masked_fill": lambda x, a: x.masked_fill(a.mask, 0),
        "add_ (in place)": inplace(lambda x: x.add_(1)),
        "mul_ (in place)": inplace(lambda x: x.mul_(2)),
        "masked_fill_ (in place)": inplace(lambda x: x.masked_fill_(a_mask(x), 0)),
        "fill_": inplace(lambda x: x.fill_(1)),
        "zero_": inplace(lambda x: x.zero_()),
        "copy_ into x": inplace(lambda x: x.copy_(x.flip(0).contiguous())),
        # copies / conversions
        "clone": lambda x, a: x.clone(),
        "contiguous() (no-op)": lambda x, a: x.contiguous(),
        "x.T.contiguous()": lambda x, a: x.T.contiguous(),
        "x[:, ::2].contiguous()": lambda x, a: x[:, ::2].contiguous(),
        "empty_like().copy_(x)": lambda x, a: torch.empty_like(x).copy_(x),
        "to(float64)": lambda x, a: x.to(torch.float64),
        "to(float32)": lambda x, a: x.to(torch.float32),
        "to(float16)": lambda x, a: x.to(torch.float16),
        "to(bfloat16)": lambda x, a: x.to(torch.bfloat16),
        "to(int64)": lambda x, a: x.to(torch.int64),
        "to(bool)": lambda x, a: x.to(torch.bool),
        "to(complex64)": lambda x, a: x.to(torch.complex64),
        "cat dim0": lambda x, a: torch.cat([x, a.same]),
        "cat dim1": lambda x, a: torch.cat([a.same, x], dim=1),
        "stack": lambda x, a: torch.stack([x, x]),
        "flip": lambda x, a: x.flip(1),
        "roll": lambda x, a: x.roll(3, 1),
        "repeat": lambda x, a: x.repeat(2, 1),
        "sort(dim=1)": lambda x, a: x.sort(dim=1),
        "sort(stable, dim=0)": lambda x, a: x.sort(dim=0, stable=True),
        "argsort": lambda x, a: x.argsort(dim=1),
        "topk": lambda x, a: x.topk(5, dim=1),
        "unique": lambda x, a: torch.unique(x),
        "nonzero": lambda x, a: x.nonzero(),
        "equal(x, aligned)": lambda x, a: torch.equal(x, a.ref),
        "allclose(x, aligned)": lambda x, a: torch.allclose(x, a.ref),
        "isclose": lambda x, a: torch.isclose(x, a.ref),
        "assert_close": lambda x, a: torch.testing.assert_close(x, a.ref),
        "tolist": lambda x, a: x.tolist(),
        "item": lambda x, a: x[3, 5].item(),
        "numpy().tobytes()": np_bytes,
        "numpy().sum(1)": np_sum,
        "numpy().copy()": np_copy,
        "torch.save/load": save_roundtrip,
        "pickle dumps/loads": pickle_roundtrip,
        # nn
        "softmax": lambda x, a: F.softmax(x, dim=-1),
        "log_softmax": lambda x, a: F.log_softmax(x, dim=-1),
        "cross_entropy(logits)": lambda x, a: F.cross_entropy(x, a.target),
        "mse_loss": lambda x, a: F.mse_loss(x, a.same),
        "layer_norm(input)": lambda x, a: F.layer_norm(x, (C,)),
        "layer_norm(w, b)": lambda x, a: F.layer_norm(a.ln_in, (C,), x[0], x[1]),
        "rms_norm": lambda x, a: F.rms_norm(x, (C,)),
        "batch_norm(input)": lambda x, a: F.batch_norm(x, None, None, training=True),
        "batch_norm(stats)": lambda x, a: F.batch_norm(a.ln_in, x[0], x[1].abs() + 1, x[2], x[3]),
        "group_norm": lambda x, a: F.group_norm(x.view(4, 64, C), 8),
        "conv1d(input)": lambda x, a: F.conv1d(x.view(4, 64, C), a.conv1_w),
        "conv1d(weight)": lambda x, a: F.conv1d(a.conv1_in, x.view(256, 16, 10)),
        "conv2d(input)": lambda x, a: F.conv2d(x.view(4, 16, 16, 40), a.conv2_w),
        "conv2d(weight)": lambda x, a: F.conv2d(a.conv2_in, x.view(256, 10, 4, 4)),
        "max_pool2d": lambda x, a: F.max_pool2d(x.view(4, 16, 16, 40), 2),
        "avg_pool2d": lambda x, a: F.avg_pool2d(x.view(4, 16, 16, 40), 2),
        "interpolate": lambda x, a: F.interpolate(
            x.view(4, 16, 16, 40), scale_factor=2, mode="bilinear"
        ),
        "dropout(eval)": lambda x, a: F.dropout(x, 0.5, training=False),
    }


def a_mask(x: Any) -> Any:
    import torch

    return torch.arange(x.numel()).view(x.shape) % 3 == 0


# ----------------------------------------------------------------------------------------------
# building the tensors (in the child)


def build(dtype_name: str, offset: int, construct: str, tmpdir: str) -> tuple[Any, Any, Any]:
    import torch

    dtype = getattr(torch, dtype_name)
    ref = _random(torch, dtype, (R, C), torch.Generator().manual_seed(0))
    raw = (
        ref.view(torch.uint8).reshape(-1).numpy().tobytes()
        if ref.dtype != torch.bool
        else ref.numpy().tobytes()
    )
    nbytes = len(raw)
    size = offset + nbytes + 4096
    if construct == "view":
        mm = mmap.mmap(-1, size)
        mm[offset : offset + nbytes] = raw
        mis = (
            torch.frombuffer(mm, dtype=torch.uint8, offset=offset, count=nbytes)
            .view(dtype)
            .view(R, C)
        )
    elif construct == "rebuild":
        path = os.path.join(tmpdir, f"{os.getpid()}.bin")
        with open(path, "wb") as f:
            f.write(b"\x55" * offset + raw + b"\x55" * 4096)
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        os.unlink(path)
        view = torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=offset)
        typed = torch.storage.TypedStorage(
            wrap_storage=view.untyped_storage(), dtype=dtype, _internal=True
        )
        mis = torch._utils._rebuild_tensor_v2(typed, 0, (R, C), (C, 1), False, {})
    else:
        raise ValueError(construct)
    assert mis.data_ptr() % 64 == offset % 64, (mis.data_ptr() % 64, offset)
    got = (
        mis.view(torch.uint8).reshape(-1).numpy().tobytes()
        if dtype != torch.bool
        else mis.numpy().tobytes()
    )
    assert got == raw
    return ref, mis, mm


def _flatten(r: Any) -> list[Any]:
    import torch

    if isinstance(r, torch.Tensor):
        return [r]
    if isinstance(r, (tuple, list)) and r and all(isinstance(v, torch.Tensor) for v in r):
        return list(r)
    if hasattr(r, "values") and hasattr(r, "indices"):
        return [r.values, r.indices]
    return [r]


def _same(a: Any, b: Any) -> tuple[bool, str]:
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False, f"dtype/shape {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        ab = a.detach().contiguous().reshape(-1)
        bb = b.detach().contiguous().reshape(-1)
        if ab.dtype != torch.bool:
            ab, bb = ab.view(torch.uint8), bb.view(torch.uint8)
        if torch.equal(ab, bb):
            return True, ""
        try:
            d = (a.detach().to(torch.complex128) - b.detach().to(torch.complex128)).abs()
            d = d[~d.isnan()]
            mx = d.max().item() if d.numel() else float("nan")
            n = int((a.detach().to(torch.complex128) != b.detach().to(torch.complex128)).sum())
            return False, f"{n}/{a.numel()} elements differ, max |diff| {mx:.3g}"
        except Exception as e:  # noqa: BLE001
            return False, f"bits differ ({e})"
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return (
            a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        ), "ndarray differs"
    try:
        if a == b:
            return True, ""
    except Exception:  # noqa: BLE001
        pass
    if repr(a) == repr(b):
        return True, ""
    return False, f"{str(a)[:60]} vs {str(b)[:60]}"


def run_cell(
    op_name: str, dtype_name: str, offset: int, construct: str, tmpdir: str
) -> dict[str, Any]:
    """In the forked child: the op on the aligned copy, then on the misaligned tensor."""
    import torch

    ref, mis, _mm = build(dtype_name, offset, construct, tmpdir)
    aux = Aux(torch, ref.dtype)
    aux.ref = ref
    op = _ops()[op_name]
    try:
        want = op(ref.clone(), aux)
    except Exception as e:  # noqa: BLE001
        want_exc = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    else:
        want_exc = None
    try:
        got = op(mis, aux)
    except Exception as e:  # noqa: BLE001
        got_exc = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    else:
        got_exc = None
    if want_exc is not None and got_exc is not None:
        return {"code": "-", "detail": want_exc}
    if got_exc is not None:
        return {"code": "E", "detail": got_exc}
    if want_exc is not None:
        return {"code": "~", "detail": f"aligned raised ({want_exc}), misaligned did not"}
    wl, gl = _flatten(want), _flatten(got)
    if len(wl) != len(gl):
        return {"code": "~", "detail": f"{len(wl)} results vs {len(gl)}"}
    for w, g in zip(wl, gl, strict=True):
        ok, why = _same(w, g)
        if not ok:
            return {"code": "~", "detail": why}
    return {"code": ".", "detail": ""}


def fork_cell(
    op_name: str, dtype_name: str, offset: int, construct: str, tmpdir: str
) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            res = run_cell(op_name, dtype_name, offset, construct, tmpdir)
        except BaseException as e:  # noqa: BLE001  (harness error: building failed)
            res = {"code": "H", "detail": f"harness: {type(e).__name__}: {e}"}
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"code": "T", "detail": "timeout"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        code = {signal.SIGBUS: "B", signal.SIGSEGV: "S"}.get(sig, "K")
        return {"code": code, "detail": f"killed by {signal.Signals(sig).name}"}
    if not chunks:
        return {
            "code": "H",
            "detail": f"no result, exit status {os.waitstatus_to_exitcode(status)}",
        }
    return json.loads(b"".join(chunks))


def worker(
    construct_list: list[str],
    only: list[str] | None,
    columns: list[tuple[str, int]],
    self_test: bool,
) -> None:
    """One capability (set in the environment before torch was imported); JSON lines on stdout."""
    import warnings

    import torch  # noqa: F401  imported once, nothing run: the children fork from here

    warnings.simplefilter("ignore")
    cap = torch.backends.cpu.get_cpu_capability()
    tmpdir = tempfile.mkdtemp(prefix="misaligned-")
    if self_test:  # the harness sees a crash as a crash
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGBUS)
            os._exit(0)
        _, st = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGBUS
    ops = only or list(_ops())
    for construct in construct_list:
        for dt, off in columns:
            for op in ops:
                res = fork_cell(op, dt, off, construct, tmpdir)
                res.update(cap=cap, construct=construct, dtype=dt, offset=off, op=op)
                print(json.dumps(res), flush=True)
    os.rmdir(tmpdir)


# ----------------------------------------------------------------------------------------------
# the driver: one worker per capability, the table


def col_name(dt: str, off: int) -> str:
    ctrl = off % ALIGN[dt] == 0 and ALIGN[dt] > 1
    return f"{SHORT[dt]}@{off}{'*' if ctrl else ''}"


RANK = {".": 0, "-": 1, "~": 2, "E": 3, "H": 4, "T": 5, "K": 6, "S": 7, "B": 8}


def table(results: list[dict[str, Any]]) -> None:
    ops = list(dict.fromkeys(r["op"] for r in results))
    variants = sorted({(r["cap"], r["construct"]) for r in results})
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["op"], r["dtype"], r["offset"]), []).append(r)
    cols = list(dict.fromkeys((r["dtype"], r["offset"]) for r in results))
    width = max(len(o) for o in ops)
    names = [col_name(*c) for c in cols]
    print(
        f"variants: {', '.join(f'{c}/{k}' for c, k in variants)}; a cell shows the worst of them, "
        "lower case where the variants disagree"
    )
    print(f"{'':{width}} " + " ".join(f"{n:>{max(len(n), 1)}}" for n in names))
    bad: list[dict[str, Any]] = []
    for op in ops:
        row = []
        for (dt, off), n in zip(cols, names, strict=True):
            rs = cells.get((op, dt, off), [])
            codes = {r["code"] for r in rs}
            worst = max(codes, key=RANK.get) if codes else "?"
            ch = worst if len(codes) <= 1 else worst.lower() if worst.isalpha() else worst
            row.append(f"{ch:>{len(n)}}")
            bad.extend(r for r in rs if r["code"] not in ".-")
        print(f"{op:{width}} " + " ".join(row))
    print()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["code"]] = counts.get(r["code"], 0) + 1
    print(
        "cells:",
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: RANK[kv[0]])),
    )
    if bad:
        print("\nevery cell that is not '.' or '-':")
        seen: dict[tuple[str, str, str], list[str]] = {}
        for r in bad:
            key = (r["op"], r["code"], r["detail"])
            seen.setdefault(key, []).append(
                f"{col_name(r['dtype'], r['offset'])}[{r['cap']}/{r['construct']}]"
            )
        for (op, code, detail), where in seen.items():
            print(f"  {code} {op}: {detail}\n      at {' '.join(where)}")


def main_ops(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    procs = []
    for cap in args.caps:  # all at once, each its own process (the capability is fixed at import)
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        cmd = [sys.executable, __file__, "--worker", "--constructs", *args.constructs]
        if args.ops:
            cmd += ["--ops", *args.ops]
        if args.columns:
            cmd += ["--columns", *args.columns]
        out = tempfile.TemporaryFile("w+")
        procs.append((cap, out, subprocess.Popen(cmd, env=env, stdout=out, text=True)))
    results: list[dict[str, Any]] = []
    for cap, out, p in procs:
        if p.wait() != 0:
            print(f"worker {cap} exited {p.returncode}", file=sys.stderr)
        out.seek(0)
        results.extend(json.loads(line) for line in out)
    import torch

    print(
        f"torch {torch.__version__}, {os.uname().machine}, {_cpu_model()}, "
        f"{len(results)} cells in {time.monotonic() - t0:.0f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=0)
    table(results)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


# ----------------------------------------------------------------------------------------------
# --bench: aligned copy of a misaligned range of a mapped file


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def pread_into(fd: int, t: Any, offset: int) -> None:
    """Fill the uint8 tensor ``t`` (contiguous, CPU) with bytes [offset, offset + numel) of fd."""
    view = memoryview(t.numpy())  # writable, shares t's memory (torch.empty: 64-byte aligned)
    done, n = 0, t.numel()
    while done < n:
        got = os.preadv(fd, [view[done:]], offset + done)  # one call reads at most 0x7ffff000
        if got == 0:
            raise EOFError(f"file ends {n - done} bytes short")
        done += got


def bench_child(method: str, path: str, at: int, n: int) -> None:
    import ctypes

    import torch

    fd = os.open(path, os.O_RDONLY)
    f = os.fdopen(fd, "rb", buffering=0, closefd=False)
    mm = None
    if method.startswith("mmap") or method == "preadv-mapped":
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    before = _status()
    with open("/proc/self/clear_refs", "w") as cr:  # reset VmHWM to the current RSS
        cr.write("5")
    t0 = time.perf_counter()
    if method == "mmap-clone":
        t = torch.frombuffer(mm, dtype=torch.uint8, offset=at, count=n).clone()
    elif method == "mmap-chunk-dontneed":
        t = torch.empty(n, dtype=torch.uint8)
        chunk = 16 << 20
        page = mmap.PAGESIZE
        for i in range(0, n, chunk):
            j = min(n, i + chunk)
            t[i:j].copy_(torch.frombuffer(mm, dtype=torch.uint8, offset=at + i, count=j - i))
            lo = (at + i) // page * page
            mm.madvise(mmap.MADV_DONTNEED, lo, at + j - lo)
    elif method in ("preadv", "preadv-mapped"):
        t = torch.empty(n, dtype=torch.uint8)
        pread_into(fd, t, at)
    elif method == "readinto":
        t = torch.empty(n, dtype=torch.uint8)
        view = memoryview(t.numpy())
        f.seek(at)
        done = 0
        while done < n:
            got = f.readinto(view[done:])
            if not got:
                raise EOFError
            done += got
    elif method == "preadv-ctypes":
        t = torch.empty(n, dtype=torch.uint8)
        view = memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")
        done = 0
        while done < n:
            done += os.preadv(fd, [view[done:]], at + done)
    elif method == "mmap-view-touch":
        t = torch.frombuffer(mm, dtype=torch.uint8, offset=at, count=n)
        t.max()  # reads every page; (sum() would make an int64 copy: 8 bytes a byte)
    else:
        raise ValueError(method)
    wall = time.perf_counter() - t0
    after = _status()
    crc = zlib.crc32(memoryview(t.numpy()))
    print(
        json.dumps(
            {
                "method": method,
                "wall": wall,
                "ptr_mod64": t.data_ptr() % 64,
                "peak_growth": after["VmHWM"] - before["VmRSS"],
                "anon_growth": after["RssAnon"] - before["RssAnon"],
                "file_growth": after["RssFile"] - before["RssFile"],
                "crc": crc,
            }
        )
    )


METHODS = (
    "mmap-clone",
    "mmap-chunk-dontneed",
    "preadv",
    "preadv-mapped",
    "readinto",
    "preadv-ctypes",
    "mmap-view-touch",
)


def main_bench(args: argparse.Namespace) -> None:
    n = _size(args.bench_size)
    at = (1 << 20) + 3  # misaligned for every dtype wider than a byte
    with tempfile.TemporaryDirectory(prefix="misaligned-bench-") as d:
        path = os.path.join(d, "golden.bin")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range((at + n) // len(block) + 2):
                f.write(block)
        with open(path, "rb") as f:  # page cache warm
            while f.read(16 << 20):
                pass
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for _ in range(args.repeat):
            for m in METHODS:
                out = subprocess.run(
                    [sys.executable, __file__, "--bench-child", m, path, str(at), str(n)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[m].append(json.loads(out.strip().splitlines()[-1]))
    crcs = {r["crc"] for rs in runs.values() for r in rs}
    import torch

    print(
        f"torch {torch.__version__}, {_cpu_model()}, range of {n / 2**20:.0f} MiB "
        f"at file offset {at} (mod 64 = {at % 64}), page cache warm, "
        f"median of {args.repeat} fresh processes each"
    )
    print(f"all methods gave the same bytes: {len(crcs) == 1}")
    print(
        f"{'method':22} {'wall ms':>8} {'GiB/s':>6} {'peak RSS +MiB':>14} {'anon +MiB':>10} "
        f"{'file +MiB':>10} {'ptr%64':>6}"
    )
    for m, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        peak = statistics.median(r["peak_growth"] for r in rs) / 2**20
        anon = statistics.median(r["anon_growth"] for r in rs) / 2**20
        file = statistics.median(r["file_growth"] for r in rs) / 2**20
        print(
            f"{m:22} {wall * 1e3:8.1f} {n / wall / 2**30:6.2f} {peak:14.1f} {anon:10.1f} "
            f"{file:10.1f} {rs[0]['ptr_mod64']:>6}"
        )


def _columns(names: list[str] | None) -> list[tuple[str, int]]:
    if not names:
        return COLUMNS
    out = []
    for n in names:
        dt, _, off = n.partition("@")
        out.append((dt, int(off)))
    return out


def _size(s: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--caps", nargs="+", default=list(CAPS), choices=CAPS)
    p.add_argument(
        "--constructs", nargs="+", default=["view", "rebuild"], choices=["view", "rebuild"]
    )
    p.add_argument("--columns", nargs="+", help="only these dtype@offset columns, e.g. float32@1")
    p.add_argument("--ops", nargs="+", help="only these ops (names as in the table)")
    p.add_argument("--json", help="write every cell's result here")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--bench-size", default="256M")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bench-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.constructs, args.ops, _columns(args.columns), self_test=True)
    elif args.bench_child:
        m, path, at, n = args.bench_child
        bench_child(m, path, int(at), int(n))
    elif args.bench:
        main_bench(args)
    else:
        main_ops(args)


if __name__ == "__main__":
    main()
