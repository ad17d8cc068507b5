"""dynq's quantizers against golden bytes made with libggml (tests/data/kernels/make_golden.py)."""

from __future__ import annotations

import pytest

from dynq import kernels

from ._util import CASES, DEVICE, TYPES, compare, golden, inputs

PARAMS = [
    pytest.param(t, c, im, id=f"{t}-{c}-{'imatrix' if im else 'plain'}")
    for t in TYPES
    for c in CASES
    for im in (False, True)
]


@pytest.mark.parametrize(("qtype", "case", "with_imatrix"), PARAMS)
def test_golden(qtype: str, case: str, with_imatrix: bool) -> None:
    x = inputs()[case]
    w = inputs()["imatrix"] if with_imatrix else None
    ref = golden(qtype)[f"{case}-imatrix" if with_imatrix else case]
    ours = kernels.quantize(x, qtype, w, device=DEVICE)
    compare(x, ours, ref, qtype, w)


@pytest.mark.parametrize("qtype", TYPES)
def test_golden_whole_tensor_torch_input(qtype: str) -> None:
    """All cases stacked into one tensor, passed as a torch tensor, quantized in small chunks."""
    import numpy as np
    import torch

    from dynq.kernels import base

    xs = np.concatenate([inputs()[c] for c in CASES])
    ref = np.concatenate([golden(qtype)[c] for c in CASES])
    k = base.REGISTRY[qtype]
    old = k.chunk_elems
    k.chunk_elems = 3 * xs.shape[1]  # 3 rows per chunk: chunk borders inside every case
    try:
        ours = kernels.quantize(torch.from_numpy(xs), qtype, device=DEVICE)
    finally:
        k.chunk_elems = old
    compare(xs, ours, ref, qtype, None)
