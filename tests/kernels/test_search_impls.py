"""The three implementations of the k-quant searches give the same bits.

:mod:`dynq.kernels.search` holds them in torch (the portable path), :mod:`dynq.kernels.compiled`
compiles them with numba for the CPU, :mod:`dynq.kernels.fused` runs them as Triton kernels on
GPUs. The search tests below compare the path that ``quantize`` takes with the torch one, on
groups built to reach every branch (flat groups, ±0, tiny and huge values, one outlier):

* in this process that is the numba path;
* ``test_under_interpreter`` reruns this file in a child process with ``TRITON_INTERPRET=1``,
  where Triton executes the fused kernels on the CPU with numpy's float32 arithmetic: there the
  same tests compare the Triton path, and the golden tests check its bytes against ggml's.
  (On a GPU, ``DYNQ_TEST_DEVICE=cuda`` runs the golden tests through the fused kernels.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels
from dynq.kernels import base, compiled, fused, search

from ._util import INTERPRETED, compare, golden, inputs, run_interpreted

FUSED_TYPES = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_1", "q5_1")

under_interpreter = pytest.mark.skipif(not INTERPRETED, reason="run by test_under_interpreter")


@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_under_interpreter() -> None:
    pytest.importorskip("triton")
    run_interpreted(__file__)


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A context in which the searches take the torch path."""

    class Ctx:
        def __enter__(self) -> None:
            assert (fused if INTERPRETED else compiled).used_for(torch.zeros(1))
            monkeypatch.setattr(fused, "used_for", lambda _t: False)
            monkeypatch.setattr(compiled, "used_for", lambda _t: False)

        def __exit__(self, *exc: object) -> None:
            monkeypatch.undo()

    return Ctx()


@under_interpreter
@pytest.mark.parametrize("qtype", FUSED_TYPES)
@pytest.mark.parametrize("case", ["normal", "edge"])
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_fused_golden(qtype: str, case: str, with_imatrix: bool) -> None:
    assert fused.used_for(torch.zeros(1))
    x = inputs()[case]
    w = inputs()["imatrix"] if with_imatrix else None
    ref = golden(qtype)[f"{case}-imatrix" if with_imatrix else case]
    compare(x, kernels.quantize(x, qtype, w), ref, qtype, w)


def _groups(n: int, seed: int) -> torch.Tensor:
    """64 random groups of ``n`` values, then groups aimed at the searches' corner cases."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, n, generator=g) * 0.02
    x[1] *= torch.rand(n, generator=g) > 0.5  # half zeros
    extra = torch.zeros(8, n)
    extra[1] = -0.0
    extra[2] = 0.25  # constant
    extra[3, 0] = -0.0
    extra[3, 1:] = 1e-30  # tiny, subnormal range
    extra[4] = torch.linspace(-1e30, 1e30, n)  # huge
    extra[5, n // 2] = 3.0  # one outlier among zeros
    extra[6] = torch.randn(n, generator=g).abs() * 0.01  # all positive
    extra[7] = -torch.randn(n, generator=g).abs() * 0.01  # all negative
    return torch.cat([x, extra])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (float ±0 and NaN payloads included)."""
    if a.dtype == torch.float32:
        a, b = a.view(torch.int32), b.view(torch.int32)
    return a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize(
    ("n", "nmax", "rmin", "rdelta", "nstep", "use_mad", "weighted"),
    [
        (32, 15, -1.0, 0.1, 20, False, False),  # Q4_K ref
        (32, 31, -0.5, 0.1, 15, False, False),  # Q5_K ref
        (16, 3, -0.5, 0.1, 15, True, False),  # Q2_K ref (mean absolute difference)
        (32, 15, -0.9, 0.05, 36, False, True),  # Q4_K/Q4_1 with an imatrix
        (16, 3, -0.9, 0.05, 36, False, True),  # Q2_K with an imatrix
    ],
)
def test_make_qkx_quants(torch_path, n, nmax, rmin, rdelta, nstep, use_mad, weighted) -> None:  # type: ignore[no-untyped-def]
    x = _groups(n, 1)
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) if weighted else x.abs()
    got = search.make_qkx_quants(x, w, nmax, rmin, rdelta, nstep, use_mad)
    with torch_path:
        want = search.make_qkx_quants(x, w, nmax, rmin, rdelta, nstep, use_mad)
    for a, b in zip(got, want, strict=True):
        assert _same(a, b)


@pytest.mark.parametrize(
    ("n", "nmax", "weighted"), [(16, 32, False), (16, 32, True), (16, 4, True)]
)
def test_make_qx_quants(torch_path, n: int, nmax: int, weighted: bool) -> None:  # type: ignore[no-untyped-def]
    x = _groups(n, 3)
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) if weighted else None
    got = search.make_qx_quants(x, nmax, w)
    with torch_path:
        want = search.make_qx_quants(x, nmax, w)
    for a, b in zip(got, want, strict=True):
        assert _same(a, b)


@pytest.mark.parametrize(("n", "nmax"), [(8, 63), (16, 15)])
def test_make_qp_quants(torch_path, n: int, nmax: int) -> None:  # type: ignore[no-untyped-def]
    # scales and mins: mostly non-negative, some negative (L wraps as uint8 in the C)
    x = _groups(n, 5).abs() * 40
    x[:8] -= 0.3
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(6))
    got = search.make_qp_quants(x, nmax, w)
    with torch_path:
        want = search.make_qp_quants(x, nmax, w)
    for a, b in zip(got, want, strict=True):
        assert _same(a, b)


def test_make_q3_quants(torch_path) -> None:  # type: ignore[no-untyped-def]
    x = _groups(16, 7)
    got = search.make_q3_quants(x, 4)
    with torch_path:
        want = search.make_q3_quants(x, 4)
    for a, b in zip(got, want, strict=True):
        assert _same(a, b)


@pytest.mark.parametrize("first", [False, True])
def test_seq_sum(torch_path, first: bool) -> None:  # type: ignore[no-untyped-def]
    t = _groups(32, 8).t().contiguous().view(32, 9, 8)
    t[:, 0, 0] = -0.0  # an all -0.0 sum: its sign depends on `first`
    got = base.seq_sum(t, first)
    with torch_path:
        want = base.seq_sum(t, first)
    assert _same(got, want)
    assert np.signbit(got[0, 0].item()) == first


def test_sqrtf(torch_path) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(9)
    v = torch.cat([
        torch.rand(4096, generator=g) * 10.0 ** torch.randint(-40, 38, (4096,), generator=g),
        torch.tensor([0.0, -0.0, 1e-45, 3.4e38, float("inf")]),
    ]).float()  # fmt: skip
    got = base.sqrtf(v)
    with torch_path:
        want = base.sqrtf(v)
    assert _same(got, want)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q5_0", "q4_1", "q5_1"])
def test_legacy_single_pass(torch_path, qtype: str) -> None:  # type: ignore[no-untyped-def]
    """The legacy types' quantizers without an imatrix (numba's single-pass loops)."""
    x = _groups(32, 10)
    extra = torch.zeros(6, 32)
    extra[0, :] = 1e-45  # the smallest subnormal: d underflows to 0
    extra[1, :3] = torch.tensor([-3.0, 3.0, 1.5])  # first of largest magnitude; .5 ties
    extra[2] = torch.linspace(-1, 1, 32) * 3.4e38  # max - min overflows to inf
    extra[3, :] = 2e-38  # 1/d overflows to inf: x*id is inf, its int is INT32_MIN
    extra[4] = torch.arange(32) - 15.5  # halves everywhere
    extra[5, 0] = 127.5
    x = torch.cat([x, extra])
    kern = kernels.kernel_for(qtype)
    got = kern.quantize_blocks(x, None)
    with torch_path:
        want = kern.quantize_blocks(x, None)
    assert _same(got, want)


def test_error_sums() -> None:
    """The build report's per-column sums: numba's one pass against numpy in float64."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(37, 96, generator=g)
    y = x + 0.01 * torch.randn(37, 96, generator=g)
    d2, x2 = compiled.error_sums(x, y)
    xd, yd = x.double().numpy(), y.double().numpy()
    np.testing.assert_allclose(d2.numpy(), ((xd - yd) ** 2).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(x2.numpy(), (xd**2).sum(axis=0), rtol=1e-12)
