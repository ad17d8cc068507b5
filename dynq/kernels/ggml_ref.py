"""A ctypes binding to libggml's ``ggml_quantize_chunk``: the reference dynq's kernels are tested
and benchmarked against.

Never used by dynq at run time. The golden-data script (``tests/data/kernels/make_golden.py``),
the local-only live tests and ``bench/kernels.py`` load it from a path given on their command line
or in the environment variable ``DYNQ_LIBGGML`` (a ``libggml-base.so`` or the directory holding
it).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from dynq import qtypes
from dynq.errors import KernelError

__all__ = ["GGML", "load"]

_LIB_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll")


def _resolve(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        path = os.environ.get("DYNQ_LIBGGML")
    if not path:
        raise KernelError("no libggml given: pass its path or set DYNQ_LIBGGML")
    p = Path(path)
    if p.is_dir():
        for name in _LIB_NAMES:
            if (p / name).exists():
                return p / name
        raise KernelError(f"{p}: no {' / '.join(_LIB_NAMES)} in this directory")
    if not p.exists():
        raise KernelError(f"{p}: no such libggml")
    return p


class GGML:
    """ggml's quantizers, called through ctypes (which releases the GIL during the call)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = _resolve(path)
        lib = ctypes.CDLL(str(self.path))
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        lib.ggml_quantize_init.restype = None
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        self._lib = lib

    def requires_imatrix(self, qtype: qtypes.GGMLType | str) -> bool:
        t = qtypes.get(qtype) if isinstance(qtype, str) else qtype
        return bool(self._lib.ggml_quantize_requires_imatrix(int(t.gguf)))

    def quantize(
        self,
        x: np.ndarray,
        qtype: qtypes.GGMLType | str,
        imatrix: np.ndarray | None = None,
        threads: int = 1,
    ) -> np.ndarray:
        """Quantize the rows of 2-D float32 ``x`` with ggml; ``threads`` threads split the rows."""
        t = qtypes.get(qtype) if isinstance(qtype, str) else qtype
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise KernelError(f"expected a 2-D array, got shape {x.shape}")
        nrows, n = x.shape
        row_bytes = t.row_bytes(n)
        out = np.zeros(nrows * row_bytes, dtype=np.uint8)
        qw = None
        if imatrix is not None:
            qw = np.ascontiguousarray(imatrix, dtype=np.float32)
        self._lib.ggml_quantize_init(int(t.gguf))
        qw_ptr = qw.ctypes.data if qw is not None else None

        def work(r0: int, r1: int) -> None:
            if r1 <= r0:
                return
            # start is an element offset into src; dst gets start_row * row_size added by ggml
            self._lib.ggml_quantize_chunk(
                int(t.gguf), x.ctypes.data, out.ctypes.data, r0 * n, r1 - r0, n, qw_ptr
            )

        threads = max(1, min(threads, nrows))
        if threads == 1:
            work(0, nrows)
        else:
            bounds = [nrows * i // threads for i in range(threads + 1)]
            ts = [
                threading.Thread(target=work, args=(bounds[i], bounds[i + 1]))
                for i in range(threads)
            ]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
        return out


def load(path: str | os.PathLike[str] | None = None) -> GGML:
    """Load libggml from ``path`` (file or directory) or from ``$DYNQ_LIBGGML``."""
    return GGML(path)
