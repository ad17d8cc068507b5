"""Live comparison with libggml on larger random tensors (local only: set DYNQ_LIBGGML to a
libggml-base.so or its directory; skipped otherwise, e.g. in CI).

    DYNQ_LIBGGML=/path/to/llama-build/bin pytest tests/kernels/test_live_ggml.py

DYNQ_LIVE_ROWS (default 64) sets the rows of each 2048-column tensor; DYNQ_LIVE_DEVICE
("cpu"/"cuda") where dynq runs.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from dynq import kernels

from ._util import TYPES, compare

LIB = os.environ.get("DYNQ_LIBGGML")
pytestmark = pytest.mark.skipif(not LIB, reason="DYNQ_LIBGGML is not set")

ROWS = int(os.environ.get("DYNQ_LIVE_ROWS", "64"))
COLS = 2048
DEVICE = os.environ.get("DYNQ_LIVE_DEVICE", "cpu")
DISTS = ("normal", "heavy", "uniform", "positive")


@pytest.fixture(scope="module")
def ggml():
    from dynq.kernels.ggml_ref import load

    return load(LIB)


def _data(dist: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dist == "normal":
        return rng.standard_normal((ROWS, COLS)).astype(np.float32)
    if dist == "heavy":
        x = rng.standard_t(2, (ROWS, COLS)) * 0.02
        x.reshape(-1)[rng.integers(0, x.size, ROWS)] *= 50
        return x.astype(np.float32)
    if dist == "uniform":
        return rng.uniform(-1, 1, (ROWS, COLS)).astype(np.float32)
    return rng.random((ROWS, COLS)).astype(np.float32)


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", (*TYPES, "f16", "bf16"))
def test_live(ggml, qtype: str, dist: str, with_imatrix: bool) -> None:
    seed = zlib.crc32(f"{qtype}/{dist}/{with_imatrix}".encode())
    x = _data(dist, seed)
    w = None
    if with_imatrix:
        w = np.exp(np.random.default_rng(seed + 1).standard_normal(COLS) * 1.5).astype(np.float32)
    ref = ggml.quantize(x, qtype, w)
    ours = kernels.quantize(x, qtype, w, device=DEVICE)
    compare(x, ours, ref, qtype, w)
