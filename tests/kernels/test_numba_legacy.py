"""The torch-free numba kernels of the 32-element block types (dynq.kernels.numba_legacy).

They must write ggml's bytes (the golden data) and the torch classes' bytes (dynq.kernels.legacy,
the reference, on the CPU and on their pure-torch path), and dequantize to the torch classes'
floats bit for bit; and the module must not import torch. (IQ4_NL, which shares the tiles:
test_numba_iquants.py.)
"""

from __future__ import annotations

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

from dynq.kernels import numba_legacy

TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def quantize(t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return compiled_quantize(numba_legacy.QUANTIZE, t, x, w)


def dequantize(t: str, q: np.ndarray, n: int) -> np.ndarray:
    return compiled_dequantize(numba_legacy.DEQUANTIZE, t, q, n)


def test_types() -> None:
    assert set(numba_legacy.QUANTIZE) == {qtypes.get(t).name for t in TYPES}
    assert set(numba_legacy.DEQUANTIZE) == set(numba_legacy.QUANTIZE)


def test_no_torch() -> None:
    check_no_torch("dynq.kernels.numba_legacy")


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES)
def test_golden(qtype: str, with_imatrix: bool) -> None:
    """ggml's bytes, byte for byte, for every golden input."""
    check_compiled_golden(quantize, qtype, with_imatrix)


# ---- against the torch classes ---------------------------------------------------------------


def _edge_rows(n: int) -> np.ndarray:
    """Rows that reach the kernels' corners (n a multiple of 32)."""
    rng = np.random.default_rng(7)
    z = rng.standard_normal(n).astype(np.float32)
    rows = [
        np.zeros(n),
        np.full(n, 0.5),
        np.full(n, -3.0),
        np.where(np.arange(n) % 3 == 0, -0.0, 0.0),  # -0.0 / +0.0 mixes
        np.where(np.arange(n) % 5 == 1, 0.0, np.abs(z)),  # non-negative with zeros: min = +-0
        np.where(np.arange(n) % 4 == 0, -0.0, np.abs(z)),
        -np.abs(z),  # negative only
        np.abs(z) + 1,  # positive only
        z * 1e-30,  # tiny
        z * 1e-40,  # float32 subnormals
        np.where(np.arange(n) == 5, 1e18, z),  # one huge value (its square still finite)
        np.where(np.arange(n) == n - 3, 3e30, z * 1e-3),  # one huge value, square overflows
        np.where(np.arange(n) % 32 == 7, -70000.0, z),  # fp16 overflow of the scale
        np.where(np.arange(n) % 7 == 0, z * 1e4, z * 1e-4),
        np.round(z * 4) / 4,  # many ties
        np.where(np.arange(n) % 32 < 31, 0.0, 1.0),  # one value per block
        np.where(np.arange(n) % 32 < 31, 0.0, -2e-7),
        np.tile(np.float32([1, -1]), n // 2),
    ]
    return np.array(rows, dtype=np.float32)


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    xs = [
        rng.standard_normal((3, 32)),
        rng.standard_normal((5, 96)) * 0.02,
        rng.standard_t(2, (7, 544)) * 0.05,
        rng.uniform(-1, 1, (2, 2048)),
        _edge_rows(256),
        _edge_rows(64),
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
    """The torch classes' quantize_rows / dequantize_rows (numpy in, numpy out); with
    ``pure=True`` on the pure-torch path (not the numba searches of numba_kernels)."""
    torch = pytest.importorskip("torch")

    from dynq.kernels import base, compiled, fused, legacy  # noqa: F401

    def quantize_rows(t: str, x: np.ndarray, w: np.ndarray | None, pure: bool = False):
        k = base.REGISTRY[t]
        wt = None if w is None else torch.from_numpy(w)
        if not pure:
            return k.quantize_rows(torch.from_numpy(x), wt).numpy()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(compiled, "used_for", lambda _t: False)
            m.setattr(fused, "used_for", lambda _t: False)
            return k.quantize_rows(torch.from_numpy(x), wt).numpy()

    def dequantize_rows(t: str, q: np.ndarray, n: int) -> np.ndarray:
        return base.REGISTRY[t].dequantize_rows(torch.from_numpy(q), n).numpy()

    return quantize_rows, dequantize_rows


@pytest.mark.parametrize("qtype", TYPES)
def test_torch_reference(qtype: str, torch_ref) -> None:  # type: ignore[no-untyped-def]
    """Byte-identical to the torch class on random and edge rows, with and without an imatrix
    (zeros in it too), and the dequantized floats bit for bit."""
    quantize_rows, dequantize_rows = torch_ref
    for x in _inputs():
        n = x.shape[1]
        for w in _imatrices(n):
            ours = quantize(qtype, x, w)
            ref = quantize_rows(qtype, x, w)
            bad = np.nonzero((ours != ref).any(axis=1))[0]
            assert not bad.size, f"{qtype} {x.shape} imatrix={w is not None}: rows {bad.tolist()}"
            y = dequantize(qtype, ours, n)
            yr = dequantize_rows(qtype, ours, n)
            assert np.array_equal(y.view(np.uint32), yr.view(np.uint32)), (qtype, x.shape)


@pytest.mark.parametrize("qtype", TYPES)
def test_pure_torch_reference(qtype: str, torch_ref) -> None:  # type: ignore[no-untyped-def]
    """The same on the torch classes' pure-torch path (the searches in torch, not numba)."""
    quantize_rows, _ = torch_ref
    x = _edge_rows(64)
    for w in _imatrices(x.shape[1])[0::2]:  # none, and one with zeros
        ours = quantize(qtype, x, w)
        ref = quantize_rows(qtype, x, w, pure=True)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert not bad.size, f"{qtype} imatrix={w is not None}: rows {bad.tolist()}"


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_any_bytes(qtype: str, torch_ref) -> None:  # type: ignore[no-untyped-def]
    """Dequantizing arbitrary bytes (every fp16 pattern for the scales, NaN and inf included)
    gives the torch class's floats bit for bit (NaNs compared as NaN)."""
    _, dequantize_rows = torch_ref
    T = qtypes.get(qtype)
    rng = np.random.default_rng(3)
    q = rng.integers(0, 256, (64, 32 * T.type_size), dtype=np.uint8)
    # the first half of every block: every fp16 bit pattern once over the array
    blocks = q.reshape(-1, T.type_size)
    h = np.arange(blocks.shape[0] * (1 + (T.name in ("Q4_1", "Q5_1"))), dtype=np.uint16)
    h = (h * 37) & 0xFFFF
    if T.name in ("Q4_1", "Q5_1"):
        blocks[:, 0:4] = h.reshape(-1, 2).view(np.uint8).reshape(-1, 4)
    else:
        blocks[:, 0:2] = h.reshape(-1, 1).view(np.uint8)
    n = 32 * 32
    y = dequantize(qtype, q, n)
    yr = dequantize_rows(qtype, q, n)
    nan = np.isnan(yr)
    assert np.array_equal(np.isnan(y), nan)
    assert np.array_equal(y[~nan].view(np.uint32), yr[~nan].view(np.uint32))
