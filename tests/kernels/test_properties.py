"""Round-trip properties of every type (hypothesis): zeros, constants, huge and tiny magnitudes,
float32 subnormals, a single outlier per block. Quantize → dequantize must stay finite and
within a per-type bound of each block's largest magnitude."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynq import kernels, qtypes

from ._util import DEVICE, TYPES

#: max |x - dequantize(quantize(x))| over a block, as a fraction of the block's max |x|, for
#: well-scaled blocks without an imatrix (an imatrix may trade some elements for others)
REL_BOUND = {
    "q8_0": 0.01,
    "q4_0": 0.13,
    "q4_1": 0.08,
    "q5_0": 0.07,
    "q5_1": 0.04,
    "q6_k": 0.05,
    "q4_k": 0.2,
    "q5_k": 0.1,
    "q3_k": 0.4,
    "q2_k": 0.6,
    "iq4_nl": 0.15,
    "iq4_xs": 0.15,
    "tq1_0": 0.51,
    "tq2_0": 0.51,
    "mxfp4": 0.3,
    "q1_0": 2.0,
    "f16": 0.001,
    "bf16": 0.004,
    "f32": 0.0,
}
ALL = (*TYPES, "f16", "bf16", "f32")
N = 256  # one super-block


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    """Two rows of 256, built from 32-blocks of different kinds."""
    out = []
    for _ in range(2 * N // 32):
        kind = draw(st.sampled_from(["zeros", "const", "normal", "outlier", "subnormal"]))
        seed = draw(st.integers(0, 2**32 - 1))
        scale = np.float32(10.0 ** draw(st.floats(-9, 4)))
        rng = np.random.default_rng(seed)
        if kind == "zeros":
            b = np.zeros(32, np.float32)
        elif kind == "const":
            b = np.full(32, scale * draw(st.sampled_from([-1.0, 1.0])), np.float32)
        elif kind == "normal":
            b = (rng.standard_normal(32) * scale).astype(np.float32)
        elif kind == "outlier":
            b = (rng.standard_normal(32) * scale * np.float32(1e-3)).astype(np.float32)
            b[rng.integers(32)] = scale * draw(st.sampled_from([-1.0, 1.0]))
        else:
            b = (rng.standard_normal(32) * 1e-40).astype(np.float32)
        out.append(b)
    return np.concatenate(out).reshape(2, N)


def _check(qtype: str, x: np.ndarray, w: np.ndarray | None) -> None:
    T = qtypes.get(qtype)
    q = kernels.quantize(x, qtype, w, device=DEVICE)
    assert q.shape == (2 * T.row_bytes(N),)
    y = kernels.dequantize(q, qtype, [N, 2])
    assert np.isfinite(y).all()
    xb = x.reshape(-1, max(T.block_size, 32)).astype(np.float64)
    yb = y.reshape(xb.shape).astype(np.float64)
    amax = np.abs(xb).max(axis=1)
    err = np.abs(xb - yb).max(axis=1)
    # all-zero blocks come back as zeros
    assert (err[amax == 0] == 0).all()
    # nothing blows up: never further off than 2x the block's magnitude (scales that underflow
    # fp16 give zeros, an error of 1x), plus the spacing of fp16 subnormal scales and mins
    assert (err <= 2.0 * amax + 1e-6).all(), (err / np.maximum(amax, 1e-38)).max()
    if w is None:
        # well-scaled blocks (fp16 scales neither underflow nor lose precision): the type's bound
        ok = amax > 1e-2
        bound = REL_BOUND[qtype] * amax + 1e-6 * amax
        bad = ok & (err > bound)
        assert not bad.any(), (qtype, (err / np.maximum(amax, 1e-38))[bad].max())


@pytest.mark.parametrize("qtype", ALL)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows())
def test_round_trip(qtype: str, x: np.ndarray) -> None:
    _check(qtype, x, None)


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows(), wseed=st.integers(0, 2**32 - 1))
def test_round_trip_imatrix(qtype: str, x: np.ndarray, wseed: int) -> None:
    w = np.exp(np.random.default_rng(wseed).standard_normal(N) * 1.5).astype(np.float32)
    _check(qtype, x, w)


@pytest.mark.parametrize("qtype", ALL)
def test_zero_and_constant_rows(qtype: str) -> None:
    x = np.zeros((2, N), np.float32)
    y = kernels.dequantize(kernels.quantize(x, qtype, device=DEVICE), qtype, [N, 2])
    assert not y.any()
    x = np.full((2, N), 0.75, np.float32)
    x[1] = -2.5
    y = kernels.dequantize(kernels.quantize(x, qtype, device=DEVICE), qtype, [N, 2])
    assert np.abs(y - x).max() <= REL_BOUND[qtype] * 2.5 + 1e-6
