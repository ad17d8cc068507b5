"""The public API's input checks and conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels, qtypes
from dynq.errors import KernelError

from ._util import TYPES


def test_supported_types() -> None:
    names = kernels.supported_types()
    assert isinstance(names, frozenset)
    assert {t.upper() for t in TYPES} | {"F32", "F16", "BF16"} <= names
    # the list kept beside the API (asking must not import torch) is the classes registered
    from dynq.kernels import torch_backend  # noqa: F401  (registers them)
    from dynq.kernels.base import REGISTRY

    assert names == {k.qtype.name for k in REGISTRY.values()}


@pytest.mark.parametrize("qtype", ["q8_k", "Q8_1", "i32"])
def test_unsupported_type(qtype: str) -> None:
    with pytest.raises(KernelError, match="not yet supported by dynq's kernels"):
        kernels.quantize(np.zeros((1, 256), np.float32), qtype)
    with pytest.raises(KernelError, match="not yet supported"):
        kernels.dequantize(np.zeros(qtypes.get(qtype).row_bytes(256), np.uint8), qtype, [256])


def test_unknown_type() -> None:
    with pytest.raises(KernelError, match="unknown GGML type 'q4_kk'"):
        kernels.quantize(np.zeros((1, 256), np.float32), "q4_kk")


def test_type_spellings() -> None:
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    a = kernels.quantize(x, "q4_k")
    assert np.array_equal(a, kernels.quantize(x, "Q4_K"))
    assert np.array_equal(a, kernels.quantize(x, qtypes.get("q4_k")))
    assert np.array_equal(a, kernels.quantize(x, qtypes.get("q4_k").gguf))
    assert a.dtype == np.uint8 and a.shape == (2 * 144,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(bad: float) -> None:
    x = np.zeros((3, 64), np.float32)
    x[2, 17] = bad
    with pytest.raises(KernelError, match=r"non-finite value .* at row 2, column 17"):
        kernels.quantize(x, "q8_0")


def test_non_finite_imatrix() -> None:
    w = np.ones(64, np.float32)
    w[5] = np.nan
    with pytest.raises(KernelError, match="imatrix: non-finite value nan at column 5"):
        kernels.quantize(np.zeros((1, 64), np.float32), "q4_0", w)


def test_row_length_not_multiple_of_block() -> None:
    with pytest.raises(KernelError, match="Q4_K: row length 320 is not a multiple of its block"):
        kernels.quantize(np.zeros((2, 320), np.float32), "q4_k")


def test_imatrix_wrong_length() -> None:
    with pytest.raises(KernelError, match=r"imatrix: expected 256 values \(one per column\)"):
        kernels.quantize(np.zeros((2, 256), np.float32), "q4_k", np.ones(128, np.float32))
    with pytest.raises(KernelError, match="imatrix: expected 256 values"):
        kernels.quantize(np.zeros((2, 256), np.float32), "q4_k", np.ones((2, 128), np.float32))


def test_not_2d() -> None:
    with pytest.raises(KernelError, match="expected a 2-D array"):
        kernels.quantize(np.zeros(256, np.float32), "q8_0")


def test_bad_dtype() -> None:
    with pytest.raises(KernelError, match="expected a float array"):
        kernels.quantize(np.array([["a"] * 32]), "q8_0")


def test_bad_device() -> None:
    with pytest.raises(KernelError, match="device 'meta'"):
        kernels.quantize(np.zeros((1, 32), np.float32), "q8_0", device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(KernelError, match="no CUDA device"):
            kernels.quantize(np.zeros((1, 32), np.float32), "q8_0", device="cuda")


def test_empty_and_other_float_inputs() -> None:
    assert kernels.quantize(np.zeros((0, 256), np.float32), "q4_k").shape == (0,)
    x = np.random.default_rng(1).standard_normal((2, 64))
    a = kernels.quantize(x.astype(np.float32), "q5_0")
    assert np.array_equal(a, kernels.quantize(x.astype(np.float32).astype(np.float64), "q5_0"))
    assert np.array_equal(a, kernels.quantize(torch.from_numpy(x.astype(np.float32)), "q5_0"))


def test_imatrix_ignored_where_ggml_ignores_it() -> None:
    x = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32)
    w = np.random.default_rng(3).random(256).astype(np.float32)
    for t in ("q8_0", "tq1_0", "tq2_0", "mxfp4", "q1_0", "f16"):
        assert np.array_equal(kernels.quantize(x, t), kernels.quantize(x, t, w)), t


def test_dequantize_checks() -> None:
    with pytest.raises(KernelError, match="bytes do not hold shape"):
        kernels.dequantize(np.zeros(100, np.uint8), "q8_0", [32, 3])
    with pytest.raises(KernelError, match="not a multiple of its block size"):
        kernels.dequantize(np.zeros(34, np.uint8), "q8_0", [33])
    y = kernels.dequantize(bytes(34 * 2), "q8_0", [64])
    assert y.shape == (64,) and y.dtype == np.float32 and not y.any()


@pytest.mark.parametrize("with_imatrix", [False, True])
def test_weighted_error_matches_numpy(with_imatrix: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 512)).astype(np.float32)
    keep = x.copy()
    w = np.exp(rng.standard_normal(512)).astype(np.float32) if with_imatrix else None
    q = kernels.quantize(x, "q4_k", w)
    num, den = kernels.weighted_error(x, q, "q4_k", w)
    y = kernels.dequantize(q, "q4_k", [512, 9]).astype(np.float64)
    ww = np.ones(512) if w is None else w.astype(np.float64)
    assert num == pytest.approx(float((ww * (x - y) ** 2).sum()), rel=1e-6)
    assert den == pytest.approx(float((ww * x.astype(np.float64) ** 2).sum()), rel=1e-6)
    np.testing.assert_array_equal(x, keep)  # the input is not touched
    with pytest.raises(KernelError, match="bytes do not hold"):
        kernels.weighted_error(x, q[:-1], "q4_k")


@pytest.mark.parametrize("qtype", ["q4_k", "q8_0", "iq4_nl"])
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_quantize_measured_is_quantize_and_weighted_error(qtype: str, with_imatrix: bool) -> None:
    """One pass gives the bytes of quantize and the sums of weighted_error on them (Q8_0's
    quantizer ignores the imatrix; the error is still weighted by it), over several chunks."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 1024)).astype(np.float32)
    w = np.exp(rng.standard_normal(1024)).astype(np.float32) if with_imatrix else None
    assert kernels.kernel_for(qtype).chunk_elems < x.size  # more than one chunk
    q, num, den = kernels.quantize_measured(x, qtype, w)
    np.testing.assert_array_equal(q, kernels.quantize(x, qtype, w))
    assert (num, den) == kernels.weighted_error(x, q, qtype, w)
    assert 0 < num < den
