"""The torch backend: one class per GGML type (the family modules ``floats``, ``legacy``,
``kquants``, ``iquants``, ``iq_lowbit``, ``ternary``, ``special``), on CUDA and on the CPU.

It runs every GPU build (with the fused Triton kernels where they exist), the CPU for the types
:mod:`dynq.kernels.cpu` does not compile, and it is the reference the compiled loops are tested
against. Imported only when needed: importing torch takes a second.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch

from dynq import qtypes
from dynq.errors import KernelError
from dynq.kernels import (  # noqa: F401  (importing a family registers its kernels)
    chunks,
    compiled,
    floats,
    iq_lowbit,
    iquants,
    kquants,
    legacy,
    special,
    ternary,
)
from dynq.kernels.base import REGISTRY, Kernel

T = TypeVar("T")

#: how many times more elements a chunk holds on a GPU than on the CPU: the kernels are many
#: small elementwise ops, so a GPU needs big chunks to be busy (bench/kernels.py: Q4_K with an
#: imatrix went from 147 to 1041 MB/s on an H100 from 16 to 256). A chunk that does not fit in
#: the GPU's memory is halved until it does.
_CUDA_CHUNK_FACTOR = 256


def kernel_for(t: qtypes.GGMLType) -> type[Kernel]:
    """The kernel class for a type; KernelError when dynq has none."""
    k = REGISTRY.get(t.key)
    if k is None:
        raise KernelError(f"{t.name} is not yet supported by dynq's kernels")
    return k


def device(device: str | torch.device | None, x: Any) -> torch.device:
    if device is None:
        return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise KernelError(f"device {device!r}: dynq's kernels run on 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KernelError("device 'cuda' requested but torch sees no CUDA device")
    return dev


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without a copy, read-only arrays (memory-mapped GGUF data) too:
    dynq only reads its inputs, so torch's warning about non-writable arrays does not apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def _as_tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiu":
            raise KernelError(f"{what}: expected a float array, got dtype {arr.dtype}")
        t = _from_numpy(np.ascontiguousarray(arr))
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32)):
        raise KernelError(f"{what}: expected a float array, got dtype {t.dtype}")
    return t


def as_numpy(a: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array (float32 where numpy has no such dtype, as for bfloat16)."""
    t = a.detach()
    if t.dtype not in (torch.float32, torch.float16, torch.float64):
        t = t.to(torch.float32)
    return t.numpy()


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """torch intra-op threads set to 1 while chunks run (restored by the last one out, so
    concurrent calls do not leave torch single-threaded).

    The kernels run thousands of small and mid-sized ops, for which intra-op threading costs
    more in synchronisation than it gains, and on a busy machine each parallel region can wait
    milliseconds for its second thread (measured: a 7 ms call taking up to 3.8 s; a
    dequantization 45 times slower). Chunks run in parallel threads instead (torch releases the
    GIL inside ops)."""
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def _map_cpu(job: Callable[[int], T], starts: Sequence[int]) -> list[T]:
    with _single_threaded_ops():
        return chunks.map_chunks(job, starts)


def _chunk_rows(kernel: type[Kernel], n: int, dev: torch.device, rows: int) -> int:
    """Rows per chunk: the kernel's chunk size on the CPU (its CUDA multiple on a GPU)."""
    if dev.type == "cuda":
        return chunks.rows_per_chunk(kernel.chunk_elems * _CUDA_CHUNK_FACTOR, n, rows, False)
    return chunks.rows_per_chunk(kernel.chunk_elems, n, rows)


def _rows_on(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Rows ``x`` as contiguous float32 on ``dev``. To a GPU they travel in their own dtype and
    are widened there: torch's blocking ``.to(cuda, float32)`` widens F16 on the CPU first,
    then copies twice the bytes."""
    return x.to(device=dev).to(dtype=torch.float32).contiguous()


#: bytes of the page-locked buffer each thread copies a GPU's results through
_STAGE_BYTES = 1 << 25
_stage = threading.local()


def _to_host(q: torch.Tensor, out: np.ndarray) -> None:
    """Copy flat uint8 ``q`` into ``out``: directly from the CPU, through a reused page-locked
    buffer from a GPU (``.cpu()`` into fresh pageable memory ran at 1.4 GB/s on an H100)."""
    if q.device.type == "cpu":
        out[:] = q.numpy()
        return
    buf = getattr(_stage, "buf", None)
    if buf is None:
        buf = _stage.buf = torch.empty(_STAGE_BYTES, dtype=torch.uint8, pin_memory=True)
    host = buf.numpy()
    for i in range(0, q.numel(), _STAGE_BYTES):
        part = q[i : i + _STAGE_BYTES]
        k = part.numel()
        buf[:k].copy_(part)
        out[i : i + k] = host[:k]


def _error_sums(
    xc: torch.Tensor, q: torch.Tensor, kernel: type[Kernel], w: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum w·(x − dequantize(q))², sum w·x²)`` in float64 for float32 rows ``xc`` and their
    quantized rows ``q`` (uint8, rows × row bytes) on the same device; ``w`` ``[1, n]`` or None.
    The squares are summed per column first (numba on the CPU, in float64; torch on a GPU, in
    float32), then weighted and summed in float64."""
    y = kernel.dequantize_rows(q, xc.shape[1])
    if compiled.used_for(xc):  # one pass on the CPU
        d2, x2 = compiled.error_sums(xc, y)
    else:
        d = xc - y
        d2 = d.mul_(d).sum(dim=0).double()
        x2 = (xc * xc).sum(dim=0).double()
    if w is not None:
        wd = w.view(-1).double()
        d2.mul_(wd)
        x2.mul_(wd)
    return d2.sum(), x2.sum()


def _total(
    parts: list[tuple[torch.Tensor, torch.Tensor]], dev: torch.device
) -> tuple[float, float]:
    """The chunks' error sums added in chunk order (float64)."""
    num = sum((p[0] for p in parts), torch.zeros((), dtype=torch.float64, device=dev))
    den = sum((p[1] for p in parts), torch.zeros((), dtype=torch.float64, device=dev))
    return float(num), float(den)


def _importance(imatrix: Any, n: int, dev: torch.device) -> torch.Tensor:
    wt = _as_tensor(imatrix, "imatrix")
    if wt.ndim != 1 or wt.shape[0] != n:
        raise KernelError(
            f"imatrix: expected {n} values (one per column), got shape {tuple(wt.shape)}"
        )
    wt = wt.to(device=dev, dtype=torch.float32)
    if not bool(torch.isfinite(wt).all()):
        bad = int((~torch.isfinite(wt)).nonzero()[0, 0])
        raise KernelError(f"imatrix: non-finite value {float(wt[bad])} at column {bad}")
    return wt


def quantize(
    x: Any, t: qtypes.GGMLType, imatrix: Any, dev: torch.device, measure: bool
) -> tuple[np.ndarray, float, float]:
    """:func:`dynq.kernels.quantize_measured` (or, without ``measure``, zeros for the sums) on
    ``dev``, for 2-D ``x`` whose row length is a multiple of the block size."""
    kernel = kernel_for(t)
    xt = _as_tensor(x, "weights")
    rows, n = xt.shape
    w = ew = None
    if imatrix is not None:
        wt = _importance(imatrix, n, dev)
        if kernel.uses_imatrix:
            w = wt.contiguous()
        ew = wt.view(1, n)
    row_bytes = t.row_bytes(n) if n else 0
    out = np.empty(rows * row_bytes, dtype=np.uint8)
    if rows == 0 or n == 0:
        return out, 0.0, 0.0
    step = _chunk_rows(kernel, n, dev, rows)

    def job(r0: int, step: int = step) -> tuple[torch.Tensor, torch.Tensor] | None:
        r1 = min(rows, r0 + step)
        chunk = _rows_on(xt[r0:r1], dev)
        # one pass (min and max propagate NaN) instead of isfinite's three; find it if not
        lo, hi = torch.aminmax(chunk)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            r, c = (int(v) for v in (~torch.isfinite(chunk)).nonzero()[0])
            raise KernelError(
                f"weights: non-finite value {float(chunk[r, c])} at row {r0 + r}, column {c}"
            )
        q = kernel.quantize_rows(chunk, w)
        sums = _error_sums(chunk, q.view(r1 - r0, row_bytes), kernel, ew) if measure else None
        _to_host(q.reshape(-1), out[r0 * row_bytes : r1 * row_bytes])
        return sums

    parts: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    if dev.type != "cpu":
        r0 = 0
        while r0 < rows:
            try:
                parts.append(job(r0, step))
            except torch.cuda.OutOfMemoryError:
                if step == 1:
                    raise
                step = max(1, step // 2)
                torch.cuda.empty_cache()
                continue
            r0 += step
    else:
        parts = _map_cpu(job, range(0, rows, step))
    if not measure:
        return out, 0.0, 0.0
    return (out, *_total([p for p in parts if p is not None], dev))


def dequantize(raw: np.ndarray, t: qtypes.GGMLType, rows: int, n: int) -> np.ndarray:
    """``rows`` rows of ``n`` values from their bytes ``raw`` (uint8 ``[rows, row_bytes]``) →
    float32 ``[rows, n]``, on the CPU."""
    kernel = kernel_for(t)
    data = _from_numpy(raw)
    out = np.empty((rows, n), dtype=np.float32)
    if rows and n:
        step = _chunk_rows(kernel, n, torch.device("cpu"), rows)

        def job(r0: int) -> None:
            r1 = min(rows, r0 + step)
            out[r0:r1] = kernel.dequantize_rows(data[r0:r1], n).numpy()

        _map_cpu(job, range(0, rows, step))
    return out


def weighted_error(
    x: Any, raw: np.ndarray, t: qtypes.GGMLType, imatrix: Any, dev: torch.device
) -> tuple[float, float]:
    """:func:`dynq.kernels.weighted_error` on ``dev`` (``raw``: uint8 ``[rows, row_bytes]``)."""
    kernel = kernel_for(t)
    xt = _as_tensor(x, "weights")
    rows, n = xt.shape
    data = _from_numpy(raw)
    w = None
    if imatrix is not None:
        w = _importance(imatrix, n, dev).view(1, n)
    step = _chunk_rows(kernel, n, dev, rows)

    def job(r0: int) -> tuple[torch.Tensor, torch.Tensor]:
        xc = _rows_on(xt[r0 : r0 + step], dev)
        return _error_sums(xc, data[r0 : r0 + step].to(dev), kernel, w)

    starts = range(0, rows, step)
    parts = _map_cpu(job, starts) if dev.type == "cpu" else [job(r0) for r0 in starts]
    return _total(parts, dev)
