"""dynq's bundled quantization kernels: ggml's reference quantizers, byte for byte, in torch.

One implementation serves CPU and CUDA. Public API:

* :func:`quantize` — float rows → the bytes GGUF stores for the tensor;
* :func:`dequantize` — those bytes → float32 (as ``gguf.quants.dequantize``);
* :func:`weighted_error` — how far quantized bytes are from the floats they came from;
* :func:`quantize_measured` — both at once, each chunk measured where it was quantized;
* :func:`supported_types` — the type names (as gguf spells them, e.g. ``"Q4_K"``) handled here.

Each type is a small class in one of the family modules (``floats``, ``legacy``, ``kquants``,
``iquants``, ``ternary``, ``special``) registered through :class:`dynq.kernels.base.Kernel`.
Tensors are processed in chunks of whole rows, so memory stays bounded for any tensor size.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from gguf.constants import GGMLQuantizationType

from dynq import qtypes
from dynq.errors import DynqError, KernelError
from dynq.kernels import (  # noqa: F401
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

__all__ = [
    "dequantize",
    "kernel_for",
    "quantize",
    "quantize_measured",
    "supported_types",
    "weighted_error",
]

#: how many times more elements a chunk holds on a GPU than on the CPU: the kernels are many
#: small elementwise ops, so a GPU needs big chunks to be busy (bench/kernels.py: Q4_K with an
#: imatrix went from 147 to 1041 MB/s on an H100 from 16 to 256). A chunk that does not fit in
#: the GPU's memory is halved until it does.
_CUDA_CHUNK_FACTOR = 256


def supported_types() -> frozenset[str]:
    """Names (``"Q4_K"``, ``"F16"``, …) of the types :func:`quantize` and :func:`dequantize` do."""
    return frozenset(k.qtype.name for k in REGISTRY.values())


def _resolve_type(qtype: qtypes.GGMLType | GGMLQuantizationType | str) -> qtypes.GGMLType:
    if isinstance(qtype, qtypes.GGMLType):
        return qtype
    try:
        return qtypes.get(qtype)
    except DynqError as e:
        raise KernelError(str(e)) from None


def kernel_for(qtype: qtypes.GGMLType | GGMLQuantizationType | str) -> type[Kernel]:
    """The kernel class for a type; KernelError when dynq has none."""
    t = _resolve_type(qtype)
    k = REGISTRY.get(t.key)
    if k is None:
        raise KernelError(f"{t.name} is not yet supported by dynq's kernels")
    return k


def _device(device: str | torch.device | None, x: Any) -> torch.device:
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


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """torch intra-op threads set to 1 while any quantize() runs its chunk threads (restored by
    the last one out, so concurrent calls do not leave torch single-threaded)."""
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


def _chunk_rows(kernel: type[Kernel], n: int, dev: torch.device, rows: int) -> int:
    """Rows per chunk: the kernel's chunk size on the CPU (its CUDA multiple on a GPU). On the
    CPU a tensor smaller than that many chunks is split between the chunk threads anyway:
    in a small model most tensors fit one chunk, which left the second core idle."""
    elems = kernel.chunk_elems * (_CUDA_CHUNK_FACTOR if dev.type == "cuda" else 1)
    step = max(1, elems // max(n, 1))
    if dev.type == "cpu":
        step = min(step, max(1, -(-rows // _cpu_threads())))
    return step


def _cpu_threads() -> int:
    """How many chunk threads run at once: torch's thread setting (as it was outside dynq's
    own single-threaded sections)."""
    with _threads_lock:
        return _threads_saved if _threads_users else torch.get_num_threads()


def _map_cpu_chunks(job: Callable[[int], T], starts: Sequence[int]) -> list[T]:
    """``job`` over the chunks starting at ``starts``, in order, on the CPU.

    Every op runs on one thread: the kernels run thousands of small and mid-sized ops, for
    which intra-op threading costs more in synchronisation than it gains, and on a busy machine
    each parallel region can wait milliseconds for its second thread (measured: a 7 ms call
    taking up to 3.8 s; a dequantization 45 times slower). Chunks run in parallel Python threads
    instead (torch releases the GIL inside ops), as many as torch's thread setting.
    """
    threads = _cpu_threads()
    workers = min(threads, len(starts))
    with _single_threaded_ops():
        if workers <= 1:
            return [job(r0) for r0 in starts]
        return list(_pool(threads).map(job, starts))


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` chunk threads, started once: a build makes hundreds
    of calls, and starting fresh threads for each cost 0.8 s of a 7 s build (SmolLM2, 2 cores).
    Calls from several threads at once share it (their chunks queue)."""
    with _threads_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="dynq-chunk")
        return pool


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


def quantize(
    x: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any = None,
    device: str | torch.device | None = None,
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
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, float, float]:
    """:func:`quantize`, and :func:`weighted_error` of its result: ``(bytes, sum w·(x − q)²,
    sum w·x²)``, with ``w`` the imatrix (1 without one; it weights the error even for a type
    whose quantizer ignores it). Each chunk is dequantized and measured where it was quantized,
    while its rows are still there: a build on a GPU copies each tensor there once, not twice.
    """
    return _quantize(x, qtype, imatrix, device, measure=True)


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


def _quantize(
    x: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any,
    device: str | torch.device | None,
    measure: bool,
) -> tuple[np.ndarray, float, float]:
    t = _resolve_type(qtype)
    kernel = kernel_for(t)
    xt = _as_tensor(x, "weights")
    if xt.ndim != 2:
        raise KernelError(
            f"weights: expected a 2-D array (rows × row length), got shape {tuple(xt.shape)}"
        )
    rows, n = xt.shape
    if n % t.block_size:
        raise KernelError(
            f"{t.name}: row length {n} is not a multiple of its block size {t.block_size}"
        )
    dev = _device(device, x)
    w = ew = None
    if imatrix is not None:
        wt = _as_tensor(imatrix, "imatrix")
        if wt.ndim != 1 or wt.shape[0] != n:
            raise KernelError(
                f"imatrix: expected {n} values (one per column), got shape {tuple(wt.shape)}"
            )
        wt = wt.to(device=dev, dtype=torch.float32)
        if not bool(torch.isfinite(wt).all()):
            bad = int((~torch.isfinite(wt)).nonzero()[0, 0])
            raise KernelError(f"imatrix: non-finite value {float(wt[bad])} at column {bad}")
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
        parts = _map_cpu_chunks(job, range(0, rows, step))
    if not measure:
        return out, 0.0, 0.0
    return (out, *_total([p for p in parts if p is not None], dev))


def dequantize(
    data: Any, qtype: qtypes.GGMLType | GGMLQuantizationType | str, shape: Sequence[int]
) -> np.ndarray:
    """GGUF bytes of a tensor of GGUF shape ``shape`` (``shape[0]`` = row length) → float32.

    The result has numpy's order, ``tuple(reversed(shape))``, like ``gguf.quants.dequantize``.
    """
    t = _resolve_type(qtype)
    kernel = kernel_for(t)
    shape = [int(s) for s in shape]
    if not shape or any(s < 0 for s in shape):
        raise KernelError(f"{t.name}: bad tensor shape {shape}")
    n = shape[0]
    if n % t.block_size:
        raise KernelError(
            f"{t.name}: row length {n} is not a multiple of its block size {t.block_size}"
        )
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    elif isinstance(data, torch.Tensor):
        raw = data.detach().reshape(-1).cpu().contiguous().view(torch.uint8)
    else:
        raw = _from_numpy(np.ascontiguousarray(np.asarray(data)).reshape(-1).view(np.uint8))
    rows = 1
    for s in shape[1:]:
        rows *= s
    row_bytes = t.row_bytes(n)
    if raw.numel() != rows * row_bytes:
        raise KernelError(
            f"{t.name}: {raw.numel()} bytes do not hold shape {shape} "
            f"({rows * row_bytes} bytes expected)"
        )
    out = np.empty((rows, n), dtype=np.float32)
    if rows and n:
        step = _chunk_rows(kernel, n, torch.device("cpu"), rows)
        raw2 = raw.reshape(rows, row_bytes)

        def job(r0: int) -> None:
            r1 = min(rows, r0 + step)
            out[r0:r1] = kernel.dequantize_rows(raw2[r0:r1], n).numpy()

        _map_cpu_chunks(job, range(0, rows, step))
    return out.reshape(tuple(reversed(shape)))


def weighted_error(
    x: Any,
    data: Any,
    qtype: qtypes.GGMLType | GGMLQuantizationType | str,
    imatrix: Any = None,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """``(sum w·(x − dequantize(data))², sum w·x²)`` over 2-D ``x`` (rows × row length) and its
    quantized bytes ``data``, with ``w`` the per-column importance (1 without an imatrix).

    Summed in float64, chunk by chunk on ``device`` (the bytes are dequantized there), so a build
    on a GPU does not pay for a CPU dequantization per tensor.
    """
    t = _resolve_type(qtype)
    kernel = kernel_for(t)
    xt = _as_tensor(x, "weights")
    if xt.ndim != 2:
        raise KernelError(f"weights: expected a 2-D array, got shape {tuple(xt.shape)}")
    rows, n = xt.shape
    dev = _device(device, x)
    row_bytes = t.row_bytes(n)
    raw = _from_numpy(np.ascontiguousarray(np.asarray(data)).reshape(-1).view(np.uint8))
    if raw.numel() != rows * row_bytes:
        raise KernelError(f"{t.name}: {raw.numel()} bytes do not hold {rows} rows of {n}")
    raw = raw.reshape(rows, row_bytes)
    w = None
    if imatrix is not None:
        w = _as_tensor(imatrix, "imatrix").to(device=dev, dtype=torch.float32).view(1, n)
    step = _chunk_rows(kernel, n, dev, rows)

    def job(r0: int) -> tuple[torch.Tensor, torch.Tensor]:
        xc = _rows_on(xt[r0 : r0 + step], dev)
        return _error_sums(xc, raw[r0 : r0 + step].to(dev), kernel, w)

    starts = range(0, rows, step)
    parts = _map_cpu_chunks(job, starts) if dev.type == "cpu" else [job(r0) for r0 in starts]
    return _total(parts, dev)
