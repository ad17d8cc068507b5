"""The kernel registry and the float32 building blocks every kernel shares.

A kernel is one small class per GGML type; defining it with ``class Q4_0(Kernel, qtype="q4_0")``
registers it. It turns a ``[rows, n]`` float32 tensor (and the optional per-column importance
vector ``w`` of length ``n``) into the ``[rows, row_bytes]`` uint8 tensor GGUF stores, and back.

Bit-exactness with ggml rests on doing the same float32 operations in the same order:

* every ``a*b + c`` of ggml's C is two torch ops (never ``addcmul``/``lerp``/``addmm``, whose
  fused multiply-add on CUDA would round once instead of twice);
* every float sum ggml accumulates in a ``for`` loop is summed here left to right with
  :func:`seq_sum` (torch's own reductions sum pairwise/vectorised, which rounds differently);
* ``nearest_int`` is ggml's ``+ 12582912.f`` trick (:func:`nearest_int`), ``roundf``/``lroundf``
  round half away from zero (:func:`roundf`), float→fp16 is round-to-nearest-even (torch's
  ``.half()`` is too);
* "first strictly better candidate wins" searches become ``argmin``/``argmax`` (which return the
  first extremum) or short loops over the candidates where the comparison is not a plain order.

Only elementwise torch ops, gathers and min/max reductions are used, so the same code runs on
CPU and CUDA with identical results.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch
from torch import Tensor

from dynq import qtypes
from dynq.errors import KernelError
from dynq.kernels import compiled, fused

__all__ = [
    "REGISTRY",
    "BlockKernel",
    "Kernel",
    "compiled_impl",
    "divc",
    "first_abs_max",
    "first_min",
    "fp16_bytes",
    "fp16_round",
    "nearest_int",
    "rdiv",
    "roundf",
    "seq_sum",
    "sqrtf",
    "trunc_i32",
]

REGISTRY: dict[str, type[Kernel]] = {}

F32 = torch.float32
I32 = torch.int32
U8 = torch.uint8


class Kernel:
    """One GGML type's quantizer and dequantizer over whole rows."""

    qtype: ClassVar[qtypes.GGMLType]
    block_size: ClassVar[int]
    type_size: ClassVar[int]
    #: whether the importance vector changes the result (ggml ignores it for some types)
    uses_imatrix: ClassVar[bool] = True
    #: elements per chunk on CPU; kernels with big per-element search state use less
    chunk_elems: ClassVar[int] = 1 << 18

    def __init_subclass__(cls, qtype: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if qtype is None:  # an abstract helper class
            return
        t = qtypes.get(qtype)
        cls.qtype = t
        cls.block_size = t.block_size
        cls.type_size = t.type_size
        if t.key in REGISTRY:
            raise KernelError(f"two kernels registered for {t.name}")
        REGISTRY[t.key] = cls

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        """``x``: float32 ``[rows, n]``, ``w``: ``[n]`` or None → uint8 ``[rows, row_bytes]``."""
        raise NotImplementedError

    @classmethod
    def dequantize_rows(cls, data: Tensor, n: int) -> Tensor:
        """``data``: uint8 ``[rows, row_bytes]`` → float32 ``[rows, n]``."""
        raise NotImplementedError


class BlockKernel(Kernel):
    """A kernel whose blocks are independent: subclasses implement the ``*_blocks`` methods.

    ``quantize_blocks`` gets ``x`` as ``[N, block_size]`` and ``w`` as ``[N, block_size]`` (the
    importance vector broadcast over rows; possibly a stride-0 view) or None.
    """

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        rows, n = x.shape
        nb = n // cls.block_size
        xb = x.reshape(rows * nb, cls.block_size)
        wb = None
        if w is not None and cls.uses_imatrix:
            wb = w.reshape(1, nb, cls.block_size).expand(rows, nb, cls.block_size)
            wb = wb.reshape(rows * nb, cls.block_size)
        out = cls.quantize_blocks(xb, wb)
        return out.reshape(rows, nb * cls.type_size)

    @classmethod
    def dequantize_rows(cls, data: Tensor, n: int) -> Tensor:
        rows = data.shape[0]
        nb = n // cls.block_size
        y = cls.dequantize_blocks(data.reshape(rows * nb, cls.type_size))
        return y.reshape(rows, n)

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        raise NotImplementedError

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# float32 idioms of ggml-quants.c


_MAGIC = 12582912.0  # 1.5 * 2**23


def nearest_int(v: Tensor) -> Tensor:
    """ggml's ``nearest_int``: ``v + 12582912.f``, then the low mantissa bits (int32 result).

    Round half to even for ``|v| <= 2**22``; beyond that it wraps exactly as the C does.
    """
    return ((v + _MAGIC).view(I32) & 0x7FFFFF) - 0x400000


def roundf(v: Tensor) -> Tensor:
    """C ``roundf``/``lroundf``: round half away from zero (float32 result)."""
    t = torch.trunc(v)
    # v - t is exact and in (-1, 1); trunc(2*(v - t)) is sign(v) where |v - t| >= 0.5, else 0
    return t + torch.trunc((v - t).mul_(2))


def fp16_round(v: Tensor) -> Tensor:
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))``: round to nearest even fp16, back to float32."""
    return v.to(torch.float16).to(F32)


def fp16_bytes(v: Tensor) -> Tensor:
    """The 2 little-endian bytes of ``GGML_FP32_TO_FP16(v)``: ``v`` ``[N]`` → ``[N, 2]``."""
    return v.to(torch.float16).reshape(-1, 1).view(U8)


def fp16_from_bytes(b: Tensor) -> Tensor:
    """``[N, 2]`` uint8 → float32 ``[N, 1]``."""
    return b.contiguous().view(torch.float16).to(F32)


def compiled_impl(t: Tensor) -> ModuleType | None:
    """The compiled implementation of the searches and sums for tensor ``t``, or None for the
    torch one: :mod:`~dynq.kernels.fused` (Triton, GPUs) first, then
    :mod:`~dynq.kernels.compiled` (numba, CPU). Both expose ``make_qkx_quants``,
    ``make_qx_quants``, ``make_qp_quants``, ``make_q3_quants``, ``seq_sum`` and
    ``iq_grid_search`` with the same arguments."""
    if fused.used_for(t):
        return fused
    if compiled.used_for(t):
        return compiled
    return None


def seq_sum(t: Tensor, first: bool = False) -> Tensor:
    """Sum over dim 0 strictly left to right in float32, as a C loop ``s += t[i]``.

    The C starts from ``s = 0.f`` (``first`` False) or from ``s = t[0]`` (``first`` True); the
    two differ only in the sign of an all-zero sum, which can reach a stored fp16 ``-0.0``.

    On the CPU this is one ``index_add_`` into a single slot (which adds the source slices in
    index order, each rounded to float32, so the same sum with less Python overhead); on other
    devices ``index_add_`` accumulates atomically in no fixed order, so it is a loop there.
    """
    n = t.shape[0]
    impl = compiled_impl(t) if t.dtype == F32 else None
    if impl is not None:
        return impl.seq_sum(t, first)
    if t.device.type == "cpu" and n > 2:
        if first:
            out, rest = t[0].unsqueeze(0).clone(), t[1:]
        else:
            out, rest = torch.zeros((1, *t.shape[1:]), dtype=t.dtype), t
        idx = torch.zeros(rest.shape[0], dtype=torch.int64)
        return out.index_add_(0, idx, rest)[0]
    s = t[0].clone() if first else t[0] + 0.0
    for i in range(1, n):
        s.add_(t[i])
    return s


def rdiv(c: float, t: Tensor) -> Tensor:
    """``c / t`` as one correctly rounded float32 division.

    (``python_scalar / tensor`` in torch is ``t.reciprocal() * c``: two roundings.) ``c`` must be
    exactly representable in float32 (an int constant, or a value read from a float32 tensor).
    """
    return torch.div(torch.tensor(c, dtype=F32, device=t.device), t)


def divc(t: Tensor, c: float) -> Tensor:
    """``t / c`` as one true float32 division, on every device.

    torch on CUDA turns ``t / python_scalar`` (and ``t / cpu_scalar_tensor``) into
    ``t * (1/c)``, which is an ulp off now and then; a 0-dim tensor on ``t``'s device divides for
    real. ``c`` must be exactly representable in float32.
    """
    return torch.div(t, torch.tensor(c, dtype=F32, device=t.device))


_INT32_RANGE = 2147483648.0  # 2**31


def trunc_i32(v: Tensor) -> Tensor:
    """C's float → int conversion as ggml's x86 builds do it (``cvttss2si``): truncation toward
    zero, and ``INT32_MIN`` for NaN, ±inf and values outside int32 (undefined in C, but that is
    what ggml's reference bytes hold). torch's ``.to(int32)`` does this on the CPU; on CUDA it
    saturates instead. A C cast to a narrower int (``(int8_t)f``) is this, then the low bits:
    ``trunc_i32(v).to(torch.int8)``.
    """
    ok = (v >= -_INT32_RANGE) & (v < _INT32_RANGE)
    return torch.where(ok, v, -_INT32_RANGE).to(I32)


def sqrtf(v: Tensor) -> Tensor:
    """C ``sqrtf``, correctly rounded.

    torch's float32 ``sqrt`` on AVX-512 CPUs is not correctly rounded (about 1 in 5 results is
    off by an ulp); the square root of a float32 computed in float64 and rounded back is
    (53 >= 2*24 + 2, so the double rounding is harmless), on CPU and CUDA alike.
    """
    if v.dtype == F32 and compiled.used_for(v):
        return compiled.sqrtf(v)
    return torch.sqrt(v.to(torch.float64)).to(F32)


def first_abs_max(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """ggml's ``if (ax > amax) { amax = ax; max = x[i]; }`` scan from ``amax = max = 0``.

    Returns ``(amax, max)`` with ``dim`` reduced (kept as size 1): ``max`` is the signed value of
    the first element of largest magnitude, and +0.0 when every element is zero.
    """
    ax = x.abs()
    amax, idx = ax.max(dim=dim, keepdim=True)
    mx = torch.gather(x, dim, idx)
    mx = torch.where(amax > 0, mx, torch.zeros_like(mx))
    return amax, mx


def first_min(x: Tensor, dim: int = -1) -> Tensor:
    """``for (...) if (x[i] < min) min = x[i];``: the first element equal to the minimum.

    Differs from ``x.min()`` only in the sign of a zero minimum (``-0.0 < 0.0`` is false in C).
    """
    mn = x.min(dim=dim, keepdim=True).values
    idx = (x == mn).to(torch.uint8).argmax(dim=dim, keepdim=True)
    return torch.gather(x, dim, idx)


def pack_nibbles(lo: Tensor, hi: Tensor) -> Tensor:
    """``lo | hi << 4`` as uint8 (inputs int tensors of equal shape)."""
    return ((lo & 0xF) | ((hi & 0xF) << 4)).to(U8)


def bits_to_bytes(bits: Tensor) -> Tensor:
    """``[..., 8k]`` tensor of 0/1 ints → ``[..., k]`` uint8, bit j of byte b = element 8b+j."""
    shape = bits.shape
    b = bits.reshape(*shape[:-1], shape[-1] // 8, 8).to(I32)
    shifts = torch.arange(8, device=bits.device, dtype=I32)
    return (b << shifts).sum(dim=-1).to(U8)


def bytes_to_bits(b: Tensor) -> Tensor:
    """Inverse of :func:`bits_to_bytes`: ``[..., k]`` uint8 → ``[..., 8k]`` int32 of 0/1."""
    shifts = torch.arange(8, device=b.device, dtype=I32)
    bits = (b.to(I32).unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*b.shape[:-1], b.shape[-1] * 8)
