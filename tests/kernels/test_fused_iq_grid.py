"""The fused grid search of IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S gives the torch path's bits.

:func:`dynq.kernels.iq_lowbit._search` and :func:`~dynq.kernels.iq_lowbit._requantize` run in
torch on the CPU and as one Triton kernel (:func:`dynq.kernels.fused.iq_grid_search`) on GPUs.
``test_under_interpreter`` reruns this file in child processes with ``TRITON_INTERPRET=1``
(Triton then executes the kernel on the CPU with numpy's float32 arithmetic; see
tests/kernels/test_search_impls.py): there the tests below compare the kernel's bytes with the
torch path's and with ggml's golden bytes. The interpreter is slow (a few seconds per program
of blocks, whatever its width), so the children share the types between them and quantize
each input in one program.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynq import kernels
from dynq.kernels import base, compiled, fused, iq_lowbit
from dynq.kernels.iq_grids import lattice

from ._util import INTERPRETED, PART, run_interpreted
from .test_iq_lowbit import compare, golden, inputs

TYPES = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")

#: the child runs the types of its part (two children, run side by side)
PARTS = (("iq2_xs", "iq2_s"), ("iq2_xxs", "iq3_xxs", "iq3_s"))
PART_TYPES = PARTS[PART]
under_interpreter = pytest.mark.skipif(not INTERPRETED, reason="run by test_under_interpreter")


@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_under_interpreter() -> None:
    pytest.importorskip("triton")
    run_interpreted(__file__, parts=len(PARTS))


@pytest.fixture
def one_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each input quantized in one launch of one program (the interpreter's cost is per
    program and per step of a loop, whatever the width): no CPU slicing, one wide program,
    64 neighbours a step."""
    for t in TYPES:
        monkeypatch.setattr(kernels.kernel_for(t), "cpu_slice", 1 << 20)
    monkeypatch.setattr(fused, "_IQ_BLOCK", 1024)
    monkeypatch.setattr(fused, "_IQ_NBC", 64)


def _torch_path(fn):  # type: ignore[no-untyped-def]
    """``fn()`` with the searches on the torch path."""
    assert fused.used_for(torch.zeros(1))
    old = fused.used_for, compiled.used_for
    fused.used_for = compiled.used_for = lambda _t: False
    try:
        return fn()
    finally:
        fused.used_for, compiled.used_for = old


def _edge_rows(seed: int) -> np.ndarray:
    """Two rows of 512 made of 32-blocks of assorted kinds: random, zeros, constants, one
    outlier, tiny (subnormal) and huge magnitudes, negative-heavy, half zeros, ±0."""
    rng = np.random.default_rng(seed)
    blocks = []
    for i in range(2 * 16):
        kind = i % 12
        s = np.float32(10.0 ** rng.uniform(-4, 1))
        b = (rng.standard_normal(32) * s).astype(np.float32)
        if kind == 1:
            b[:] = 0
        elif kind == 2:
            b[:] = s
        elif kind == 3:
            b[:] = -s
        elif kind == 4:
            b = b * np.float32(1e-3)
            b[rng.integers(32)] = s * rng.choice([-1, 1])
        elif kind == 5:
            b = (rng.standard_normal(32) * 1e-40).astype(np.float32)
        elif kind == 6:
            b = (rng.standard_normal(32) * 1e30).astype(np.float32)
        elif kind == 7:
            b = -np.abs(b)
            b[rng.integers(32)] *= -1
        elif kind == 8:
            b[rng.random(32) < 0.5] = 0
        elif kind == 9:
            b = np.where(rng.random(32) < 0.5, np.float32(0.0), np.float32(-0.0))
        elif kind == 10:  # a few large values among small ones
            b[rng.integers(32, size=3)] *= 100
        blocks.append(b.astype(np.float32))
    return np.concatenate(blocks).reshape(2, 512)


@under_interpreter
@pytest.mark.parametrize("qtype", PART_TYPES)
def test_fused_matches_torch_and_ggml(qtype: str, one_program: None) -> None:
    """Golden cases (with the imatrix) and assorted blocks: the kernel's bytes are the torch
    path's, and the golden rows pass the golden criterion (all identical in practice)."""
    g = inputs()
    gold = {"edge": 2, "normal": 1}  # rows of each golden case
    x = np.concatenate([*(g[c][:r] for c, r in gold.items()), _edge_rows(len(qtype))])
    w = g["imatrix"]
    ours = kernels.quantize(x, qtype, w)
    want = _torch_path(lambda: kernels.quantize(x, qtype, w))
    np.testing.assert_array_equal(ours, want)
    rb = ours.size // x.shape[0]
    r0 = 0
    for case, rows in gold.items():
        ref = golden(qtype)[f"{case}-imatrix"]
        n, same = compare(
            g[case][:rows], ours[r0 * rb : (r0 + rows) * rb], ref[: rows * rb], qtype, w
        )
        assert same == n, (qtype, case, n - same)
        r0 += rows


# the tests below use IQ2_S: its child runs them
if "iq2_s" in PART_TYPES:

    @under_interpreter
    @pytest.mark.parametrize("mode", ["plain", "odd"])
    def test_fused_plain_and_odd_weights(mode: str, one_program: None) -> None:
        """IQ2_S without an imatrix (ggml's own weights; against ggml's golden bytes too),
        and with an imatrix holding zeros and negative entries (NaN weights, where ggml
        aborts and dynq takes the first neighbour), against the torch path."""
        qtype = "iq2_s"
        g = inputs()
        x = np.concatenate([g["heavy"][:1], _edge_rows(7)[:1]])
        w = None
        if mode == "odd":
            w = g["imatrix"].copy()
            w[::7] = 0
            w[3::11] = -1
        ours = kernels.quantize(x, qtype, w)
        want = _torch_path(lambda: kernels.quantize(x, qtype, w))
        np.testing.assert_array_equal(ours, want)
        if w is None:
            rb = ours.size // x.shape[0]
            n, same = compare(x[:1], ours[:rb], golden(qtype)["heavy"][:rb], qtype, w)
            assert same == n, n - same

    @under_interpreter
    @pytest.mark.parametrize("alone", [True, False], ids=["search", "search+requantize"])
    def test_search_default_launch(alone: bool) -> None:
        """IQ2_S's ``_search`` (its own hook: no pass after the trials), and the search with
        its pass, at the default launch configuration (several programs, the last one partly
        masked, ``_IQ_NBC`` neighbours a step)."""
        cls = iq_lowbit.IQ2_S
        redo = "off"
        lat = lattice(cls.name)
        gen = torch.Generator().manual_seed(11)
        b, n = 40, cls.sub
        xval = (torch.randn(b, n, generator=gen) * 0.1).abs()
        xval[0] = 0
        xval[1] = 0.5
        weight = torch.rand(b, n, generator=gen) * xval
        waux = base.sqrtf(weight)
        mx = xval.max(dim=1).values
        q = 2 * cls.kmaxq - 1
        scale0 = base.divc(mx, q)
        ids = iq_lowbit._trial_ids(q, cls.step, -cls.ntry, cls.ntry, mx)
        L0 = torch.zeros((b, n), dtype=torch.int64)
        args = (lat, xval, weight, waux, ids, cls.kmaxq, scale0, L0, cls.ongrid0)
        assert fused._IQ_BLOCK < b
        if alone:
            got = iq_lowbit._search(*args)
            want = _torch_path(lambda: iq_lowbit._search(*args))
        else:
            got = iq_lowbit._search_requantize(*args, redo)
            want = _torch_path(lambda: iq_lowbit._search_requantize(*args, redo))
        for a, c in zip(got, want, strict=True):
            assert a.dtype == c.dtype and a.shape == c.shape
            if a.dtype == torch.float32:
                a, c = a.view(torch.int32), c.view(torch.int32)
            assert torch.equal(a, c)
