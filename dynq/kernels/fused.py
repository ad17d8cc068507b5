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

import torch
from torch import Tensor

__all__ = [
    "available",
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
    from dynq.kernels import triton_kernels as k

    return {
        "qkx": k.qkx_kernel,
        "qx": k.qx_kernel,
        "qp": k.qp_kernel,
        "q3": k.q3_kernel,
        "seq_sum": k.seq_sum_kernel,
    }


#: groups per Triton program (one group per thread; 4 warps)
_BLOCK = 128
#: launch options every kernel takes: no float contraction (a*b + c stays two roundings)
_OPTS = {"enable_fp_fusion": False}


def _launch(name: str, b: int, *args: object, **meta: object) -> None:
    kernel = _kernels()[name]
    grid = (max(1, -(-b // _BLOCK)),)
    dev = next(a.device for a in args if isinstance(a, Tensor))
    if dev.type == "cuda":  # Triton launches on the current device: make it the tensors'
        with torch.cuda.device(dev):
            kernel[grid](*args, BLOCK=_BLOCK, **meta, **_OPTS)
    else:  # Triton's interpreter
        kernel[grid](*args, BLOCK=_BLOCK, **meta, **_OPTS)


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
