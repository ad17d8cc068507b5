"""The torch-free k-quant kernels (:mod:`dynq.kernels.numba_kquants`): Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K from float32 rows straight to GGUF bytes and back, in numba only.

* the module imports no torch (a child process checks ``sys.modules``);
* the bytes equal ggml's golden bytes for every case, with and without the imatrix;
* the bytes equal the torch reference's (:mod:`dynq.kernels.kquants`, through
  ``REGISTRY[...].quantize_rows``) on random rows of several shapes (chunk borders inside rows
  and rows inside chunks) and on edge rows: zeros, ``-0.0``, constants, one large value, tiny
  and subnormal magnitudes, all negative, sparse; per imatrix mode (none, random, with zeros);
* rows whose sums overflow float32 (values near 1e18 and 1e30) give ggml's bytes: CRC-32s of
  libggml's output recorded here (the torch reference differs from ggml on some of them), and,
  where ``DYNQ_LIBGGML`` names a libggml, a live comparison;
* dequantization equals the torch reference's bit for bit, on quantized rows and on random
  bytes (finite fp16 scales);
* wrong shapes are refused (numba does no bounds checks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from ._util import CASES, golden, inputs

TYPES = ("Q4_K", "Q6_K", "Q3_K", "Q2_K", "Q5_K")
TYPE_SIZE = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
#: where each type's fp16 scales sit in its block (kept finite in the random-bytes test)
FP16_AT = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
NO_W = np.zeros(1, np.float32)


def _nk():  # type: ignore[no-untyped-def]
    from dynq.kernels import numba_kquants

    return numba_kquants


def _quantize(t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    rows, n = x.shape
    out = np.full((rows, n // 256 * TYPE_SIZE[t]), 0xA5, np.uint8)  # every byte is written
    _nk().QUANTIZE[t](np.ascontiguousarray(x), NO_W if w is None else w, w is not None, out)
    return out


def _dequantize(t: str, q: np.ndarray, n: int) -> np.ndarray:
    out = np.full((q.shape[0], n), np.nan, np.float32)
    _nk().DEQUANTIZE[t](q, out)
    return out


def _reference():  # type: ignore[no-untyped-def]
    import dynq.kernels.kquants  # noqa: F401  (registers the k-quant classes)
    from dynq.kernels.base import REGISTRY

    return REGISTRY


def _ref_quantize(t: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    import torch

    k = _reference()[t.lower()]
    return k.quantize_rows(torch.from_numpy(x), None if w is None else torch.from_numpy(w)).numpy()


def _ref_dequantize(t: str, q: np.ndarray, n: int) -> np.ndarray:
    import torch

    return _reference()[t.lower()].dequantize_rows(torch.from_numpy(q), n).numpy()


def _edge_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows for the corner cases: zeros, ±0.0, constants, one large value, tiny and subnormal
    magnitudes, all negative, sparse, heavy tails."""
    g = rng.standard_normal
    r = [np.zeros(n), np.full(n, 0.5), np.full(n, -1e-20), np.full(n, 3.0)]
    v = g(n)
    v[n // 3] = 1e9  # one large value (its cube still a finite float32)
    r.append(v)
    v = g(n)
    v[7] = -3e4
    r.append(v)
    r += [g(n) * 1e-30, g(n) * 1e-40, -np.abs(g(n)), np.abs(g(n)) + 2.0]
    r.append(np.where(rng.random(n) < 0.5, -0.0, g(n)))
    r.append(np.where(rng.random(n) < 0.5, -0.0, 0.0))
    v = np.zeros(n)
    v[::37] = 1.0
    r.append(v)
    v = np.zeros(n)
    v[5::64] = -2.0
    r.append(v)
    r += [g(n) * 1e-6, g(n) * 1e6, g(n) ** 5, rng.standard_t(2, n)]
    v = g(n)
    v[: n // 2] = 0.0  # whole zero super-blocks beside normal ones
    r.append(v)
    return np.array(r, np.float32)


def _importance(mode: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
    if mode == "none":
        return None
    if mode == "random":
        return (rng.random(n) + 0.01).astype(np.float32)
    w = rng.random(n) ** 4  # "zeros": a third of the columns weigh nothing
    w[rng.random(n) < 0.33] = 0.0
    return w.astype(np.float32)


# ---- no torch -----------------------------------------------------------------------------


def test_imports_no_torch() -> None:
    code = "import sys, dynq.kernels.numba_kquants; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tables() -> None:
    nk = _nk()
    assert set(nk.QUANTIZE) == set(nk.DEQUANTIZE) == set(TYPES)


# ---- ggml's golden bytes --------------------------------------------------------------------


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("qtype", TYPES)
def test_golden(qtype: str, case: str, with_imatrix: bool) -> None:
    x = inputs()[case]
    w = inputs()["imatrix"] if with_imatrix else None
    ref = golden(qtype.lower())[f"{case}-imatrix" if with_imatrix else case]
    ours = _quantize(qtype, x, w)
    ts = TYPE_SIZE[qtype]
    differ = np.nonzero((ours.reshape(-1, ts) != ref.reshape(-1, ts)).any(axis=1))[0]
    assert differ.size == 0, f"{qtype} {case}: blocks {differ.tolist()} differ from ggml's"


# ---- the torch reference --------------------------------------------------------------------

SHAPES = [(1, 256), (3, 512), (2, 768), (5, 2560), (33, 256)]  # 5x2560: chunks end mid-row


@pytest.mark.parametrize("mode", ["none", "random", "zeros"])
@pytest.mark.parametrize("qtype", TYPES)
def test_matches_torch_random(qtype: str, mode: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{qtype}-{mode}".encode()))
    for rows, n in SHAPES:
        x = rng.standard_normal((rows, n)) * rng.choice([0.01, 1.0, 30.0], (rows, 1))
        x = x.astype(np.float32)
        w = _importance(mode, n, rng)
        ref = _ref_quantize(qtype, x, w)
        ours = _quantize(qtype, x, w)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert bad.size == 0, f"{qtype} {rows}x{n} {mode}: rows {bad.tolist()} differ"


@pytest.mark.parametrize("mode", ["none", "random", "zeros"])
@pytest.mark.parametrize("qtype", TYPES)
def test_matches_torch_edges(qtype: str, mode: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"edge-{qtype}-{mode}".encode()))
    for n in (256, 512):
        x = _edge_rows(n, rng)
        w = _importance(mode, n, rng)
        ref = _ref_quantize(qtype, x, w)
        ours = _quantize(qtype, x, w)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert bad.size == 0, f"{qtype} n={n} {mode}: edge rows {bad.tolist()} differ"


# ---- rows that overflow float32 on the way: ggml's bytes ----------------------------------------


def _overflow_rows() -> tuple[np.ndarray, np.ndarray]:
    """Two rows of 512 whose squares (1e36) or cubes (1e54) overflow float32, and an importance
    vector; built from integers, so the same floats everywhere."""
    i = np.arange(512, dtype=np.int64)
    base = (((i * 2654435761) % 1000) - 500).astype(np.float32) / np.float32(250.0)
    a = base * np.float32(1e18)
    b = base.copy()
    b[100] = np.float32(1e30)
    b[300:] *= np.float32(-1e-3)
    w = (((i * 40503) % 997) + 1).astype(np.float32) / np.float32(997.0)
    return np.stack([a, b]), w


#: zlib.crc32 of libggml's quantize_<type> bytes for _overflow_rows() (without, with imatrix)
OVERFLOW_CRC = {
    "Q2_K": (0xB660669A, 0xA4D25D00),
    "Q3_K": (0xBA429CDB, 0xF3523FF9),
    "Q4_K": (0x5631369F, 0x12C374DC),
    "Q5_K": (0x2C433EE1, 0x56C3D74A),
    "Q6_K": (0x0A684A02, 0x0EC24A02),
}


@pytest.mark.parametrize("qtype", TYPES)
def test_overflow_rows_match_ggml(qtype: str) -> None:
    x, w = _overflow_rows()
    for i, wi in enumerate((None, w)):
        assert zlib.crc32(_quantize(qtype, x, wi).tobytes()) == OVERFLOW_CRC[qtype][i], i


@pytest.mark.skipif(not os.environ.get("DYNQ_LIBGGML"), reason="DYNQ_LIBGGML is not set")
@pytest.mark.parametrize("qtype", TYPES)
def test_live_ggml(qtype: str) -> None:
    from dynq.kernels.ggml_ref import load

    g = load(os.environ["DYNQ_LIBGGML"])
    rng = np.random.default_rng(zlib.crc32(f"live-{qtype}".encode()))
    n = 1024
    x = np.concatenate(
        [
            rng.standard_normal((16, n)),
            rng.standard_t(2, (8, n)),
            rng.uniform(-1, 1, (8, n)),
            rng.standard_normal((8, n)) * 1e18,
            _edge_rows(n, rng),
            _overflow_rows()[0].repeat(2, axis=1),
        ]
    ).astype(np.float32)
    for mode in ("none", "random", "zeros"):
        w = _importance(mode, n, rng)
        ref = g.quantize(x, qtype, w, threads=1).reshape(x.shape[0], -1)
        ours = _quantize(qtype, x, w)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert bad.size == 0, f"{qtype} {mode}: rows {bad.tolist()} differ from ggml's"


# ---- dequantization -------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_matches_torch(qtype: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"deq-{qtype}".encode()))
    n = 512
    ts = TYPE_SIZE[qtype]
    x = np.concatenate([rng.standard_normal((6, n)), _edge_rows(n, rng)]).astype(np.float32)
    qs = [_quantize(qtype, x, None), _quantize(qtype, x, _importance("random", n, rng))]
    # random bytes, the fp16 scales random finite halves (exponent < 31)
    q = rng.integers(0, 256, (40, n // 256 * ts), dtype=np.uint8)
    blocks = q.reshape(-1, ts)
    for at in FP16_AT[qtype]:
        h = rng.integers(0, 0x7C00, blocks.shape[0]) | (rng.integers(0, 2, blocks.shape[0]) << 15)
        blocks[:, at : at + 2] = h.astype("<u2").view(np.uint8).reshape(-1, 2)
    qs.append(q)
    for q in qs:
        ref = _ref_dequantize(qtype, q, n)
        ours = _dequantize(qtype, q, n)
        bad = np.nonzero((ours.view(np.uint32) != ref.view(np.uint32)).any(axis=1))[0]
        assert bad.size == 0, f"{qtype}: rows {bad.tolist()} differ"


# ---- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", TYPES)
def test_bad_shapes_refused(qtype: str) -> None:
    nk = _nk()
    ts = TYPE_SIZE[qtype]
    x = np.zeros((2, 512), np.float32)
    with pytest.raises(ValueError):
        nk.QUANTIZE[qtype](x, NO_W, False, np.zeros((2, 2 * ts - 1), np.uint8))
    with pytest.raises(ValueError):
        nk.QUANTIZE[qtype](x, NO_W, False, np.zeros((3, 2 * ts), np.uint8))
    with pytest.raises(ValueError):
        nk.QUANTIZE[qtype](x, np.ones(256, np.float32), True, np.zeros((2, 2 * ts), np.uint8))
    with pytest.raises(ValueError):
        nk.QUANTIZE[qtype](np.zeros((2, 500), np.float32), NO_W, False, np.zeros((2, ts), np.uint8))
    with pytest.raises(ValueError):
        nk.DEQUANTIZE[qtype](np.zeros((2, 2 * ts), np.uint8), np.zeros((2, 256), np.float32))
    with pytest.raises(ValueError):
        nk.DEQUANTIZE[qtype](np.zeros((2, 2 * ts), np.uint8), np.zeros((1, 512), np.float32))


@pytest.mark.parametrize("qtype", ["Q6_K"])  # each refusal types the kernel: ~0.4 s
def test_bad_dtypes_refused(qtype: str) -> None:
    from numba.core.errors import TypingError

    nk = _nk()
    ts = TYPE_SIZE[qtype]
    out = np.zeros((1, ts), np.uint8)
    with pytest.raises(TypingError):
        nk.QUANTIZE[qtype](np.zeros((1, 256)), NO_W, False, out)  # float64 rows
    with pytest.raises(TypingError):
        x = np.zeros((1, 512), np.float32)[:, ::2]  # not contiguous
        nk.QUANTIZE[qtype](x, NO_W, False, out)
    with pytest.raises(TypingError):
        nk.DEQUANTIZE[qtype](out, np.zeros((1, 256)))  # float64 out
