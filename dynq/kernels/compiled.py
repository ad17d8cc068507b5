"""The k-quant scale searches of :mod:`dynq.kernels.search`, compiled for the CPU with numba.

(With them the two float32 building blocks they lean on, :func:`seq_sum` and :func:`sqrtf`,
the legacy types' single-pass quantizers, ``quantize_row_q{8_0,4_0,5_0,4_1,5_1}_ref``, and
the build report's error sums.)
In torch a search is a dozen passes over a chunk per candidate scale; here it is ggml's own loop,
group by group, compiled to machine code (numba's ``njit``), with the group's values in cache
and every sum in a register. The arithmetic is the C's, operation for operation (float32
throughout: every constant is a ``float32``, ints are converted before they meet a float; numba
compiles without fast-math, so no fused multiply-add; ``nearest_int`` is ggml's bit trick), so
the bytes are the same as the torch path's and ggml's.

The functions release the GIL (``nogil``): :func:`dynq.kernels.quantize` runs chunks in
parallel threads. They are compiled on first use and cached beside this file (``cache=True``).
``DYNQ_COMPILED=0`` turns them off (the torch path runs).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "asym_ref",
    "error_sums",
    "make_q3_quants",
    "make_qkx_quants",
    "make_qp_quants",
    "make_qx_quants",
    "q8_0_ref",
    "requant",
    "seq_sum",
    "sqrtf",
    "sym_ref",
    "used_for",
]


@functools.cache
def _available() -> bool:
    if os.environ.get("DYNQ_COMPILED", "1") == "0":
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def used_for(t: Tensor) -> bool:
    """Whether the searches on ``t`` run compiled: ``t`` on the CPU and numba importable."""
    return t.device.type == "cpu" and _available()


@functools.cache
def _impl():  # type: ignore[no-untyped-def]
    from dynq.kernels import numba_kernels

    return numba_kernels


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy()


def make_qkx_quants(
    x: Tensor, w: Tensor, nmax: int, cand: Tensor, use_mad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qkx_quants` with its candidate numerators ``cand``."""
    b, n = x.shape
    scale = np.empty(b, np.float32)
    the_min = np.empty(b, np.float32)
    L = np.empty((b, n), np.int32)
    _impl().qkx(_np(x), _np(w), nmax, _np(cand), use_mad, scale, the_min, L)
    return torch.from_numpy(scale), torch.from_numpy(the_min), torch.from_numpy(L)


def make_qx_quants(x: Tensor, nmax: int, qw: Tensor | None, cand: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qx_quants` with its candidate numerators ``cand``."""
    b, n = x.shape
    scale = np.empty(b, np.float32)
    L = np.empty((b, n), np.int32)
    xs = _np(x)
    ws = xs if qw is None else _np(qw)
    _impl().qx(xs, ws, qw is not None, nmax, _np(cand), scale, L)
    return torch.from_numpy(scale), torch.from_numpy(L)


def make_qp_quants(x: Tensor, nmax: int, w: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qp_quants` with its candidate numerators ``cand``."""
    b, n = x.shape
    scale = np.empty(b, np.float32)
    L = np.empty((b, n), np.int32)
    _impl().qp(_np(x), _np(w), nmax, _np(cand), scale, L)
    return torch.from_numpy(scale), torch.from_numpy(L)


def make_q3_quants(x: Tensor, nmax: int) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_q3_quants`."""
    b, n = x.shape
    scale = np.empty(b, np.float32)
    L = np.empty((b, n), np.int32)
    _impl().q3(_np(x), nmax, scale, L)
    return torch.from_numpy(scale), torch.from_numpy(L)


def seq_sum(t: Tensor, first: bool) -> Tensor:
    """:func:`dynq.kernels.base.seq_sum` (over dim 0, left to right)."""
    n = t.shape[0]
    a = _np(t).reshape(n, -1)
    out = np.empty(a.shape[1], np.float32)
    if a.size:
        _impl().seq_sum(a, first, out)
    return torch.from_numpy(out).view(t.shape[1:])


def sqrtf(v: Tensor) -> Tensor:
    """:func:`dynq.kernels.base.sqrtf`: C's correctly rounded float32 square root."""
    a = _np(v).reshape(-1)
    out = np.empty_like(a)
    _impl().sqrtf(a, out)
    return torch.from_numpy(out).view(v.shape)


def requant(x: Tensor, d: Tensor, dm: Tensor | None, L: Tensor, lo: int, hi: int) -> Tensor:
    """:func:`dynq.kernels.kquants._requant`: ``x``, ``L`` ``[S, nsub, sub]``; ``d``, ``dm``
    ``[S, nsub]``."""
    s, nsub, sub = x.shape
    xs = _np(x).reshape(-1, sub)
    ds = _np(d).reshape(-1)
    dms = ds if dm is None else _np(dm).reshape(-1)
    Ls = L.to(torch.int32).contiguous().numpy().reshape(-1, sub)
    out = np.empty(Ls.shape, np.int32)
    _impl().requant(xs, ds, dms, dm is not None, Ls, lo, hi, out)
    return torch.from_numpy(out).view(s, nsub, sub)


def q8_0_ref(x: Tensor) -> tuple[Tensor, Tensor]:
    """Q8_0's ``quantize_row_q8_0_ref`` over blocks ``x`` ``[N, 32]``: ``(d [N, 1], the 32
    int8 quants as uint8 [N, 32])``."""
    b, n = x.shape
    d = np.empty(b, np.float32)
    q = np.empty((b, n), np.uint8)
    _impl().q8_0_ref(_np(x), d, q)
    return torch.from_numpy(d).view(b, 1), torch.from_numpy(q)


def sym_ref(x: Tensor, div: float, bias: float, nmax: int) -> tuple[Tensor, Tensor]:
    """Q4_0's / Q5_0's ``quantize_row_*_ref`` over blocks ``x``: ``(d [N, 1], q [N, 32] int32)``."""
    b, n = x.shape
    d = np.empty(b, np.float32)
    q = np.empty((b, n), np.int32)
    _impl().sym_ref(_np(x), np.float32(div), np.float32(bias), nmax, d, q)
    return torch.from_numpy(d).view(b, 1), torch.from_numpy(q)


def asym_ref(x: Tensor, nmax: int) -> tuple[Tensor, Tensor, Tensor]:
    """Q4_1's / Q5_1's ``quantize_row_*_ref`` over blocks ``x``: ``(d [N, 1], min [N, 1], q [N,
    32] int32)``; ``q`` is clamped to 15 for Q4_1 only, as in the C."""
    b, n = x.shape
    d = np.empty(b, np.float32)
    m = np.empty(b, np.float32)
    q = np.empty((b, n), np.int32)
    _impl().asym_ref(_np(x), nmax, nmax == 15, d, m, q)
    return torch.from_numpy(d).view(b, 1), torch.from_numpy(m).view(b, 1), torch.from_numpy(q)


def error_sums(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per column of float32 ``x`` and ``y`` ``[rows, n]``: ``(sum (x − y)², sum x²)`` in
    float64, one pass over both (:func:`dynq.kernels._error_sums`)."""
    n = x.shape[1]
    d2 = np.empty(n, np.float64)
    x2 = np.empty(n, np.float64)
    _impl().error_sums(_np(x), _np(y), d2, x2)
    return torch.from_numpy(d2), torch.from_numpy(x2)
