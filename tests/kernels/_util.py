"""Shared by the kernel tests: the golden data, the comparison criterion, and the child
processes that run the fused (Triton) kernels under Triton's CPU interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from dynq import kernels, qtypes

#: this process runs the fused kernels under Triton's interpreter (a child of
#: :func:`run_interpreted`); Triton decides at import whether its functions are interpreted
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: which part of its file a child runs (:func:`run_interpreted` with ``parts``)
PART = int(os.environ.get("DYNQ_TEST_PART", "0"))


def run_interpreted(file: str, parts: int = 1) -> None:
    """Run test ``file`` again in ``parts`` child processes side by side, with
    ``TRITON_INTERPRET=1`` (each told its part in ``DYNQ_TEST_PART``), and check that every
    test ran and passed there, none skipped but the one calling this. The children run one
    chunk thread each (``OMP_NUM_THREADS=1``): the interpreter runs one kernel at a time."""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "DYNQ_FUSED": "1",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", file]
    procs = [
        subprocess.Popen(
            cmd,
            env={**env, "DYNQ_TEST_PART": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(parts)
    ]
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, out[-6000:] + err[-2000:]
        assert re.match(r"\d+ passed, 1 skipped in", out.splitlines()[-1]), out[-2000:]


#: where the golden and property tests quantize: DYNQ_TEST_DEVICE=cuda runs them on a GPU
DEVICE = os.environ.get("DYNQ_TEST_DEVICE", "cpu")

DATA = Path(__file__).resolve().parents[1] / "data" / "kernels"

#: every quantized type with golden data, in the order of the task's priorities
TYPES = (
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q6_k",
    "q4_k",
    "q5_k",
    "q3_k",
    "q2_k",
    "iq4_nl",
    "iq4_xs",
    "tq1_0",
    "tq2_0",
    "mxfp4",
    "q1_0",
)
CASES = ("normal", "heavy", "uniform", "edge", "smollm2", "gemma3")


@cache
def inputs() -> dict[str, np.ndarray]:
    with np.load(DATA / "inputs.npz") as z:
        return {k: z[k] for k in z.files}


@cache
def golden(t: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"golden_{t}.npz") as z:
        return {k: z[k] for k in z.files}


def block_errors(x: np.ndarray, q: np.ndarray, t: str, w: np.ndarray | None) -> np.ndarray:
    """Weighted squared error of each block of quantized bytes ``q`` of rows ``x``."""
    T = qtypes.get(t)
    y = kernels.dequantize(q, t, [x.shape[1], x.shape[0]])
    e = (x.astype(np.float64) - y) ** 2
    if w is not None:
        e = e * w.astype(np.float64)
    return e.reshape(-1, T.block_size).sum(axis=1)


def compare(
    x: np.ndarray, ours: np.ndarray, ref: np.ndarray, t: str, w: np.ndarray | None
) -> tuple[int, int]:
    """The acceptance criterion: at least 99.9 % of blocks byte-identical to ggml's, and every
    block that differs with a weighted squared error within 0.01 % of ggml's.

    Returns ``(blocks, identical)``; raises AssertionError with details when it fails.
    """
    T = qtypes.get(t)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape, (ours.shape, ref.shape)
    a = ours.reshape(-1, T.type_size)
    b = ref.reshape(-1, T.type_size)
    differ = (a != b).any(axis=1)
    n, nd = len(a), int(differ.sum())
    if nd:
        eo = block_errors(x, ours, t, w)[differ]
        er = block_errors(x, ref, t, w)[differ]
        worse = eo > er * 1.0001 + 1e-30
        first = int(np.nonzero(differ)[0][0])
        assert (n - nd) / n >= 0.999 and not worse.any(), (
            f"{t}: {nd}/{n} blocks differ from ggml; {int(worse.sum())} with a larger error; "
            f"first differing block {first}: ours {a[first].tolist()} ggml {b[first].tolist()}"
        )
    return n, n - nd


# ----------------------------------------------------------------------------------------------
# the compiled CPU loops (numba_legacy, numba_iquants), called directly


_NO_W = np.zeros(1, np.float32)


def compiled_quantize(table: dict, t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Rows ``x`` through the compiled quantizer of type ``t`` in ``table`` (a module's
    ``QUANTIZE``), into bytes pre-filled with 0xAA (so a byte left unwritten shows)."""
    T = qtypes.get(t)
    out = np.full((x.shape[0], T.row_bytes(x.shape[1])), 0xAA, np.uint8)
    table[T.name](x, _NO_W if w is None else w, w is not None, out)
    return out


def compiled_dequantize(table: dict, t: str, q: np.ndarray, n: int) -> np.ndarray:
    """Bytes ``q`` through the compiled dequantizer of ``t`` in ``table`` (a ``DEQUANTIZE``)."""
    out = np.full((q.shape[0], n), np.nan, np.float32)
    table[qtypes.get(t).name](q, out)
    return out


def check_compiled_golden(
    quantize: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray],
    qtype: str,
    with_imatrix: bool,
) -> None:
    """ggml's bytes, byte for byte, for every golden input."""
    w = inputs()["imatrix"] if with_imatrix else None
    for case in CASES:
        x = inputs()[case]
        ref = golden(qtype)[f"{case}-imatrix" if with_imatrix else case].reshape(x.shape[0], -1)
        ours = quantize(qtype, x, w)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert not bad.size, f"{qtype} {case}: rows {bad.tolist()} differ from ggml's"


def check_no_torch(module: str) -> None:
    """Importing ``module`` in a fresh interpreter leaves torch out."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
