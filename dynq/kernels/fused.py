"""The scale searches of :mod:`dynq.kernels.search` as single fused Triton kernels, for GPUs.

In torch a search is thousands of small elementwise launches per chunk (every candidate, every
left-to-right sum is its own pass over memory); here each is one kernel in which a GPU thread
runs one group's whole search, with the group's values re-read from L1/L2 and every sum kept in
a register. The arithmetic is the C's, operation for operation, so the bytes are the same:

* each float op is one rounded float32 op: the kernels are compiled with ``enable_fp_fusion``
  off (no fused multiply-add) and divisions are ``div_rn`` (Triton's ``/`` is an approximate
  division on NVIDIA GPUs);
* sums run left to right over a group's values (a ``range`` loop: rolled, so a kernel compiles
  in about a second), as the C loops do;
* ``nearest_int`` is ggml's ``+ 12582912.f`` trick on the bits.

Groups are passed transposed (``[n, B]``, contiguous), so the threads of a warp read
consecutive groups' ``j``-th values: coalesced loads.

These kernels run where torch's tensors live on a CUDA device of compute capability 8.0 or newer
and Triton is installed (it comes with torch's CUDA builds); ``DYNQ_FUSED=0`` turns them off (the
torch path then runs, as on the CPU). Under ``TRITON_INTERPRET=1`` Triton runs them on the CPU
with numpy: that is how the test suite checks them against the torch path on a machine without a
GPU.
"""

from __future__ import annotations

import functools
import os
import threading

import torch
from torch import Tensor

from dynq.kernels.iq_grids import REDO, Lattice, lattice

__all__ = [
    "available",
    "iq1_best_neighbours",
    "iq1_m_search",
    "iq1_s_search",
    "make_q3_quants",
    "make_qkx_quants",
    "make_qp_quants",
    "make_qx_quants",
    "seq_sum",
    "used_for",
]

F32 = torch.float32
I32 = torch.int32


@functools.cache
def available() -> bool:
    """Whether Triton can be imported (and ``DYNQ_FUSED`` does not turn the kernels off)."""
    if os.environ.get("DYNQ_FUSED", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _capable(index: int) -> bool:
    """Compute capability 8.0 or newer (Ampere on): what these kernels were built and tested
    for; older cards keep the torch path."""
    return torch.cuda.get_device_capability(index) >= (8, 0)


def used_for(t: Tensor) -> bool:
    """Whether the searches on tensor ``t`` run fused: ``t`` on a CUDA device of compute
    capability 8.0 or newer (or on any device under Triton's interpreter) and :func:`available`."""
    if _interpreting():
        return available()
    if t.device.type != "cuda":
        return False
    return available() and _capable(t.device.index or 0)


@functools.cache
def _kernels():  # type: ignore[no-untyped-def]
    """The ``triton.jit`` kernels, by name (Triton is imported only here)."""
    from dynq.kernels import triton_iq1 as k1
    from dynq.kernels import triton_iq_grid as kg
    from dynq.kernels import triton_kernels as k

    return {
        "qkx": k.qkx_kernel,
        "qx": k.qx_kernel,
        "qp": k.qp_kernel,
        "q3": k.q3_kernel,
        "seq_sum": k.seq_sum_kernel,
        "iq1_s": k1.iq1_s_kernel,
        "iq1_m": k1.iq1_m_kernel,
        "iq1_neighbours": k1.iq1_neighbour_kernel,
        "iq_grid": kg.iq_grid_kernel,
    }


#: groups per Triton program (one group per thread; 4 warps)
_BLOCK = 128
#: launch options every kernel takes: no float contraction (a*b + c stays two roundings)
_OPTS = {"enable_fp_fusion": False}


#: Triton's interpreter patches its language module while a kernel runs, so two interpreted
#: launches at once (``quantize``'s chunk threads) break each other: they take turns
_interpret_lock = threading.Lock()


def _run(kernel, grid: tuple[int], args: tuple[object, ...], meta: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Launch ``kernel`` on the device of its tensor arguments."""
    dev = next(a.device for a in args if isinstance(a, Tensor))
    if dev.type == "cuda":  # Triton launches on the current device: make it the tensors'
        with torch.cuda.device(dev):
            kernel[grid](*args, **meta, **_OPTS)
    else:  # Triton's interpreter
        with _interpret_lock:
            kernel[grid](*args, **meta, **_OPTS)


def _launch(name: str, b: int, *args: object, **meta: object) -> None:
    _run(_kernels()[name], (max(1, -(-b // _BLOCK)),), args, {"BLOCK": _BLOCK, **meta})


def _t(x: Tensor) -> Tensor:
    """``[B, n]`` → ``[n, B]`` contiguous float32 (the layout the kernels read)."""
    return x.t().to(F32).contiguous()


def make_qkx_quants(
    x: Tensor, w: Tensor, nmax: int, cand: Tensor, use_mad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qkx_quants` with its candidate numerators ``cand``
    (``rmin + rdelta*is + nmax`` as float32, on ``x``'s device)."""
    b, n = x.shape
    L = torch.empty((n, b), dtype=I32, device=x.device)
    scale = torch.empty(b, dtype=F32, device=x.device)
    mn = torch.empty(b, dtype=F32, device=x.device)
    if b:
        _launch("qkx", b, _t(x), _t(w), cand, scale, mn, L, b,
                NCAND=cand.numel(), N=n, NMAX=nmax, USE_MAD=use_mad)  # fmt: skip
    return scale, -mn, L.t().contiguous()


def make_qx_quants(x: Tensor, nmax: int, qw: Tensor | None, cand: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qx_quants` with its candidate numerators ``cand``
    (the first ``nmax``, then ``0.1*is + nmax``)."""
    b, n = x.shape
    L = torch.empty((n, b), dtype=I32, device=x.device)
    scale = torch.empty(b, dtype=F32, device=x.device)
    if b:
        xt = _t(x)
        wt = xt if qw is None else _t(qw)
        _launch("qx", b, xt, wt, cand, scale, L, b,
                NCAND=cand.numel(), N=n, NMAX=nmax, HAS_W=qw is not None)  # fmt: skip
    return scale, L.t().contiguous()


def make_qp_quants(x: Tensor, nmax: int, w: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_qp_quants` with its candidate numerators ``cand``
    (``0.1*is + nmax`` for ``is`` in -4..4 but 0)."""
    b, n = x.shape
    L = torch.empty((n, b), dtype=I32, device=x.device)
    scale = torch.empty(b, dtype=F32, device=x.device)
    if b:
        _launch("qp", b, _t(x), _t(w), cand, scale, L, b, NCAND=cand.numel(), N=n, NMAX=nmax)
    return scale, L.t().contiguous()


def make_q3_quants(x: Tensor, nmax: int) -> tuple[Tensor, Tensor]:
    """:func:`dynq.kernels.search.make_q3_quants`."""
    b, n = x.shape
    L = torch.empty((n, b), dtype=I32, device=x.device)
    scale = torch.empty(b, dtype=F32, device=x.device)
    if b:
        _launch("q3", b, _t(x), scale, L, b, N=n, NMAX=nmax)
    return scale, L.t().contiguous()


def seq_sum(t: Tensor, first: bool) -> Tensor:
    """:func:`dynq.kernels.base.seq_sum` (over dim 0, left to right) in one kernel."""
    n = t.shape[0]
    rest = t.shape[1:]
    tc = t.to(F32).contiguous().view(n, -1)
    m = tc.shape[1]
    out = torch.empty(m, dtype=F32, device=t.device)
    if m:
        _launch("seq_sum", m, tc, out, m, N=n, FIRST=first)
    return out.view(rest)


# ----------------------------------------------------------------------------------------------
# IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: the grid search (dynq.kernels.triton_iq_grid)

#: blocks per program of the grid search (one warp): a lane's neighbour loop runs as long as the
#: longest neighbour list among the program's lanes, so a program of one warp wastes no more
#: than the warp's own divergence would
_IQ_BLOCK = 32
#: neighbours each lane scores at once (a ``[BLOCK, NBC]`` tile per step of the list)
_IQ_NBC = 1

_iq_tabs: dict[tuple[str, str], dict[str, Tensor]] = {}


def _iq_tables(lat: Lattice, device: torch.device) -> dict[str, Tensor]:
    """A lattice's tables as the kernel reads them (int32; cached per device): ``map``,
    ``nb_start``, ``nb_count``, ``gridu`` (:attr:`~dynq.kernels.iq_grids.Lattice.packed`) and
    ``nb_ent`` (:attr:`~dynq.kernels.iq_grids.Lattice.nb_entries`)."""
    key = (lat.name, str(device))
    t = _iq_tabs.get(key)
    if t is None:
        tab = lat.on(device)
        t = {
            "map": tab["map"].to(I32).contiguous(),
            "gridu": tab["packed"].to(I32).contiguous(),
            "nb_start": tab["nb_start32"].contiguous(),
            "nb_count": tab["nb_count32"].contiguous(),
            "nb_ent": torch.from_numpy(lat.nb_entries).to(device=device, dtype=I32),
        }
        _iq_tabs[key] = t
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
    """:func:`dynq.kernels.iq_lowbit._search` in one kernel (same arguments, same results:
    ``(scale [B], L [B, n] int64, on-grid [B, G] bool)``), followed, unless ``redo`` is None,
    by :func:`dynq.kernels.iq_lowbit._requantize` for the blocks with ``scale > 0``: ``"all"``
    every block, every group (IQ2_XXS); ``"off"`` the blocks with a group off the lattice,
    those groups (IQ2_XS, IQ2_S, IQ3_XXS); ``"off_all"`` those blocks, every group (IQ3_S).
    The on-grid flags returned are the search's (before that pass)."""
    b, n = xval.shape
    g = lat.group
    ng = n // g
    dev = xval.device
    scale = torch.empty(b, dtype=F32, device=dev)
    L = torch.empty((n, b), dtype=I32, device=dev)
    off = torch.empty(b, dtype=I32, device=dev)
    if b:
        tab = _iq_tables(lat, dev)
        kernel = _kernels()["iq_grid"]
        grid = (-(-b // _IQ_BLOCK),)
        args = (
            _t(xval), _t(weight), _t(waux), _t(ids), scale0.to(F32).contiguous(),
            L0.t().to(I32).contiguous(), tab["map"], tab["gridu"], tab["nb_start"],
            tab["nb_count"], tab["nb_ent"], scale, L, off, b,
        )  # fmt: skip
        meta = {
            "T": ids.shape[1],
            "N": n,
            "G": g,
            "KMAXQ": kmaxq,
            "BITS": lat.bits,
            "ONGRID0": ongrid0,
            "REDO": REDO[redo],
            "NBC": _IQ_NBC,
            "BLOCK": _IQ_BLOCK,
            "num_warps": max(1, _IQ_BLOCK // 32),
        }
        _run(kernel, grid, args, meta)
    bits = torch.arange(ng, device=dev, dtype=I32)
    ongrid = ((off.view(b, 1) >> bits) & 1) == 0
    return scale, L.t().to(torch.int64).contiguous(), ongrid


# ----------------------------------------------------------------------------------------------
# IQ1_S, IQ1_M: the split searches and the neighbour search (dynq.kernels.triton_iq1)

#: blocks per program under Triton's interpreter, which pays per operation, not per lane (on a
#: GPU: _BLOCK, one block per thread)
_IQ1_INTERPRETED_BLOCK = 2048


def _launch_iq1(name: str, b: int, *args: object, **meta: object) -> None:
    kernel = _kernels()[name]
    dev = next(a.device for a in args if isinstance(a, Tensor))
    block = _BLOCK if dev.type == "cuda" else _IQ1_INTERPRETED_BLOCK
    _run(kernel, (max(1, -(-b // block)),), args, {"BLOCK": block, **meta})


def iq1_s_search(wxs: Tensor, ws: Tensor) -> tuple[Tensor, Tensor]:
    """IQ1_S's split search (:class:`dynq.kernels.iq_lowbit.IQ1_S`: its prefix sums of the
    sorted ``w*x`` and ``w`` ``[B, 32]``, candidates and ``record_scan``) in one kernel.

    Returns ``(pick [B] int64, -1 where no candidate was taken; sc [B]: sumqx/sumq2 of the
    candidate picked, of candidate 0 where none was)``."""
    b, n = wxs.shape
    pick = torch.empty(b, dtype=I32, device=wxs.device)
    sc = torch.empty(b, dtype=F32, device=wxs.device)
    if b:
        px = torch.empty((n + 1, b), dtype=F32, device=wxs.device)
        pw = torch.empty_like(px)
        _launch_iq1("iq1_s", b, _t(wxs), _t(ws), px, pw, pick, sc, b, N=n)
    return pick.to(torch.int64), sc


def iq1_m_search(wxs: Tensor, ws: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """IQ1_M's split search (:class:`dynq.kernels.iq_lowbit.IQ1_M`: its prefix sums per half
    of the sorted ``w*x`` and ``w`` ``[B, 16]``, the halves told apart by the sort's ``order``,
    candidates and ``record_scan``) in one kernel. Returns what :func:`iq1_s_search` does."""
    b, n = wxs.shape
    pick = torch.empty(b, dtype=I32, device=wxs.device)
    sc = torch.empty(b, dtype=F32, device=wxs.device)
    if b:
        px = torch.empty((2, n + 1, b), dtype=F32, device=wxs.device)
        pw = torch.empty_like(px)
        ordt = order.t().to(I32).contiguous()
        _launch_iq1("iq1_m", b, _t(wxs), _t(ws), ordt, px, pw, pick, sc, b, N=n)
    return pick.to(torch.int64), sc


@functools.cache
def _lvpack(device: str) -> Tensor:
    """IQ1's grid points' levels packed 2 bits each (``sum levels[j][i] << 2i``), int32."""
    return lattice("iq1_s").on(torch.device(device))["packed"].to(I32).contiguous()


def iq1_best_neighbours(
    tab: dict[str, Tensor], u: Tensor, xv: Tensor, wv: Tensor, scale: Tensor, xx: Tensor
) -> Tensor:
    """:func:`dynq.kernels.iq_lowbit.best_neighbours` for IQ1 (``iq1_find_best_neighbour2``,
    the levels' values ``xx`` ``[M, 3]``) in one kernel: one thread per group, its terms
    ``w*(scale*q - x)^2`` tabulated once, each neighbour's ``d2`` summed left to right from
    them. Returns the grid indices ``[M]`` (int64).

    A program loops as long as its longest neighbour list (21 to 205, 73 on average), so the
    groups go to the kernel ordered by their lists' lengths."""
    m, g = xv.shape
    gi = torch.empty(m, dtype=torch.int64, device=xv.device)
    if m:
        nlev = xx.shape[1]
        u = u.to(I32)
        perm = torch.argsort(tab["nb_count32"].index_select(0, u))
        got = torch.empty(m, dtype=I32, device=xv.device)
        tt = torch.empty((g * nlev, m), dtype=F32, device=xv.device)
        _launch_iq1(
            "iq1_neighbours", m, u.index_select(0, perm).contiguous(), _t(xv.index_select(0, perm)),
            _t(wv.index_select(0, perm)), scale.to(F32).index_select(0, perm).contiguous(),
            _t(xx.index_select(0, perm)), tab["nb_count32"], tab["nb_start32"], tab["nb_list32"],
            _lvpack(str(xv.device)), tt, got, m, G=g, NLEV=nlev,
        )  # fmt: skip
        gi[perm] = got.to(torch.int64)
    return gi
