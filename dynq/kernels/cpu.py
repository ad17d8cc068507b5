"""The CPU backend: whole-row quantizers compiled with numba, the float types in numpy.

For the types it covers (:func:`handles`) the CPU path of :func:`dynq.kernels.quantize` runs
here, and torch is never imported: rows go from float32 straight to the bytes GGUF stores in one
compiled loop per chunk (``numba_legacy`` for the 32-element block types, ``numba_kquants`` for
the k-quants, ``numba_iquants`` for IQ4_NL and IQ4_XS), and back. Every other type, and every
GPU, goes through the torch classes (:mod:`dynq.kernels.torch_backend`), which are also the
reference these loops are tested against byte for byte.

``DYNQ_COMPILED=0`` (or numba missing) leaves only the float types here: the rest runs in torch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np

from dynq.errors import KernelError

__all__ = ["check_finite", "dequantize_rows", "error_sums", "handles", "quantize_rows"]

_FLOATS = ("F32", "F16", "BF16")


@functools.cache
def _compiled() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """The compiled quantizers and dequantizers by type name; empty when turned off."""
    if os.environ.get("DYNQ_COMPILED", "1") == "0":
        return {}, {}
    try:
        import numba  # noqa: F401
    except ImportError:
        return {}, {}
    from dynq.kernels import numba_iquants, numba_kquants, numba_legacy

    return (
        {**numba_legacy.QUANTIZE, **numba_kquants.QUANTIZE, **numba_iquants.QUANTIZE},
        {**numba_legacy.DEQUANTIZE, **numba_kquants.DEQUANTIZE, **numba_iquants.DEQUANTIZE},
    )


def handles(name: str) -> bool:
    """Whether type ``name`` (``"Q4_K"``) quantizes and dequantizes here."""
    return name in _FLOATS or name in _compiled()[0]


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits, round to nearest even (ggml's ``ggml_compute_fp32_to_bf16``;
    NaN never reaches here)."""
    u = x.view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)


#: the importance argument of a compiled quantizer called without one (never read)
_NO_W = np.zeros(1, dtype=np.float32)


def quantize_rows(name: str, x: np.ndarray, w: np.ndarray | None, out: np.ndarray) -> None:
    """Quantize float32 rows ``x`` ``[rows, n]`` (C-contiguous) into ``out`` ``[rows,
    row_bytes]`` (uint8); ``w``: float32 ``[n]`` importance or None. The GIL is released."""
    if name == "F32":
        out.view(np.float32)[:] = x
    elif name == "F16":
        with np.errstate(over="ignore"):  # beyond 65504: inf, as ggml's
            out.view(np.float16)[:] = x  # round to nearest even, as ggml_fp32_to_fp16_row
    elif name == "BF16":
        out.view(np.uint16)[:] = _bf16(x)
    else:
        has_w = w is not None
        _compiled()[0][name](x, w if has_w else _NO_W, has_w, out)


def dequantize_rows(name: str, q: np.ndarray, out: np.ndarray) -> None:
    """GGUF bytes ``q`` ``[rows, row_bytes]`` → float32 ``out`` ``[rows, n]``."""
    if name == "F32":
        out[:] = q.view(np.float32)
    elif name == "F16":
        out[:] = q.view(np.float16)
    elif name == "BF16":
        out.view(np.uint32)[:] = q.view(np.uint16).astype(np.uint32) << 16
    else:
        _compiled()[1][name](q, out)


def check_finite(x: np.ndarray, r0: int) -> None:
    """KernelError naming the first inf or NaN of float32 rows ``x`` (row ``r0`` onward)."""
    if _any_nonfinite(x):
        r, c = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise KernelError(f"weights: non-finite value {float(x[r, c])} at row {r0 + r}, column {c}")


def _any_nonfinite(x: np.ndarray) -> bool:
    if _compiled()[0]:
        from dynq.kernels.numba_kernels import any_nonfinite

        return bool(any_nonfinite(x.reshape(-1).view(np.uint32)))
    return not bool(np.isfinite(x).all())


def error_sums(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, ``sum (x − y)²`` and ``sum x²`` over the rows, in float64."""
    if _compiled()[0]:
        from dynq.kernels.numba_kernels import error_sums as sums

        d2 = np.empty(x.shape[1], dtype=np.float64)
        x2 = np.empty(x.shape[1], dtype=np.float64)
        sums(x, y, d2, x2)
        return d2, x2
    x64 = x.astype(np.float64)
    d = x64 - y
    return (d * d).sum(axis=0), (x64 * x64).sum(axis=0)
