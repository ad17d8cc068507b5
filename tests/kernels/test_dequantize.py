"""dynq's dequantize equals gguf.quants.dequantize, bit for bit, for every type gguf handles."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from dynq import kernels, qtypes

from ._util import CASES, TYPES, golden, inputs


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("qtype", [t for t in TYPES if t != "q1_0"])
def test_dequantize_matches_gguf(qtype: str) -> None:
    gt = GGMLQuantizationType[qtype.upper()]
    T = qtypes.get(qtype)
    for key, data in golden(qtype).items():
        x = inputs()[key.removesuffix("-imatrix")]
        rows, n = x.shape
        ours = kernels.dequantize(data, qtype, [n, rows])
        theirs = gguf_dequantize(data.reshape(rows, n // T.block_size * T.type_size), gt)
        assert ours.shape == theirs.shape == (rows, n)
        np.testing.assert_array_equal(_bits(ours), _bits(theirs), err_msg=f"{qtype} {key}")


def test_dequantize_q1_0_matches_ggml_formula() -> None:
    """gguf cannot dequantize Q1_0; ggml's dequantize_row_q1_0 is ``bit ? d : -d``."""
    for key, data in golden("q1_0").items():
        x = inputs()[key.removesuffix("-imatrix")]
        rows, n = x.shape
        blocks = data.reshape(-1, 18)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        bits = np.unpackbits(blocks[:, 2:], axis=1, bitorder="little")
        want = np.where(bits == 1, d, -d).reshape(rows, n)
        np.testing.assert_array_equal(
            _bits(kernels.dequantize(data, "q1_0", [n, rows])), _bits(want)
        )


@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16"])
def test_float_types_match_gguf(qtype: str) -> None:
    gt = GGMLQuantizationType[qtype.upper()]
    x = np.concatenate([inputs()[c] for c in CASES])
    ours = kernels.quantize(x, qtype)
    gq = gguf_quantize(x, gt)
    np.testing.assert_array_equal(ours, gq.view(np.uint8).reshape(-1))
    back = kernels.dequantize(ours, qtype, [x.shape[1], x.shape[0]])
    np.testing.assert_array_equal(_bits(back), _bits(gguf_dequantize(gq, gt)))


def test_dequantize_higher_dimensional_shape() -> None:
    x = inputs()["normal"]  # 4 x 512
    q = kernels.quantize(x, "q4_k")
    y = kernels.dequantize(q, "q4_k", [256, 2, 4])  # GGUF order: row length first
    assert y.shape == (4, 2, 256)
    np.testing.assert_array_equal(y.reshape(4, 512), kernels.dequantize(q, "q4_k", [512, 4]))
