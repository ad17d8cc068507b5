"""The compiled grid search of IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S gives the torch path's bits.

:func:`dynq.kernels.iq_lowbit._search` and :func:`~dynq.kernels.iq_lowbit._requantize` run in
torch, and on the CPU as one numba loop (:func:`dynq.kernels.compiled.iq_grid_search`). The
tests below compare the bytes of ``kernels.quantize`` on the two paths, on random blocks and on
blocks built to reach every branch, and the compiled path's against ggml's golden bytes (the
golden tests of test_iq_lowbit.py run it too, on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels
from dynq.kernels import base, compiled, fused, iq_lowbit
from dynq.kernels.iq_grids import lattice

from .test_fused_iq_grid import _edge_rows
from .test_iq_lowbit import compare, golden, inputs

pytest.importorskip("numba")

TYPES = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")
#: the types that quantize without an imatrix (ggml's own weights)
PLAIN = ("iq2_s", "iq3_xxs", "iq3_s")


@pytest.fixture(autouse=True)
def _cpu_compiled() -> None:
    if not compiled.used_for(torch.zeros(1)) or fused.used_for(torch.zeros(1)):
        pytest.skip("the compiled path is not the one quantize takes here")


def _torch_path(monkeypatch: pytest.MonkeyPatch, fn):  # type: ignore[no-untyped-def]
    """``fn()`` with the searches on the torch path."""
    with monkeypatch.context() as m:
        m.setattr(compiled, "used_for", lambda _t: False)
        m.setattr(fused, "used_for", lambda _t: False)
        return fn()


def _rows(seed: int) -> np.ndarray:
    """The edge rows, random rows of assorted scales and a heavy-tailed row."""
    rng = np.random.default_rng(seed)
    rnd = rng.standard_normal((3, 512)).astype(np.float32) * np.float32([[1e-3], [1.0], [50.0]])
    heavy = (rng.standard_t(2, (1, 512)) * 0.02).astype(np.float32)
    return np.concatenate([_edge_rows(seed), rnd, heavy])


def _imatrix(seed: int, odd: bool) -> np.ndarray:
    """A random imatrix; ``odd``: with zeros and negative entries (NaN weights, where ggml
    aborts and dynq takes the first neighbour)."""
    rng = np.random.default_rng(seed)
    w = (rng.random(512) ** 2).astype(np.float32)
    w[::5] = 0
    if odd:
        w[3::11] = -1
    return w


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("mode", ["imatrix", "odd", "plain"])
def test_compiled_matches_torch(qtype: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Assorted and random blocks: the compiled path's bytes are the torch path's."""
    if mode == "plain" and qtype not in PLAIN:
        pytest.skip("ggml requires an imatrix")
    seed = len(qtype) + 3 * len(mode)
    x = _rows(seed)
    w = None if mode == "plain" else _imatrix(seed, mode == "odd")
    ours = kernels.quantize(x, qtype, w)
    want = _torch_path(monkeypatch, lambda: kernels.quantize(x, qtype, w))
    np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("qtype", TYPES)
def test_compiled_golden(qtype: str) -> None:
    """The golden rows (with the imatrix, and without where ggml allows): every block ggml's."""
    g = inputs()
    for case, rows in (("edge", 2), ("normal", 2), ("heavy", 1)):
        modes = ["imatrix"] + (["plain"] if qtype in PLAIN else [])
        for mode in modes:
            w = g["imatrix"] if mode == "imatrix" else None
            key = f"{case}-imatrix" if mode == "imatrix" else case
            ours = kernels.quantize(g[case][:rows], qtype, w)
            rb = ours.size // rows
            n, same = compare(g[case][:rows], ours, golden(qtype)[key][: rows * rb], qtype, w)
            assert same == n, (qtype, case, mode, n - same)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("alone", [True, False], ids=["search", "search+requantize"])
def test_search_alone(qtype: str, alone: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_search`` (its own hook: no pass after the trials, the on-grid flags) and the search
    with its pass, called directly: the same tensors, bit for bit, as the torch path's."""
    cls = kernels.kernel_for(qtype)
    lat = lattice(cls.name)
    gen = torch.Generator().manual_seed(len(qtype))
    b, n = 40, cls.sub
    xval = (torch.randn(b, n, generator=gen) * 0.1).abs()
    xval[0] = 0
    xval[1] = 0.5
    xval[2, ::2] = 0
    weight = torch.rand(b, n, generator=gen) * xval
    waux = base.sqrtf(weight)
    mx = xval.max(dim=1).values
    q = 2 * cls.kmaxq - 1
    scale0 = base.divc(mx, q)
    ntry = getattr(cls, "ntry", 6)
    ids = iq_lowbit._trial_ids(q, getattr(cls, "step", 0.1), -ntry, ntry, mx)
    # trial scales past nearest_int's exact range (it wraps), infinite and NaN
    ids[3] *= 1e8
    ids[4, ::2] = float("inf")
    ids[5, 1::3] = float("nan")
    ids[6] = -ids[6]
    L0 = torch.randint(0, cls.kmaxq, (b, n), generator=gen)
    redo = "all" if qtype == "iq2_xxs" else "off_all" if cls.redo_all else "off"
    args = (lat, xval, weight, waux, ids, cls.kmaxq, scale0, L0, cls.ongrid0)
    if alone:
        got = iq_lowbit._search(*args)
        want = _torch_path(monkeypatch, lambda: iq_lowbit._search(*args))
    else:
        got = iq_lowbit._search_requantize(*args, redo)
        want = _torch_path(monkeypatch, lambda: iq_lowbit._search_requantize(*args, redo))
    for a, c in zip(got, want, strict=True):
        assert a.dtype == c.dtype and a.shape == c.shape
        if a.dtype == torch.float32:
            a, c = a.view(torch.int32), c.view(torch.int32)
        assert torch.equal(a, c)
