"""IQ1_S and IQ1_M's split search and IQ1's neighbour search as Triton kernels
(:mod:`dynq.kernels.triton_iq1`) give the torch path's bits.

``test_under_interpreter`` reruns this file in a child process with ``TRITON_INTERPRET=1``,
where Triton executes the kernels on the CPU with numpy's float32 arithmetic and
``fused.used_for`` holds for CPU tensors; there the tests below compare:

* the searches themselves (``fused.iq1_*_search`` against ``iq_lowbit._iq1_*_search``) on
  random blocks and blocks full of exact ties, negative and zero weights (every candidate
  refused: ``pick = -1``), and ``fused.iq1_best_neighbours`` against
  ``iq_lowbit.best_neighbours`` (its terms too, bit for bit);
* ``kernels.quantize``'s bytes, fused against the torch path, on the golden cases of
  ``test_iq_lowbit`` (and against ggml's bytes there) together with random super-blocks and
  32-blocks built for the corner cases (zeros, ``-0.0``, constants, ties, one outlier, tiny,
  subnormal and huge magnitudes, all negative), per imatrix mode (none, ggml's, flat).

The interpreter pays per operation, not per lane, so each check is one kernel call of at
most a couple of thousand blocks (one program; ``fused`` runs 2048 lanes per program there). On a GPU, ``DYNQ_TEST_DEVICE=cuda`` runs ``test_iq_lowbit``'s
golden tests through the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels
from dynq.kernels import compiled, fused, iq_grids, iq_lowbit

from ._util import INTERPRETED, run_interpreted
from .test_iq_lowbit import compare, golden, inputs

#: Triton decides at import whether its functions are interpreted, so the interpreted run is a
#: child process started with TRITON_INTERPRET=1
under_interpreter = pytest.mark.skipif(not INTERPRETED, reason="run by test_under_interpreter")

CASES = ("normal", "heavy", "uniform", "edge", "smollm2", "gemma3")


@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_under_interpreter() -> None:
    pytest.importorskip("triton")
    run_interpreted(__file__)


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A context in which the searches take the torch path."""

    class Ctx:
        def __enter__(self) -> None:
            assert fused.used_for(torch.zeros(1))
            monkeypatch.setattr(fused, "used_for", lambda _t: False)
            monkeypatch.setattr(compiled, "used_for", lambda _t: False)

        def __exit__(self, *exc: object) -> None:
            monkeypatch.undo()

    return Ctx()


def _same_pick(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]):
    """Same picks; the same ``sc`` bits (NaN: both NaN, its sign is the hardware's)."""
    (pg, sg), (pw, sw) = got, want
    assert pg.dtype == pw.dtype == torch.int64
    assert torch.equal(pg, pw)
    nan = torch.isnan(sw)
    assert torch.equal(torch.isnan(sg), nan)
    assert torch.equal(sg[~nan].view(torch.int32), sw[~nan].view(torch.int32))


def _search_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w*x, w, order)`` of 1024 blocks of ``n``: random (sorted, as the quantizers pass
    them), exact ties (small integers: many candidates score the same), negative weights,
    zero weights, zeros."""
    g = torch.Generator().manual_seed(seed)
    b = 1024
    x = torch.randn(b, n, generator=g) * 10.0 ** torch.randint(-3, 3, (b, 1), generator=g)
    w = torch.rand(b, n, generator=g) * 10.0 ** torch.randint(-2, 2, (b, 1), generator=g)
    ties = slice(256, 512)
    x[ties] = torch.randint(-2, 3, (256, n), generator=g).float()
    w[ties] = torch.randint(0, 3, (256, n), generator=g).float()
    w[512:640] -= 0.5  # some weights negative
    w[640:704] = 0.0  # sumq2 = 0 everywhere: nothing is taken
    x[704:768] = 0.0
    w[768:800] = -w[768:800]  # all weights negative
    x[800:832] = x[800:832, :1]  # constant blocks
    xs, order = torch.sort(x, dim=1, stable=True)
    ws = torch.gather(w, 1, order)
    return ws * xs, ws, order


@under_interpreter
def test_iq1_s_search() -> None:
    wxs, ws, _ = _search_inputs(32, 1)
    xp, xm = iq_lowbit._xpm(wxs)
    i1, i2 = iq_lowbit._pairs(32, wxs.device)
    want = iq_lowbit._iq1_s_search(wxs, ws, xp, xm, i1, i2)
    assert (want[0] < 0).any() and (want[0] >= 0).any()
    _same_pick(fused.iq1_s_search(wxs, ws), want)


@under_interpreter
def test_iq1_m_search() -> None:
    wxs, ws, order = _search_inputs(16, 2)
    xp, xm = iq_lowbit._xpm(wxs)
    i1, i2 = iq_lowbit._pairs(16, wxs.device)
    want = iq_lowbit._iq1_m_search(wxs, ws, order, xp, xm, i1, i2)
    assert (want[0] < 0).any() and (want[0] >= 0).any()
    _same_pick(fused.iq1_m_search(wxs, ws, order), want)


def _neighbour_inputs(m: int):  # type: ignore[no-untyped-def]
    """``(tab, u, xv, wv, scale, xx)`` for ``m`` >= 370 groups of 8 off IQ1's lattice: random,
    then zero weights (every distance 0: the first neighbour), exact ties, negative weights,
    scales or weights that make every distance infinite or NaN (ggml aborts; the searches take
    the first neighbour), -0.0 values and tiny distances."""
    g = torch.Generator().manual_seed(5)
    tab = iq_grids.lattice("iq1_s").on(torch.device("cpu"))
    off = torch.nonzero(tab["nb_count"] > 0).squeeze(1)
    u = off[torch.randint(0, off.numel(), (m,), generator=g)]
    xv = torch.randn(m, 8, generator=g)
    wv = torch.rand(m, 8, generator=g)
    scale = torch.rand(m, generator=g) + 0.1
    xp, xm = iq_lowbit._xpm(xv)
    xx = torch.where(torch.rand(m, 1, generator=g) < 0.5, xp.view(1, 3), xm.view(1, 3))
    wv[100:150] = 0.0
    xv[150:250] = torch.randint(-1, 2, (100, 8), generator=g).float()  # ties
    wv[150:250] = 1.0
    scale[150:250] = 1.0
    wv[250:300] -= 0.5
    scale[300:310] = float("inf")
    scale[310:320] = float("nan")
    wv[320:330, 3] = float("inf")
    xv[330:340] = 3e38  # squares overflow
    scale[340:350] = 0.0
    xv[350:360] = -0.0
    wv[360:370] = 1e-30  # tiny distances
    return tab, u, xv, wv, scale, xx


@under_interpreter
def test_iq1_best_neighbours() -> None:
    """The neighbour search on 1024 groups (:func:`_neighbour_inputs`)."""
    tab, u, xv, wv, scale, xx = _neighbour_inputs(1024)
    want = iq_lowbit.best_neighbours(tab, u, xv, wv, scale, xx)
    got = fused.iq1_best_neighbours(tab, u, xv, wv, scale, xx)
    assert got.dtype == want.dtype == torch.int64
    assert torch.equal(got, want)
    # the terms w*(scale*q - x)^2 the distances sum, bit for bit (a rounding apart would
    # rarely change which neighbour wins); short lists keep the kernel's loop short
    short = tab["nb_count"][u] <= 32
    u, xv, wv, scale, xx = u[short], xv[short], wv[short], scale[short], xx[short]
    k = u.numel()
    tt = torch.empty((8, 3, k))
    gi = torch.empty(k, dtype=torch.int32)
    args = (u.to(torch.int32), fused._t(xv), fused._t(wv), scale, fused._t(xx))
    tabs = (tab["nb_count32"], tab["nb_start32"], tab["nb_list32"], fused._lvpack("cpu"))
    fused._launch_iq1("iq1_neighbours", k, *args, *tabs, tt, gi, k, G=8, NLEV=3)
    diff = scale.view(k, 1, 1) * xx.view(k, 1, 3) - xv.view(k, 8, 1)
    terms = (wv.view(k, 8, 1) * diff) * diff
    assert torch.equal(tt.permute(2, 0, 1).view(torch.int32), terms.view(torch.int32))


def _rows(seed: int) -> np.ndarray:
    """16 super-blocks of 256 as 8 rows of 512: 8 random (scales 1e-3..1e2, some
    heavy-tailed), then 8 built from 32-blocks of the corner cases, whole zero, constant and
    single-outlier super-blocks among them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 256)) * 10.0 ** rng.integers(-3, 3, (8, 1))
    x[6:] = rng.standard_t(2, (2, 256)) * 0.02
    e = np.zeros((8, 8, 32))
    e[0, 1] = -0.0
    e[0, 2] = 0.25  # constant
    e[0, 3] = -0.25
    e[0, 4] = rng.integers(-1, 2, 32) * 0.5  # ties
    e[0, 5, 7] = 3.0  # one outlier among zeros
    e[0, 6] = -np.abs(rng.standard_normal(32)) * 0.01  # all negative
    e[0, 7] = np.abs(rng.standard_normal(32)) * 0.01  # all positive
    e[1, 0] = rng.standard_normal(32) * 1e-30  # tiny
    e[1, 1] = rng.standard_normal(32) * 1e-40  # subnormal
    e[1, 2] = rng.standard_normal(32) * 1e-3
    e[1, 3] = rng.standard_normal(32) * 1e3
    e[1, 4, ::2] = rng.standard_normal(16)  # half zeros
    e[1, 5] = np.linspace(-1.0, 1.0, 32)
    e[1, 6] = rng.integers(-3, 4, 32) * 1e-3  # ties, small
    e[1, 7, 20] = -1e3  # a negative outlier
    e[2] = rng.standard_normal((8, 32)) * 1e30  # huge: squares overflow
    e[3] = -np.abs(rng.standard_normal((8, 32)))  # all negative
    # e[4]: all zeros
    e[5] = 0.75  # constant
    e[6, 3, 9] = 2.0  # one outlier
    e[7] = rng.standard_normal((8, 32)) * 10.0 ** rng.integers(-6, 3, (8, 1))
    e = e.reshape(8, 256)
    e[7, ::16] = -0.0
    return np.concatenate([x, e]).astype(np.float32).reshape(8, 512)


MODES = [
    ("iq1_s", "imatrix"),
    ("iq1_s", "flat"),
    ("iq1_m", "imatrix"),
    ("iq1_m", "plain"),
    ("iq1_m", "flat"),
]


@under_interpreter
@pytest.mark.parametrize(("qtype", "mode"), MODES)
def test_quantize(torch_path, monkeypatch: pytest.MonkeyPatch, qtype: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    """``test_iq_lowbit``'s golden cases of one imatrix mode and the corner-case rows of
    :func:`_rows`, in one call (one chunk, one CPU slice): the same bytes as the torch path;
    on the golden cases, ggml's by ``test_iq_lowbit``'s criterion."""
    k = iq_lowbit.IQ1_S if qtype == "iq1_s" else iq_lowbit.IQ1_M
    monkeypatch.setattr(k, "cpu_slice", 1 << 10)
    monkeypatch.setattr(k, "chunk_elems", 1 << 20)
    cases = ("edge",) if mode == "flat" else CASES
    w = {"plain": None, "imatrix": inputs()["imatrix"], "flat": inputs()["imatrix_flat"]}[mode]
    xg = np.concatenate([inputs()[c] for c in cases])
    ref = np.concatenate([golden(qtype)[c if mode == "plain" else f"{c}-{mode}"] for c in cases])
    x = np.concatenate([xg, _rows(3)])
    got = kernels.quantize(x, qtype, w)
    with torch_path:
        want = kernels.quantize(x, qtype, w)
    np.testing.assert_array_equal(got, want)
    compare(xg, got[: ref.size], ref, qtype, w)
