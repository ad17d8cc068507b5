"""The torch-free numba kernels of IQ4_NL and IQ4_XS (dynq.kernels.numba_iquants).

They must write ggml's bytes (the golden data) and the torch classes' bytes (dynq.kernels.iquants,
the reference), and dequantize to the torch classes' floats bit for bit; and the module must not
import torch. One exception, where the torch class is not ggml: an IQ4_XS super-block with a
NaN block scale (float32 overflow in the search's sums) — there the kernel writes ggml's bytes.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from dynq import qtypes

from ._util import (
    check_compiled_golden,
    check_no_torch,
    compiled_dequantize,
    compiled_quantize,
)

pytest.importorskip("numba")

from dynq.kernels import numba_iquants

from .test_numba_legacy import _edge_rows

TYPES = ("iq4_nl", "iq4_xs")


def quantize(t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return compiled_quantize(numba_iquants.QUANTIZE, t, x, w)


def dequantize(t: str, q: np.ndarray, n: int) -> np.ndarray:
    return compiled_dequantize(numba_iquants.DEQUANTIZE, t, q, n)


def test_types() -> None:
    assert set(numba_iquants.QUANTIZE) == {qtypes.get(t).name for t in TYPES}
    assert set(numba_iquants.DEQUANTIZE) == set(numba_iquants.QUANTIZE)


def test_no_torch() -> None:
    check_no_torch("dynq.kernels.numba_iquants")


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES)
def test_golden(qtype: str, with_imatrix: bool) -> None:
    """ggml's bytes, byte for byte, for every golden input."""
    check_compiled_golden(quantize, qtype, with_imatrix)


# ---- against the torch classes ---------------------------------------------------------------

#: rows of _edge_rows with values whose cubes overflow float32 (1e18, 3e30): without an
#: imatrix a block's sums reach inf and its scale NaN, which ggml's IQ4_XS super-block pass skips
#: (`fabsf(d) > amax_scale` is false) and the torch class does not
NAN_SCALE_ROWS = (10, 11)


def _xs_rows(n: int) -> np.ndarray:
    """Rows for IQ4_XS's super-block pass (n a multiple of 256): block scales of opposite signs
    and equal size (l = -32 and +32 clamped to 31), and of many sizes."""
    rng = np.random.default_rng(5)
    i = np.arange(n)
    blk = i // 32
    z = rng.standard_normal(n)
    rows = [
        np.where(blk % 2 == 0, 0.5, -0.5),
        np.where(blk % 2 == 0, -0.5, 0.5),
        z * np.exp2(blk % 8 - 4.0),
        z * np.exp2(-3.0 * (blk % 8)),  # small scales: l rounds to 0
        np.where(blk % 8 == 3, z, 0.0),  # one non-zero block per super-block
        np.where(blk % 8 == 3, z * 1e-16, z),  # one block under GROUP_MAX_EPS
    ]
    return np.array(rows, dtype=np.float32)


def _inputs(qtype: str) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    if qtype == "iq4_nl":
        xs = [
            rng.standard_normal((3, 32)),
            rng.standard_normal((5, 96)) * 0.02,
            rng.standard_t(2, (7, 544)) * 0.05,
            rng.uniform(-1, 1, (2, 2048)),
            _edge_rows(256),
            _edge_rows(64),
        ]
    else:
        xs = [
            rng.standard_normal((3, 256)),  # fewer blocks than a tile
            rng.standard_normal((5, 512)) * 0.02,
            rng.standard_t(2, (7, 768)) * 0.05,
            rng.uniform(-1, 1, (2, 2048)),
            _edge_rows(256),
            _edge_rows(512),
            _xs_rows(512),
        ]
    return [np.ascontiguousarray(x, dtype=np.float32) for x in xs]


def _imatrices(n: int) -> list[np.ndarray | None]:
    rng = np.random.default_rng(n)
    w = rng.lognormal(0, 2, n).astype(np.float32)
    w0 = w.copy()
    w0[::5] = 0
    return [None, w, w0]


@pytest.fixture(scope="module")
def torch_ref():  # type: ignore[no-untyped-def]
    """The torch classes' quantize_rows / dequantize_rows (numpy in, numpy out)."""
    torch = pytest.importorskip("torch")

    from dynq import kernels

    def quantize_rows(t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        wt = None if w is None else torch.from_numpy(w)
        return kernels.kernel_for(t).quantize_rows(torch.from_numpy(x), wt).numpy()

    def dequantize_rows(t: str, q: np.ndarray, n: int) -> np.ndarray:
        return kernels.kernel_for(t).dequantize_rows(torch.from_numpy(q), n).numpy()

    return quantize_rows, dequantize_rows


@pytest.mark.parametrize("qtype", TYPES)
def test_torch_reference(qtype: str, torch_ref) -> None:  # type: ignore[no-untyped-def]
    """Byte-identical to the torch class on random and edge rows, with and without an imatrix
    (zeros in it too), and the dequantized floats bit for bit."""
    quantize_rows, dequantize_rows = torch_ref
    edges = {_edge_rows(256).tobytes(), _edge_rows(512).tobytes()}
    for x in _inputs(qtype):
        n = x.shape[1]
        for w in _imatrices(n):
            ours = quantize(qtype, x, w)
            ref = quantize_rows(qtype, x, w)
            differ = (ours != ref).any(axis=1)
            if qtype == "iq4_xs" and w is None and x.tobytes() in edges:
                # where the torch class is not ggml (test_xs_nan_scales holds these to ggml)
                differ[list(NAN_SCALE_ROWS)] = False
            bad = np.nonzero(differ)[0]
            assert not bad.size, f"{qtype} {x.shape} imatrix={w is not None}: rows {bad.tolist()}"
            y = dequantize(qtype, ours, n)
            yr = dequantize_rows(qtype, ours, n)
            assert np.array_equal(y.view(np.uint32), yr.view(np.uint32)), (qtype, x.shape)


#: crc32 of ggml's IQ4_XS bytes (quantize_iq4_xs, no imatrix) of _edge_rows(256)'s NAN_SCALE_ROWS
XS_NAN_SCALE_CRC = (2262224527, 1419512082)


def test_xs_nan_scales() -> None:
    """IQ4_XS super-blocks with a NaN block scale: ggml's bytes (pinned; and against libggml
    itself where DYNQ_LIBGGML is set), the NaN block quantized with l = 0."""
    x = _edge_rows(256)[list(NAN_SCALE_ROWS)]
    ours = quantize("iq4_xs", x, None)
    assert tuple(zlib.crc32(r.tobytes()) for r in ours) == XS_NAN_SCALE_CRC
    lib = os.environ.get("DYNQ_LIBGGML")
    if lib:
        from dynq.kernels.ggml_ref import load

        for n in (256, 512, 2048):
            x = _edge_rows(n)
            ref = load(lib).quantize(x, "iq4_xs", None).reshape(x.shape[0], -1)
            assert np.array_equal(quantize("iq4_xs", x, None), ref), n


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_any_bytes(qtype: str, torch_ref) -> None:  # type: ignore[no-untyped-def]
    """Dequantizing arbitrary bytes (fp16 scales of every kind: every pattern for IQ4_NL, a
    spread with NaN, inf, zeros and subnormals for IQ4_XS) gives the torch class's floats bit
    for bit (NaNs compared as NaN)."""
    _, dequantize_rows = torch_ref
    T = qtypes.get(qtype)
    rng = np.random.default_rng(3)
    if qtype == "iq4_nl":
        h = np.arange(65536, dtype=np.uint16)
    else:
        special = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01]
        h = np.concatenate([rng.integers(0, 65536, 4096 - len(special)), special]).astype(np.uint16)
    q = rng.integers(0, 256, (h.size // 32, 32 * T.type_size), dtype=np.uint8)
    q.reshape(-1, T.type_size)[:, 0:2] = h.reshape(-1, 1).view(np.uint8)
    n = 32 * T.block_size
    y = dequantize(qtype, q, n)
    yr = dequantize_rows(qtype, q, n)
    nan = np.isnan(yr)
    assert np.array_equal(np.isnan(y), nan)
    assert np.array_equal(y[~nan].view(np.uint32), yr[~nan].view(np.uint32))


def test_iq4_best_index() -> None:
    """iq4_index / iq4_value (midpoint thresholds) are ggml's best_index_int8(16,
    kvalues_iq4nl, v) and its value, around every threshold and on a spread of values."""
    from numba import njit

    kv = np.array(numba_iquants.KVALUES_IQ4NL, dtype=np.float32)

    def best_index(x: np.float32) -> int:  # the C, in float32
        if x <= kv[0]:
            return 0
        if x >= kv[15]:
            return 15
        ml, mu = 0, 15
        while mu - ml > 1:
            mav = (ml + mu) // 2
            if x < kv[mav]:
                mu = mav
            else:
                ml = mav
        return mu - 1 if np.float32(x - kv[mu - 1]) < np.float32(kv[mu] - x) else mu

    @njit
    def ours(v, idx, val):
        for i in range(v.shape[0]):
            idx[i] = numba_iquants.iq4_index(v[i])
            val[i] = numba_iquants.iq4_value(v[i])

    near = []
    for start in ((kv[1:] + kv[:-1]) / 2, kv):  # 8 floats on either side of each midpoint
        for to in (np.float32(np.inf), np.float32(-np.inf)):  # and of each value
            a = start
            for _ in range(8):
                near.append(a)
                a = np.nextafter(a, to)
    v = np.concatenate(near)
    rng = np.random.default_rng(1)
    v = np.concatenate([v, rng.uniform(-140, 140, 4000), rng.standard_normal(1000) * 1e-3])
    v = np.concatenate([v, [0.0, -0.0, np.inf, -np.inf, 1e30, -1e30]]).astype(np.float32)
    idx = np.empty(v.shape, np.int64)
    val = np.empty(v.shape, np.float32)
    ours(v, idx, val)
    ref = np.array([best_index(x) for x in v])
    assert np.array_equal(idx, ref)
    assert np.array_equal(val, kv[ref])
