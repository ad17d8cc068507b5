"""The k-quant scale searches of :mod:`dynq.kernels.search`, compiled for the CPU with numba.

(With them the two float32 building blocks they lean on, :func:`seq_sum` and :func:`sqrtf`.)
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
    "make_q3_quants",
    "make_qkx_quants",
    "make_qp_quants",
    "make_qx_quants",
    "requant",
    "seq_sum",
    "sqrtf",
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
