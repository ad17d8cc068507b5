"""The CPU backend's own pieces: fp16 bits in numba, the float types in numpy, and that the
CPU path of the public API runs without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from dynq import kernels
from dynq.kernels.numba_kernels import fp16_bits, fp16_value


@njit
def _encode(x, out):
    for i in range(x.size):
        out[i] = fp16_bits(x[i])


@njit
def _decode(h, out):
    for i in range(h.size):
        out[i] = fp16_value(np.int32(h[i]))


def test_fp16_bits_round_to_nearest_even_like_numpy() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    scaled = rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 6, 200_000)
    edges = [0.0, -0.0, 65504, 65519.99, 65520, -65520, 1e-8, -1e-8, 2.98e-8, 2.99e-8, 6.1e-5]
    sweep = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)  # every exponent
    infs = np.uint32([0x7F800000, 0xFF800000, 0x477FF000]).view(np.float32)
    parts = [bits, sweep, scaled.astype(np.float32), np.float32(edges), infs]
    x = np.concatenate([p.view(np.float32) for p in parts])
    nan = np.isnan(x)
    out = np.empty(x.size, np.uint16)
    _encode(x, out)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out[~nan], x[~nan].astype(np.float16).view(np.uint16))
    assert np.all((out[nan] & 0x7FFF) == 0x7E00)


def test_fp16_value_decodes_every_half() -> None:
    h = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(h.size, np.float32)
    _decode(h, out)
    ref = h.view(np.float16).astype(np.float32)
    same = (out.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(out) & np.isnan(ref))
    assert same.all()


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16"])
def test_float_types_match_torch(qtype: str) -> None:
    """numpy's conversions give torch's (= ggml's) bytes, and back."""
    import torch

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((37, 64)) * 10.0 ** rng.integers(-40, 38, (37, 64))).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 3.4e38, -1e-45]
    ours = kernels.quantize(x, qtype)
    dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[qtype]
    ref = torch.from_numpy(x).to(dt).view(torch.uint8).numpy().reshape(-1)
    np.testing.assert_array_equal(ours, ref)
    back = kernels.dequantize(ours, qtype, [64, 37])
    np.testing.assert_array_equal(
        back, torch.from_numpy(ref).view(dt).float().numpy().reshape(37, 64)
    )


def test_cpu_path_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np; from dynq import kernels\n"
        "x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)\n"
        "for t in ('Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K',"
        " 'F16', 'BF16'):\n"
        "    q, num, den = kernels.quantize_measured(x, t, np.ones(512, np.float32))\n"
        "    kernels.dequantize(q, t, [512, 64])\n"
        "print(sorted(kernels.supported_types())[:1], 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["['BF16']", "False"]


def test_threads_setting() -> None:
    old = kernels.threads()
    try:
        kernels.set_threads(1)
        assert kernels.threads() == 1
        with pytest.raises(ValueError, match="at least 1"):
            kernels.set_threads(0)
    finally:
        kernels.set_threads(old)
