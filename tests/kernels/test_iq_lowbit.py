"""The 1–3 bit i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): golden bytes
from libggml (tests/data/kernels/make_golden_lowbit.py), dequantization against gguf, the
lattice tables, round-trip properties (hypothesis), and a live comparison with libggml when
DYNQ_LIBGGML is set (local only)."""

from __future__ import annotations

import os
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import quants as gq
from gguf.constants import GGMLQuantizationType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynq import kernels, qtypes
from dynq.errors import KernelError
from dynq.kernels import iq_grids
from dynq.kernels.iq_lowbit import record_scan

from ._util import DEVICE

DATA = Path(__file__).resolve().parents[1] / "data" / "kernels"

TYPES = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m")
#: ggml refuses these without an importance matrix (ggml_quantize_requires_imatrix)
NEEDS_IMATRIX = ("iq2_xxs", "iq2_xs", "iq1_s")
CASES = ("normal", "heavy", "uniform", "edge", "smollm2", "gemma3")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The small tensors here gain nothing from intra-op threads, which on a busy machine cost
    more than they give (dynq.kernels.quantize itself goes single-threaded per chunk when it
    has several chunks)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@cache
def inputs() -> dict[str, np.ndarray]:
    with np.load(DATA / "iq_lowbit_inputs.npz") as z:
        return {k: z[k] for k in z.files}


@cache
def golden(t: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"iq_lowbit_{t}.npz") as z:
        return {k: z[k] for k in z.files}


def _imatrix(mode: str) -> np.ndarray | None:
    return {"plain": None, "imatrix": inputs()["imatrix"], "flat": inputs()["imatrix_flat"]}[mode]


def block_errors(x: np.ndarray, q: np.ndarray, t: str, w: np.ndarray | None) -> np.ndarray:
    """Weighted squared error of each 256-block of the quantized bytes ``q`` of rows ``x``."""
    y = kernels.dequantize(q, t, [x.shape[1], x.shape[0]])
    e = (x.astype(np.float64) - y) ** 2
    if w is not None:
        e = e * w.astype(np.float64)
    return e.reshape(-1, 256).sum(axis=1)


def compare(x: np.ndarray, ours: np.ndarray, ref: np.ndarray, t: str, w: np.ndarray | None):
    """At least 99.9 % of blocks byte-identical to ggml's, every other block with a weighted
    squared error within 0.01 % of ggml's. Returns ``(blocks, identical)``."""
    ts = qtypes.get(t).type_size
    assert ours.dtype == np.uint8 and ours.shape == ref.shape, (ours.shape, ref.shape)
    a, b = ours.reshape(-1, ts), ref.reshape(-1, ts)
    differ = (a != b).any(axis=1)
    n, nd = len(a), int(differ.sum())
    if nd:
        eo = block_errors(x, ours, t, w)[differ]
        er = block_errors(x, ref, t, w)[differ]
        worse = eo > er * 1.0001 + 1e-30
        first = int(np.nonzero(differ)[0][0])
        assert (n - nd) / n >= 0.999 and not worse.any(), (
            f"{t}: {nd}/{n} blocks differ from ggml; {int(worse.sum())} with a larger error; "
            f"first differing block {first}: ours {a[first].tolist()} ggml {b[first].tolist()}"
        )
    return n, n - nd


# ----------------------------------------------------------------------------------------------
# golden bytes


GOLDEN = [
    pytest.param(t, c, m, id=f"{t}-{c}-{m}")
    for t in TYPES
    for c in CASES
    for m in ("imatrix", "plain")
    if not (m == "plain" and t in NEEDS_IMATRIX)
] + [pytest.param(t, "edge", "flat", id=f"{t}-edge-flat") for t in TYPES]


@pytest.mark.parametrize(("qtype", "case", "mode"), GOLDEN)
def test_golden(qtype: str, case: str, mode: str) -> None:
    x = inputs()[case]
    w = _imatrix(mode)
    key = case if mode == "plain" else f"{case}-{mode}"
    ours = kernels.quantize(x, qtype, w, device=DEVICE)
    compare(x, ours, golden(qtype)[key], qtype, w)


@pytest.mark.parametrize("qtype", TYPES)
def test_golden_chunked_torch_input(qtype: str) -> None:
    """Two cases stacked, as a torch tensor, in 3-row chunks (chunk borders inside cases)
    worked in CPU slices of 4 super-blocks (slice borders inside chunks)."""
    cases = ("edge", "smollm2")
    xs = np.concatenate([inputs()[c] for c in cases])
    ref = np.concatenate([golden(qtype)[f"{c}-imatrix"] for c in cases])
    k = kernels.kernel_for(qtype)
    old = k.chunk_elems, k.cpu_slice
    k.chunk_elems, k.cpu_slice = 3 * xs.shape[1], 4
    try:
        ours = kernels.quantize(torch.from_numpy(xs), qtype, inputs()["imatrix"], device=DEVICE)
    finally:
        k.chunk_elems, k.cpu_slice = old
    compare(xs, ours, ref, qtype, inputs()["imatrix"])


@pytest.mark.parametrize("qtype", NEEDS_IMATRIX)
def test_requires_imatrix(qtype: str) -> None:
    with pytest.raises(KernelError, match="importance matrix"):
        kernels.quantize(inputs()["normal"], qtype)


# ----------------------------------------------------------------------------------------------
# dequantization


def _bits(a: np.ndarray) -> np.ndarray:
    """The float32 bits, every NaN as one pattern: a NaN's sign and payload (IQ1_M's random
    bytes make inf·0) depend on the machine and the library, not on the format."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return np.where(np.isnan(a), np.uint32(0x7FC00000), a.view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_matches_gguf(qtype: str) -> None:
    """Every golden block, and random bytes (with finite fp16 scales)."""
    gt = GGMLQuantizationType[qtype.upper()]
    ts = qtypes.get(qtype).type_size
    datas = [np.concatenate(list(golden(qtype).values()))]
    rng = np.random.default_rng(zlib.crc32(qtype.encode()))
    raw = rng.integers(0, 256, (64, ts), dtype=np.uint8)
    if qtype != "iq1_m":  # IQ1_M spreads its fp16 scale over the block-scale bits
        raw[:, :2] = (
            (rng.standard_normal(64) * 0.01).astype(np.float16).view(np.uint8).reshape(64, 2)
        )
    datas.append(raw.reshape(-1))
    for data in datas:
        rows = data.size // ts
        ours = kernels.dequantize(data, qtype, [256, rows])
        theirs = gq.dequantize(data.reshape(rows, ts), gt)
        np.testing.assert_array_equal(_bits(ours), _bits(theirs), err_msg=qtype)


# ----------------------------------------------------------------------------------------------
# lattices


@pytest.mark.parametrize("name", ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s"])
def test_lattice_tables(name: str) -> None:
    lat = iq_grids.lattice(name)
    cls = {
        "iq2_xxs": gq.IQ2_XXS,
        "iq2_xs": gq.IQ2_XS,
        "iq2_s": gq.IQ2_S,
        "iq3_xxs": gq.IQ3_XXS,
        "iq3_s": gq.IQ3_S,
        "iq1_s": gq.IQ1_S,
    }[name]
    # the levels decode to gguf's own grid
    cls.init_grid()
    vals = np.asarray(cls.grid_map, dtype=np.float32)[lat.levels]
    np.testing.assert_array_equal(vals, cls.grid.reshape(cls.grid_shape))
    # the map inverts the grid
    sh = lat.bits * np.arange(lat.group)
    u = (lat.levels << sh).sum(axis=1)
    assert (lat.map[u] == np.arange(lat.size)).all()
    assert (lat.map >= 0).sum() == lat.size
    # neighbour lists: every reachable vector off the grid has one, ordered by (d2, index),
    # holding exactly the nwant nearest distance shells (checked by brute force on a sample)
    pos_g = 2 * lat.levels + 1
    off = np.nonzero(lat.nb_count)[0]
    assert len(off) == lat.reach**lat.group - lat.size
    for uu in off[:: max(1, len(off) // 200)]:
        lv = (uu >> sh) & ((1 << lat.bits) - 1)
        d2 = ((pos_g - (2 * lv + 1)) ** 2).sum(axis=1)
        shells = np.unique(d2)[: lat.nwant]
        want = np.nonzero(np.isin(d2, shells))[0]
        want = want[np.lexsort((want, d2[want]))]
        got = lat.nb_list[lat.nb_start[uu] : lat.nb_start[uu] + lat.nb_count[uu]]
        np.testing.assert_array_equal(got, want)


def test_record_scan_matches_the_sequential_loop() -> None:
    g = torch.Generator().manual_seed(5)
    for trial in range(16):
        b, c = 8, 1 + trial * 5
        sumqx = torch.randn(b, c, generator=g)
        sumq2 = torch.rand(b, c, generator=g) - 0.1
        if trial % 2:  # ties and exact repeats
            sumqx = torch.round(sumqx * 4) / 4
            sumq2 = torch.round(sumq2 * 4) / 4
        sc = sumqx / sumq2
        for b0 in (0.0, -3.4028234663852886e38):
            best0 = torch.full((b,), b0)
            pick, best = record_scan(sumqx * sumqx, sumq2, sc * sumqx, best0)
            for r in range(b):
                bb, pk = torch.tensor(b0), -1
                for j in range(c):
                    if sumq2[r, j] > 0 and sumqx[r, j] * sumqx[r, j] > bb * sumq2[r, j]:
                        bb, pk = sc[r, j] * sumqx[r, j], j
                assert int(pick[r]) == pk
                assert float(best[r]) == float(bb) or pk < 0


# ----------------------------------------------------------------------------------------------
# round-trip properties

#: max |x - dequantize(quantize(x))| over a well-scaled 32-block, as a fraction of the
#: super-block's max |x| (no imatrix; the grids are coarse)
REL_BOUND = {
    "iq2_xxs": 0.75,
    "iq2_xs": 0.75,
    "iq2_s": 0.75,
    "iq3_xxs": 0.5,
    "iq3_s": 0.5,
    "iq1_s": 1.2,
    "iq1_m": 1.2,
}
N = 256


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    """Two rows of 256, built from 32-blocks of different kinds."""
    out = []
    for _ in range(2 * N // 32):
        kind = draw(st.sampled_from(["zeros", "const", "normal", "outlier", "subnormal"]))
        seed = draw(st.integers(0, 2**32 - 1))
        scale = np.float32(10.0 ** draw(st.floats(-9, 4)))
        rng = np.random.default_rng(seed)
        if kind == "zeros":
            b = np.zeros(32, np.float32)
        elif kind == "const":
            b = np.full(32, scale * draw(st.sampled_from([-1.0, 1.0])), np.float32)
        elif kind == "normal":
            b = (rng.standard_normal(32) * scale).astype(np.float32)
        elif kind == "outlier":
            b = (rng.standard_normal(32) * scale * np.float32(1e-3)).astype(np.float32)
            b[rng.integers(32)] = scale * draw(st.sampled_from([-1.0, 1.0]))
        else:
            b = (rng.standard_normal(32) * 1e-40).astype(np.float32)
        out.append(b)
    return np.concatenate(out).reshape(2, N)


def _check(qtype: str, x: np.ndarray, w: np.ndarray | None) -> None:
    t = qtypes.get(qtype)
    q = kernels.quantize(x, qtype, w)
    assert q.shape == (2 * t.row_bytes(N),)
    y = kernels.dequantize(q, qtype, [N, 2])
    assert np.isfinite(y).all()
    xs = x.reshape(-1, 256).astype(np.float64)
    ys = y.reshape(xs.shape).astype(np.float64)
    amax = np.abs(xs).max(axis=1)
    err = np.abs(xs - ys).max(axis=1)
    if qtype == "iq3_s":
        # ggml's IQ3_S skips an all-zero 32-block without advancing its code pointers: the
        # codes of the blocks after it land one slot early (the kernel does the same), so no
        # error bound holds for such super-blocks
        keep = ~(np.abs(xs.reshape(-1, 8, 32)).max(axis=2) == 0).any(axis=1)
        xs, ys, amax, err = xs[keep], ys[keep], amax[keep], err[keep]
        x = x.reshape(-1, 256)[keep]
        y = y.reshape(-1, 256)[keep]
    assert (err[amax == 0] == 0).all()  # all-zero super-blocks come back as zeros
    assert (err <= 2.0 * amax + 1e-6).all(), (err / np.maximum(amax, 1e-38)).max()
    if w is None:
        # 32-blocks holding the super-block's largest magnitude, when it is well scaled
        xb = x.reshape(-1, 8, 32).astype(np.float64)
        yb = y.reshape(xb.shape).astype(np.float64)
        top = np.abs(xb).max(axis=2) == amax[:, None]
        ok = top & (amax[:, None] > 1e-2)
        e32 = np.abs(xb - yb).max(axis=2)
        bad = ok & (e32 > REL_BOUND[qtype] * amax[:, None])
        assert not bad.any(), (qtype, (e32 / amax[:, None])[bad].max())


@pytest.mark.parametrize("qtype", [t for t in TYPES if t not in NEEDS_IMATRIX])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows())
def test_round_trip(qtype: str, x: np.ndarray) -> None:
    _check(qtype, x, None)


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=rows(), wseed=st.integers(0, 2**32 - 1))
def test_round_trip_imatrix(qtype: str, x: np.ndarray, wseed: int) -> None:
    w = np.exp(np.random.default_rng(wseed).standard_normal(N) * 1.5).astype(np.float32)
    _check(qtype, x, w)


@pytest.mark.parametrize("qtype", TYPES)
def test_zero_constant_and_outlier_rows(qtype: str) -> None:
    w = np.ones(N, np.float32)
    x = np.zeros((2, N), np.float32)
    y = kernels.dequantize(kernels.quantize(x, qtype, w), qtype, [N, 2])
    assert not y.any()
    x = np.full((2, N), 0.75, np.float32)
    x[1] = -2.5
    y = kernels.dequantize(kernels.quantize(x, qtype, w), qtype, [N, 2])
    assert np.abs(y - x).max() <= REL_BOUND[qtype] * 2.5
    x = np.zeros((2, N), np.float32)
    # a single outlier must survive, with its sign (in the first 32-block: IQ3_S moves the codes
    # of blocks that follow an all-zero one, as ggml does)
    x[:, 7] = [3.0, -1e3]
    y = kernels.dequantize(kernels.quantize(x, qtype, w), qtype, [N, 2])
    assert np.sign(y[:, 7]).tolist() == [1.0, -1.0]
    assert (np.abs(y[:, 7] - x[:, 7]) <= REL_BOUND[qtype] * np.abs(x[:, 7])).all()


# ----------------------------------------------------------------------------------------------
# live comparison with libggml (local only)

LIB = os.environ.get("DYNQ_LIBGGML")
LIVE_ROWS = int(os.environ.get("DYNQ_LIVE_ROWS", "16"))
LIVE_DEVICE = os.environ.get("DYNQ_LIVE_DEVICE", "cpu")


@pytest.mark.skipif(not LIB, reason="DYNQ_LIBGGML is not set")
@pytest.mark.parametrize("mode", ["imatrix", "plain"])
@pytest.mark.parametrize("dist", ["normal", "heavy", "uniform", "positive"])
@pytest.mark.parametrize("qtype", TYPES)
def test_live(qtype: str, dist: str, mode: str) -> None:
    from dynq.kernels.ggml_ref import load

    if mode == "plain" and qtype in NEEDS_IMATRIX:
        pytest.skip("ggml needs an imatrix")
    seed = zlib.crc32(f"{qtype}/{dist}/{mode}".encode())
    rng = np.random.default_rng(seed)
    shape = (LIVE_ROWS, 2048)
    x = {
        "normal": lambda: rng.standard_normal(shape),
        "heavy": lambda: rng.standard_t(2, shape) * 0.02,
        "uniform": lambda: rng.uniform(-1, 1, shape),
        "positive": lambda: rng.random(shape),
    }[dist]().astype(np.float32)
    w = None
    if mode == "imatrix":
        w = np.exp(rng.standard_normal(shape[1]) * 1.5).astype(np.float32)
    ref = load(LIB).quantize(x, qtype, w)
    ours = kernels.quantize(x, qtype, w, device=LIVE_DEVICE)
    compare(x, ours, ref, qtype, w)
