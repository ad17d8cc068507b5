"""IQ1_S and IQ1_M's split search and IQ1's neighbour search compiled with numba
(:mod:`dynq.kernels.numba_iq1`, through :mod:`dynq.kernels.compiled`) give the torch path's bits.

On the CPU ``quantize`` takes the numba path; the tests compare:

* the searches themselves (``compiled.iq1_*_search`` against ``iq_lowbit._iq1_*_search``) on
  random blocks and blocks full of exact ties, negative and zero weights (every candidate
  refused: ``pick = -1``), and ``compiled.iq1_best_neighbours`` against
  ``iq_lowbit.best_neighbours`` (random groups, ties, zero and negative weights, distances
  infinite or NaN);
* ``kernels.quantize``'s bytes, numba against the torch path, on the golden cases of
  ``test_iq_lowbit`` (and against ggml's bytes there) together with random super-blocks and
  32-blocks built for the corner cases (:func:`test_fused_iq1._rows`: zeros, ``-0.0``,
  constants, ties, one outlier, tiny, subnormal and huge magnitudes, all negative), per
  imatrix mode (none, ggml's, flat), and on random rows with zero and negative imatrix weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels
from dynq.kernels import compiled, fused, iq_lowbit

from .test_fused_iq1 import (
    CASES,
    MODES,
    _neighbour_inputs,
    _rows,
    _same_pick,
    _search_inputs,
)
from .test_iq_lowbit import compare, golden, inputs

pytestmark = pytest.mark.skipif(
    not compiled.used_for(torch.zeros(1)) or fused.used_for(torch.zeros(1)),
    reason="the numba path is not the one the CPU takes here",
)


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A context in which the searches take the torch path."""

    class Ctx:
        def __enter__(self) -> None:
            assert compiled.used_for(torch.zeros(1))
            monkeypatch.setattr(fused, "used_for", lambda _t: False)
            monkeypatch.setattr(compiled, "used_for", lambda _t: False)

        def __exit__(self, *exc: object) -> None:
            monkeypatch.undo()

    return Ctx()


def test_iq1_s_search() -> None:
    wxs, ws, _ = _search_inputs(32, 1)
    xp, xm = iq_lowbit._xpm(wxs)
    i1, i2 = iq_lowbit._pairs(32, wxs.device)
    want = iq_lowbit._iq1_s_search(wxs, ws, xp, xm, i1, i2)
    assert (want[0] < 0).any() and (want[0] >= 0).any()
    _same_pick(compiled.iq1_s_search(wxs, ws), want)


def test_iq1_m_search() -> None:
    wxs, ws, order = _search_inputs(16, 2)
    xp, xm = iq_lowbit._xpm(wxs)
    i1, i2 = iq_lowbit._pairs(16, wxs.device)
    want = iq_lowbit._iq1_m_search(wxs, ws, order, xp, xm, i1, i2)
    assert (want[0] < 0).any() and (want[0] >= 0).any()
    _same_pick(compiled.iq1_m_search(wxs, ws, order), want)


def test_iq1_best_neighbours() -> None:
    """The neighbour search on 4096 groups (:func:`test_fused_iq1._neighbour_inputs`)."""
    tab, u, xv, wv, scale, xx = _neighbour_inputs(4096)
    want = iq_lowbit.best_neighbours(tab, u, xv, wv, scale, xx)
    got = compiled.iq1_best_neighbours(tab, u, xv, wv, scale, xx)
    assert got.dtype == want.dtype == torch.int64
    assert torch.equal(got, want)
    empty = compiled.iq1_best_neighbours(tab, u[:0], xv[:0], wv[:0], scale[:0], xx[:0])
    assert empty.shape == (0,)


@pytest.mark.parametrize("qtype", ["iq1_s", "iq1_m"])
def test_numba_path_taken(monkeypatch: pytest.MonkeyPatch, qtype: str) -> None:
    """On the CPU ``quantize`` runs the blocks' work through ``compiled.iq1_*_blocks``."""
    name = f"{qtype}_blocks"
    calls = []
    real = getattr(compiled, name)

    def spy(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(compiled, name, spy)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    kernels.quantize(x, qtype, np.ones(256, np.float32))
    assert calls


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


@pytest.mark.parametrize("qtype", ["iq1_s", "iq1_m"])
def test_quantize_weights(torch_path, qtype: str) -> None:  # type: ignore[no-untyped-def]
    """Random rows (several magnitudes) and the corner-case rows with imatrix weights that are
    zero in places, negative in places, all zero, or tiny: the torch path's bytes."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 512)) * 10.0 ** rng.integers(-4, 3, (16, 1))
    x = np.concatenate([x.astype(np.float32), _rows(4)])
    for kind in ("zeros", "negative", "all_zero", "tiny"):
        w = (rng.random(512) + 0.01).astype(np.float32)
        if kind == "zeros":
            w[rng.random(512) < 0.3] = 0.0
        elif kind == "negative":
            w[rng.random(512) < 0.3] *= -1.0
        elif kind == "all_zero":
            w[:] = 0.0
        else:
            w *= np.float32(1e-30)
        got = kernels.quantize(x, qtype, w)
        with torch_path:
            want = kernels.quantize(x, qtype, w)
        np.testing.assert_array_equal(got, want, err_msg=kind)
