"""dynq's bundled quantization kernels: ggml's reference quantizers, byte for byte.

Public API:

* :func:`quantize` — float rows → the bytes GGUF stores for the tensor;
* :func:`dequantize` — those bytes → float32 (as ``gguf.quants.dequantize``);
* :func:`weighted_error` — how far quantized bytes are from the floats they came from;
* :func:`quantize_measured` — both at once, each chunk measured where it was quantized;
* :func:`supported_types` — the type names (as gguf spells them, e.g. ``"Q4_K"``) handled here;
* :func:`set_threads` — how many chunks run at once on the CPU.

Two backends, one result. On the CPU the types :mod:`dynq.kernels.cpu` covers (the floats, the
32-element block types and the k-quants) run as whole-row loops compiled with numba, without
importing torch. Everything else — every GPU, and the other types on the CPU — runs in
:mod:`dynq.kernels.torch_backend`: one small torch class per type, registered through
:class:`dynq.kernels.base.Kernel`. Tensors are processed in chunks of whole rows
(:mod:`dynq.kernels.chunks`), so memory stays bounded for any tensor size.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType

from dynq import qtypes
from dynq.errors import DynqError, KernelError
from dynq.kernels import cpu
from dynq.kernels.chunks import map_chunks, rows_per_chunk, set_threads, threads

__all__ = [
    "dequantize",
    "kernel_for",
    "quantize",
    "quantize_measured",
    "set_threads",
    "supported_types",
    "threads",
    "weighted_error",
]

#: the types the kernels quantize and dequantize (one torch class each; a test holds this
#: list equal to the classes registered, so that asking does not import torch)
_SUPPORTED = frozenset(
    "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS IQ2_XXS "
    "IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4 Q1_0".split()
)

#: values per chunk on the CPU for the compiled loops
_CPU_CHUNK_ELEMS = 1 << 18


def supported_types() -> frozenset[str]:
    """Names (``"Q4_K"``, ``"F16"``, …) of the types :func:`quantize` and :func:`dequantize` do."""
    return _SUPPORTED


def _resolve_type(qtype: qtypes.GGMLType | GGMLQuantizationType | str) -> qtypes.GGMLType:
    if isinstance(qtype, qtypes.GGMLType):
        t = qtype
    else:
        try:
            t = qtypes.get(qtype)
        except DynqError as e:
            raise KernelError(str(e)) from None
    if t.name not in _SUPPORTED:
        raise KernelError(f"{t.name} is not yet supported by dynq's kernels")
    return t


def kernel_for(qtype: qtypes.GGMLType | GGMLQuantizationType | str) -> type:
    """The torch kernel class for a type; KernelError when dynq has none."""
    from dynq.kernels import torch_backend

    return torch_backend.kernel_for(_resolve_type(qtype))


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _compiled_cpu(t: qtypes.GGMLType, device: Any, x: Any) -> bool:
    """Whether this call runs in :mod:`dynq.kernels.cpu`: on the CPU, for a type it covers."""
    if not cpu.handles(t.name):
        return False
    if device is None:
        return not _torch_tensor(x) or x.device.type == "cpu"
    return str(device) == "cpu"


def _as_array(a: Any, what: str) -> np.ndarray:
    if _torch_tensor(a):
        from dynq.kernels.torch_backend import as_numpy

        a = as_numpy(a)
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise KernelError(f"{what}: expected a float array, got dtype {arr.dtype}")
    return arr


def _check_rows(t: qtypes.GGMLType, shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise KernelError(
            f"weights: expected a 2-D array (rows × row length), got shape {tuple(shape)}"
        )
    rows, n = (int(s) for s in shape)
    if n % t.block_size:
        raise KernelError(
            f"{t.name}: row length {n} is not a multiple of its block size {t.block_size}"
        )
    return rows, n


def _importance(imatrix: Any, n: int) -> np.ndarray:
    w = _as_array(imatrix, "imatrix")
    if w.ndim != 1 or w.shape[0] != n:
        raise KernelError(f"imatrix: expected {n} values (one per column), got shape {w.shape}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        raise KernelError(f"imatrix: non-finite value {float(w[bad[0]])} at column {bad[0]}")
    return w


def quantize(
    x: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any = None,
    device: Any = None,
) -> np.ndarray:
    """Quantize the rows of 2-D ``x`` (rows × row length) to ``qtype``, as ggml would.

    ``imatrix``: the importance vector (one float per column) or None. Returns the bytes GGUF
    stores for the tensor: a flat uint8 array, rows concatenated. ``device``: None (the input
    tensor's device, else the CPU), ``"cpu"`` or ``"cuda"``.
    """
    return _quantize(x, qtype, imatrix, device, measure=False)[0]


def quantize_measured(
    x: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any = None,
    device: Any = None,
) -> tuple[np.ndarray, float, float]:
    """:func:`quantize`, and :func:`weighted_error` of its result: ``(bytes, sum w·(x − q)²,
    sum w·x²)``, with ``w`` the imatrix (1 without one; it weights the error even for a type
    whose quantizer ignores it). Each chunk is dequantized and measured where it was quantized,
    while its rows are still there: a build on a GPU copies each tensor there once, not twice.
    """
    return _quantize(x, qtype, imatrix, device, measure=True)


def _quantize(
    x: Any, qtype: Any, imatrix: Any, device: Any, measure: bool
) -> tuple[np.ndarray, float, float]:
    t = _resolve_type(qtype)
    rows, n = _check_rows(t, getattr(x, "shape", np.shape(x)))
    if not _compiled_cpu(t, device, x):
        from dynq.kernels import torch_backend

        return torch_backend.quantize(x, t, imatrix, torch_backend.device(device, x), measure)
    xa = _as_array(x, "weights")
    w = None if imatrix is None else _importance(imatrix, n)
    row_bytes = t.row_bytes(n) if n else 0
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    if rows == 0 or n == 0:
        return out.reshape(-1), 0.0, 0.0
    step = rows_per_chunk(_CPU_CHUNK_ELEMS, n, rows)

    def job(r0: int) -> tuple[np.ndarray, np.ndarray] | None:
        r1 = min(rows, r0 + step)
        xc = np.ascontiguousarray(xa[r0:r1], dtype=np.float32)
        cpu.check_finite(xc, r0)
        cpu.quantize_rows(t.name, xc, w, out[r0:r1])
        if not measure:
            return None
        y = np.empty_like(xc)
        cpu.dequantize_rows(t.name, out[r0:r1], y)
        return cpu.error_sums(xc, y)

    parts = map_chunks(job, range(0, rows, step))
    if not measure:
        return out.reshape(-1), 0.0, 0.0
    return (out.reshape(-1), *_total(parts, w))


def _total(parts: list[tuple[np.ndarray, np.ndarray]], w: np.ndarray | None) -> tuple[float, float]:
    """The chunks' per-column error sums, added in chunk order, weighted, summed (float64)."""
    d2 = sum(p[0] for p in parts)
    x2 = sum(p[1] for p in parts)
    if w is not None:
        wd = w.astype(np.float64)
        d2 = d2 * wd
        x2 = x2 * wd
    return float(np.sum(d2)), float(np.sum(x2))


def _raw_rows(data: Any, t: qtypes.GGMLType, rows: int, n: int, what: str) -> np.ndarray:
    """Bytes of ``rows`` rows of ``n`` values (``what``, for the error) as uint8
    ``[rows, row_bytes]``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(data, dtype=np.uint8)
    elif _torch_tensor(data):
        raw = data.detach().reshape(-1).cpu().contiguous().numpy().view(np.uint8)
    else:
        raw = np.ascontiguousarray(np.asarray(data)).reshape(-1).view(np.uint8)
    row_bytes = t.row_bytes(n)
    if raw.size != rows * row_bytes:
        raise KernelError(
            f"{t.name}: {raw.size} bytes do not hold {what} ({rows * row_bytes} bytes expected)"
        )
    return raw.reshape(rows, row_bytes)


def dequantize(
    data: Any, qtype: qtypes.GGMLType | GGMLQuantizationType | str, shape: Sequence[int]
) -> np.ndarray:
    """GGUF bytes of a tensor of GGUF shape ``shape`` (``shape[0]`` = row length) → float32.

    The result has numpy's order, ``tuple(reversed(shape))``, like ``gguf.quants.dequantize``.
    """
    t = _resolve_type(qtype)
    shape = [int(s) for s in shape]
    if not shape or any(s < 0 for s in shape):
        raise KernelError(f"{t.name}: bad tensor shape {shape}")
    n = shape[0]
    if n % t.block_size:
        raise KernelError(
            f"{t.name}: row length {n} is not a multiple of its block size {t.block_size}"
        )
    rows = int(np.prod(shape[1:], dtype=np.int64))
    raw = _raw_rows(data, t, rows, n, f"shape {shape}")
    if cpu.handles(t.name):
        out = np.empty((rows, n), dtype=np.float32)
        if rows and n:
            step = rows_per_chunk(_CPU_CHUNK_ELEMS, n, rows)

            def job(r0: int) -> None:
                cpu.dequantize_rows(t.name, raw[r0 : r0 + step], out[r0 : r0 + step])

            map_chunks(job, range(0, rows, step))
    else:
        from dynq.kernels import torch_backend

        out = torch_backend.dequantize(raw, t, rows, n)
    return out.reshape(tuple(reversed(shape)))


def weighted_error(
    x: Any,
    data: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any = None,
    device: Any = None,
) -> tuple[float, float]:
    """``(sum w·(x − dequantize(data))², sum w·x²)`` over 2-D ``x`` (rows × row length) and its
    quantized bytes ``data``, with ``w`` the per-column importance (1 without an imatrix).

    Summed in float64, chunk by chunk on ``device`` (the bytes are dequantized there), so a build
    on a GPU does not pay for a CPU dequantization per tensor.
    """
    t = _resolve_type(qtype)
    shape = getattr(x, "shape", np.shape(x))
    if len(shape) != 2:
        raise KernelError(f"weights: expected a 2-D array, got shape {tuple(shape)}")
    rows, n = (int(s) for s in shape)
    raw = _raw_rows(data, t, rows, n, f"{rows} rows of {n}")
    if not _compiled_cpu(t, device, x):
        from dynq.kernels import torch_backend

        return torch_backend.weighted_error(x, raw, t, imatrix, torch_backend.device(device, x))
    xa = _as_array(x, "weights")
    w = None if imatrix is None else _importance(imatrix, n)
    if rows == 0 or n == 0:
        return 0.0, 0.0
    step = rows_per_chunk(_CPU_CHUNK_ELEMS, n, rows)

    def job(r0: int) -> tuple[np.ndarray, np.ndarray]:
        xc = np.ascontiguousarray(xa[r0 : r0 + step], dtype=np.float32)
        y = np.empty_like(xc)
        cpu.dequantize_rows(t.name, raw[r0 : r0 + step], y)
        return cpu.error_sums(xc, y)

    return _total(map_chunks(job, range(0, rows, step)), w)
