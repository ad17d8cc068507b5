"""The k-quant scale searches of :mod:`dynq.kernels.search`, compiled for the CPU with numba.

(With them the two float32 building blocks they lean on, :func:`seq_sum` and :func:`sqrtf`,
and the error sums of the torch backend's build reports.) These serve the torch classes when
they run on the CPU: the types :mod:`dynq.kernels.cpu` does not compile, and the tests that hold
the torch reference to ggml's bytes there.
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

from dynq.kernels.iq_grids import REDO, Lattice, lattice

__all__ = [
    "error_sums",
    "iq1_best_neighbours",
    "iq1_m_blocks",
    "iq1_m_fit",
    "iq1_m_search",
    "iq1_s_blocks",
    "iq1_s_search",
    "iq_grid_search",
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


def error_sums(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per column of float32 ``x`` and ``y`` ``[rows, n]``: ``(sum (x − y)², sum x²)`` in
    float64, one pass over both (:func:`dynq.kernels._error_sums`)."""
    n = x.shape[1]
    d2 = np.empty(n, np.float64)
    x2 = np.empty(n, np.float64)
    _impl().error_sums(_np(x), _np(y), d2, x2)
    return torch.from_numpy(d2), torch.from_numpy(x2)


# ----------------------------------------------------------------------------------------------
# IQ1_S, IQ1_M: the blocks' work, split searches, neighbour search (dynq.kernels.numba_iq1)


@functools.cache
def _iq1_impl():  # type: ignore[no-untyped-def]
    from dynq.kernels import numba_iq1

    return numba_iq1


def iq1_s_search(wxs: Tensor, ws: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.iq_lowbit._iq1_s_search` (the prefix sums of the sorted ``w*x`` and
    ``w`` ``[B, 32]``, candidates and ``record_scan``) as one loop per block.

    Returns ``(pick [B] int64, -1 where no candidate was taken; sc [B]: sumqx/sumq2 of the
    candidate picked, of candidate 0 where none was)``."""
    b = wxs.shape[0]
    pick = np.empty(b, np.int64)
    sc = np.empty(b, np.float32)
    _iq1_impl().iq1_s_search(_np(wxs), _np(ws), pick, sc)
    return torch.from_numpy(pick), torch.from_numpy(sc)


def iq1_m_search(wxs: Tensor, ws: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.iq_lowbit._iq1_m_search` (prefix sums per half of the sorted
    ``w*x`` and ``w`` ``[B, 16]``, the halves told apart by the sort's ``order``) as one loop
    per block. Returns what :func:`iq1_s_search` does."""
    b = wxs.shape[0]
    pick = np.empty(b, np.int64)
    sc = np.empty(b, np.float32)
    order = order.to(torch.int64).contiguous().numpy()
    _iq1_impl().iq1_m_search(_np(wxs), _np(ws), order, pick, sc)
    return torch.from_numpy(pick), torch.from_numpy(sc)


def iq1_best_neighbours(
    tab: dict[str, Tensor], u: Tensor, xv: Tensor, wv: Tensor, scale: Tensor, xx: Tensor
) -> Tensor:
    """:func:`dynq.kernels.iq_lowbit.best_neighbours` for IQ1 (``iq1_find_best_neighbour2``,
    the levels' values ``xx`` ``[M, 3]``; ``tab``: IQ1's lattice tables on the CPU) as one loop
    per group. Returns the grid indices ``[M]`` (int64)."""
    m = xv.shape[0]
    gi = np.empty(m, np.int64)
    if m:
        _iq1_impl().iq1_neighbours(
            u.to(torch.int64).contiguous().numpy(), _np(xv), _np(wv), _np(scale).reshape(-1),
            _np(xx), *_iq1_tables()[1:], gi,
        )  # fmt: skip
    return torch.from_numpy(gi)


@functools.cache
def _iq1_tables() -> tuple[np.ndarray, ...]:
    """IQ1's lattice as the numba functions take it: ``(map, nb_count, nb_start, nb_list,
    lvpack)``, int64; ``lvpack[j]``: grid point ``j``'s levels packed 2 bits each."""
    lat = lattice("iq1_s")
    tabs = (lat.map, lat.nb_count, lat.nb_start, lat.nb_list, lat.packed)
    return tuple(np.ascontiguousarray(t, dtype=np.int64) for t in tabs)


def iq1_s_blocks(xb: Tensor, wb: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`dynq.kernels.iq_lowbit.IQ1_S`'s work per block of 32 (values ``xb``, weights
    ``wb`` ``[B, 32]``) up to the super-block scales, in one loop per block: the skip test
    (``max |x| < eps``), the sort, the split search, the levels, the lattice and its
    neighbours, the refit. Returns ``(scale [B], 0 where skipped; shift [B] int64, +1 or -1;
    grid indices [B, 4] int64, 0 where skipped)``."""
    b, n = xb.shape
    scale = np.empty(b, np.float32)
    shift = np.empty(b, np.int64)
    gi = np.empty((b, n // 8), np.int64)
    _iq1_impl().iq1_s_blocks(_np(xb), _np(wb), np.float32(eps), *_iq1_tables(), scale, shift, gi)
    return torch.from_numpy(scale), torch.from_numpy(shift), torch.from_numpy(gi)


def iq1_m_blocks(xb: Tensor, wb: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`dynq.kernels.iq_lowbit.IQ1_M`'s work per block of 16, as :func:`iq1_s_blocks`.
    Returns ``(scale [B], 0 where skipped; best_k [B] int64, the shifts of the block's two
    halves, 0 where skipped; grid indices [B, 2] int64, 0 where skipped)``."""
    b, n = xb.shape
    scale = np.empty(b, np.float32)
    best_k = np.empty(b, np.int64)
    gi = np.empty((b, n // 8), np.int64)
    _iq1_impl().iq1_m_blocks(_np(xb), _np(wb), np.float32(eps), *_iq1_tables(), scale, best_k, gi)
    return torch.from_numpy(scale), torch.from_numpy(best_k), torch.from_numpy(gi)


# ----------------------------------------------------------------------------------------------
# IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: the grid search (dynq.kernels.numba_iq_grid)


@functools.cache
def _iq_grid_impl():  # type: ignore[no-untyped-def]
    from dynq.kernels import numba_iq_grid

    return numba_iq_grid


_iq_grid_tabs: dict[str, tuple[np.ndarray, ...]] = {}


def _iq_grid_tables(lat: Lattice) -> tuple[np.ndarray, ...]:
    """A lattice's tables as :mod:`~dynq.kernels.numba_iq_grid` reads them (cached): int32
    ``map``, ``packed``, ``nb_start``, ``nb_count``, ``nb_entries`` (as
    :class:`~dynq.kernels.iq_grids.Lattice` has them), and float32 ``nb_q`` ``[entries,
    group]``: each entry's ``q = 2l + 1``."""
    t = _iq_grid_tabs.get(lat.name)
    if t is None:
        ints = (lat.map, lat.packed, lat.nb_start, lat.nb_count, lat.nb_entries)
        t = (
            *(np.ascontiguousarray(a, dtype=np.int32) for a in ints),
            np.ascontiguousarray(2 * lat.levels[lat.nb_list] + 1, dtype=np.float32),
        )
        _iq_grid_tabs[lat.name] = t
    return t


def iq_grid_search(
    lat: Lattice,
    xval: Tensor,
    weight: Tensor,
    waux: Tensor,
    ids: Tensor,
    kmaxq: int,
    scale0: Tensor,
    L0: Tensor,
    ongrid0: bool,
    redo: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dynq.kernels.iq_lowbit._search` compiled (same arguments, same results:
    ``(scale [B], L [B, n] int64, on-grid [B, G] bool)``), followed, unless ``redo`` is None,
    by :func:`dynq.kernels.iq_lowbit._requantize` for the blocks with ``scale > 0``: ``"all"``
    every block, every group (IQ2_XXS); ``"off"`` the blocks with a group off the lattice,
    those groups (IQ2_XS, IQ2_S, IQ3_XXS); ``"off_all"`` those blocks, every group (IQ3_S).
    The on-grid flags returned are the search's (before that pass); as
    :func:`dynq.kernels.fused.iq_grid_search`."""
    b, n = xval.shape
    g = lat.group
    scale = np.empty(b, np.float32)
    L = np.empty((b, n), np.int64)
    off = np.empty(b, np.int32)
    if b:
        # the kernels are compiled for the two shapes of lattice (IQ2: 8 levels of 2 bits in
        # [0, 3); IQ3: 4 levels of 3 bits in [0, 8)), with kMaxQ the lattice's reach
        shape = (g, lat.bits, lat.reach, kmaxq)
        if shape == (8, 2, 3, 3):
            fn = _iq_grid_impl().iq2_grid
        elif shape == (4, 3, 8, 8):
            fn = _iq_grid_impl().iq3_grid
        else:
            raise ValueError(f"no compiled grid search for lattice {lat.name} {shape}")
        fn(
            _np(xval), _np(weight), _np(waux), _np(ids), _np(scale0),
            L0.to(torch.int64).contiguous().numpy(), ongrid0, REDO[redo],
            *_iq_grid_tables(lat), scale, L, off,
        )  # fmt: skip
    bits = np.arange(n // g, dtype=np.int32)
    ongrid = ((off.reshape(b, 1) >> bits) & 1) == 0
    return torch.from_numpy(scale), torch.from_numpy(L), torch.from_numpy(ongrid)


def iq1_m_fit(
    x: Tensor, weight: Tensor, gi: Tensor, best_k: Tensor, l3: Tensor
) -> tuple[Tensor, Tensor]:
    """:class:`dynq.kernels.iq_lowbit.IQ1_M`'s final fit over super-blocks ``x``, ``weight``
    ``[S, 256]`` with the blocks' grid indices ``gi`` ``[S*16, 2]``, shifts ``best_k``
    ``[S*16]`` and scales ``l3`` ``[S, 16]``: ``(sumqx [S], sumq2 [S])`` of ``q = x_{p|m}[level]
    * (2*l3 + 1)``, ``sumqx += w*q*x; sumq2 += w*q*q`` left to right."""
    s = x.shape[0]
    sumqx = np.empty(s, np.float32)
    sumq2 = np.empty(s, np.float32)
    i64 = [t.to(torch.int64).contiguous().numpy() for t in (gi, best_k, l3)]
    _iq1_impl().iq1_m_fit(_np(x), _np(weight), *i64, _iq1_tables()[-1], sumqx, sumq2)
    return torch.from_numpy(sumqx), torch.from_numpy(sumq2)
