"""dynq's quantizers against golden bytes made with libggml (tests/data/kernels/make_golden.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dynq import kernels, qtypes
from dynq.kernels import cpu

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


COMPILED = [t for t in TYPES if DEVICE == "cpu" and cpu.handles(qtypes.get(t).name)]


@pytest.mark.parametrize("qtype", COMPILED)
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_golden_torch_reference_on_cpu(qtype: str, with_imatrix: bool) -> None:
    """The torch classes, which the compiled CPU loops replace on the CPU, stay ggml's bytes
    there too (they are the GPU's path and the loops' reference)."""
    import torch

    from dynq.kernels import torch_backend

    w = inputs()["imatrix"] if with_imatrix else None
    t = qtypes.get(qtype)
    for case in CASES:
        x = inputs()[case]
        ours = torch_backend.quantize(x, t, w, torch.device("cpu"), False)[0]
        compare(x, ours, golden(qtype)[f"{case}-imatrix" if with_imatrix else case], qtype, w)


@pytest.mark.parametrize("qtype", TYPES)
def test_golden_whole_tensor_torch_input(qtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All cases stacked into one tensor, passed as a torch tensor, quantized in small chunks."""
    import torch

    xs = np.concatenate([inputs()[c] for c in CASES])
    ref = np.concatenate([golden(qtype)[c] for c in CASES])
    # 3 rows per chunk: chunk borders inside every case (either backend)
    monkeypatch.setattr(kernels.kernel_for(qtype), "chunk_elems", 3 * xs.shape[1])
    monkeypatch.setattr(kernels, "_CPU_CHUNK_ELEMS", 3 * xs.shape[1])
    ours = kernels.quantize(torch.from_numpy(xs), qtype, device=DEVICE)
    compare(xs, ours, ref, qtype, None)
