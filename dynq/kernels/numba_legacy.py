"""Whole-row numba kernels for the 32-element block types, torch-free: float32 rows to GGUF
bytes and back.

``quantize_<t>(x, w, has_w, out)``: float32 rows ``x`` ``[rows, n]`` (C-contiguous, ``n`` a
multiple of 32) → ``out`` uint8 ``[rows, row_bytes]``, exactly the bytes ggml's
``quantize_<t>`` writes; ``w`` float32 ``[n]`` is its ``quant_weights`` (the imatrix), read only
when ``has_w`` (otherwise a 1-element dummy). ``dequantize_<t>(q, out)``: ``q`` uint8
``[rows, row_bytes]`` → ``out`` float32 ``[rows, n]``, exactly ggml's ``dequantize_row_<t>``.
Types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (:data:`QUANTIZE`, :data:`DEQUANTIZE`); IQ4_NL and IQ4_XS,
which search on the tiles defined here, are in :mod:`dynq.kernels.numba_iquants`.

The specification is the torch path, :mod:`dynq.kernels.legacy` (ggml's ``ggml-quants.c``
operation for operation), and the conventions are those of :mod:`dynq.kernels.numba_kernels`:
every float is a ``float32`` and every constant too, no fast-math (so no fused multiply-add),
every C sum runs left to right from the C's start, ggml's ``nearest_int`` is round-half-even
(``rint``, exact where it is used here), ``roundf`` rounds half away from zero, C's float → int
conversion is x86's (:func:`~dynq.kernels.numba_kernels.trunc_i32`), float → fp16 rounds to
nearest even (:func:`~dynq.kernels.numba_kernels.fp16_bits`, F16C's ``vcvtps2ph``).

Without an imatrix the legacy types are ggml's ``quantize_row_*_ref``: one pass per block, row
by row (the scale of each block, then its quants; the fp16 scales of a row converted
together). With one, the blocks' weights ``qw[j]*sqrtf(sigma2 + x[j]^2)`` (sigma2: the row's
sum of squares, left to right, over ``n``) feed a search: ``make_qx_quants`` (Q4_0, Q5_0),
``make_qkx3_quants`` (Q4_1, Q5_1). Those run :data:`LANES` blocks side by side, each block
one lane of a tile ``[32, LANES]`` (the C's loops over a block's values become loops over the
tile's rows, each a vector op over the lanes; its branches become per-lane selects), as
:func:`~dynq.kernels.numba_kernels.qkx` does. Tiles are flat arrays indexed ``j*LANES + g``
(2-D indexing costs the hot loops a third of their speed). The tiles, their workspace layout
and the byte helpers are shared with :mod:`dynq.kernels.numba_iquants`.

This module imports no torch, directly or through its imports.
"""

# ruff: noqa: E741

import numpy as np
from numba import njit

from dynq.kernels.numba_kernels import fp16_bits, fp16_value, trunc_i32

__all__ = [
    "DEQUANTIZE",
    "LANES",
    "QUANTIZE",
    "dequantize_q4_0",
    "dequantize_q4_1",
    "dequantize_q5_0",
    "dequantize_q5_1",
    "dequantize_q8_0",
    "quantize_q4_0",
    "quantize_q4_1",
    "quantize_q5_0",
    "quantize_q5_1",
    "quantize_q8_0",
]

QK = 32
#: blocks searched side by side: two AVX-512 vectors of float32 (with one, 16, LLVM unrolls
#: the lane loops and then leaves some scalar; with two it vectorises them all, and the two
#: halves' sums overlap)
LANES = 32

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
TWO = np.float32(2.0)
HALF = np.float32(0.5)
EPS = np.float32(1e-15)  # GROUP_MAX_EPS
INF = np.float32(np.inf)
NAN = np.float32(np.nan)
MAGIC = np.float32(12582912.0)  # 1.5 * 2**23
TWO24 = np.float32(16777216.0)


# ---- fp16 ----------------------------------------------------------------------------------------


@njit(inline="always")
def get_half(q, r, o):
    return fp16_value(np.int32(q[r, o]) | (np.int32(q[r, o + 1]) << 8))


@njit(inline="always")
def put_halves(out, r, dv, nb, bsize, off):
    # the fp16 of dv[ib] at out[r, ib*bsize + off], little-endian, for each block
    for ib in range(nb):
        h = fp16_bits(dv[ib])
        out[r, ib * bsize + off] = np.uint8(h & 0xFF)
        out[r, ib * bsize + off + 1] = np.uint8(h >> 8)


@njit(inline="always")
def put_half(out, r, o, h):
    out[r, o] = np.uint8(h & 0xFF)
    out[r, o + 1] = np.uint8(h >> 8)


# ---- the blocks' bytes -----------------------------------------------------------------------


@njit(inline="always")
def rint(v):
    # ggml's nearest_int (as a float) for |v| <= 2**22: round half to even
    return (v + MAGIC) - MAGIC


@njit(inline="always")
def abs_max_signed(x, r, j0):
    # `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` from amax = max = 0: the first value
    # of largest magnitude (+0.0 when all are zero)
    amax = ZERO
    mx = ZERO
    for j in range(QK):
        v = x[r, j0 + j]
        if np.abs(v) > amax:
            amax = np.abs(v)
            mx = v
    return mx


@njit(inline="always")
def min_max(x, r, j0):
    # quantize_row_q{4,5}_1_ref's `if (v < min) min = v; if (v > max) max = v;`
    mn = x[r, j0]
    mx = x[r, j0]
    for j in range(1, QK):
        v = x[r, j0 + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(inline="always")
def put_q4_sym(x, r, j0, out, o, idd, bias, nmax):
    # quantize_row_q4_0_ref's quants: MIN(15, (int8_t)(x*id + 8.5f)), two per byte
    for j in range(16):
        l0 = min(trunc_i32(x[r, j0 + j] * idd + bias), nmax)
        l1 = min(trunc_i32(x[r, j0 + j + 16] * idd + bias), nmax)
        out[r, o + j] = np.uint8((l0 & 0xF) | ((l1 & 0xF) << 4))


@njit(inline="always")
def put_q5_sym(x, r, j0, out, o, idd, bias, nmax):
    # quantize_row_q5_0_ref's quants: qh (bit j = bit 4 of quant j), then the low nibbles
    qh = 0
    for j in range(16):
        l0 = min(trunc_i32(x[r, j0 + j] * idd + bias), nmax)
        l1 = min(trunc_i32(x[r, j0 + j + 16] * idd + bias), nmax)
        out[r, o + 4 + j] = np.uint8((l0 & 0xF) | ((l1 & 0xF) << 4))
        qh |= (((l0 >> 4) & 1) << j) | (((l1 >> 4) & 1) << (j + 16))
    for k in range(4):
        out[r, o + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(inline="always")
def put_q4_asym(x, r, j0, out, o, mn, idd, nmax, clamp):
    # quantize_row_q4_1_ref's quants: (x - min)*id + 0.5f, to int, MIN 15 (Q4_1 only)
    for j in range(16):
        l0 = trunc_i32((x[r, j0 + j] - mn) * idd + HALF)
        l1 = trunc_i32((x[r, j0 + j + 16] - mn) * idd + HALF)
        if clamp:
            l0 = min(l0, nmax)
            l1 = min(l1, nmax)
        out[r, o + j] = np.uint8((l0 & 0xF) | ((l1 & 0xF) << 4))


@njit(inline="always")
def put_q5_asym(x, r, j0, out, o, mn, idd):
    # quantize_row_q5_1_ref's quants, qh then the low nibbles
    qh = 0
    for j in range(16):
        l0 = trunc_i32((x[r, j0 + j] - mn) * idd + HALF)
        l1 = trunc_i32((x[r, j0 + j + 16] - mn) * idd + HALF)
        out[r, o + 4 + j] = np.uint8((l0 & 0xF) | ((l1 & 0xF) << 4))
        qh |= (((l0 >> 4) & 1) << j) | (((l1 >> 4) & 1) << (j + 16))
    for k in range(4):
        out[r, o + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(inline="always")
def put_tile_nibbles(Lt, g, out, r, o):
    # lane g's 32 levels (tile Lt, int32) as 16 bytes L[j] | L[j+16] << 4
    for j in range(16):
        lo = Lt[j * LANES + g] & 0xF
        hi = Lt[(j + 16) * LANES + g] & 0xF
        out[r, o + j] = np.uint8(lo | (hi << 4))


@njit(inline="always")
def put_tile_q5(Lt, g, out, r, o):
    # lane g's 32 levels as Q5's qh (4 bytes) and low nibbles (16)
    qh = 0
    for j in range(QK):
        qh |= ((Lt[j * LANES + g] >> 4) & 1) << j
    for k in range(4):
        out[r, o + k] = np.uint8((qh >> (8 * k)) & 0xFF)
    put_tile_nibbles(Lt, g, out, r, o + 4)


# ---- the imatrix searches' tiles -----------------------------------------------------------------
#
# One float32 workspace ``ws`` holds a tile and every per-lane value: with a single array and
# constant offsets LLVM sees that the loops' loads and stores do not overlap, and vectorises
# them without run-time alias checks (which, past a handful of arrays, it gives up on).

G = LANES
XT = 0  # the blocks' values [32, G]: value j of lane g at XT + j*G + g
WT = XT + QK * G  # their weights
AUX = WT + QK * G  # make_qkx3_quants: a candidate's levels; make_qx_quants: w*x
ROWS = AUX + QK * G  # per-lane rows of G values from here


def _row(i):
    return ROWS + i * G


SG = _row(0)  # the lane's row's sigma2
# make_qkx3_quants' state
MN, MN0, MX, SW, SX, SC, BEST, BIS, BMN = (_row(i) for i in range(1, 10))
ISC, SL, SL2, SXL, ERR, TSC, TMN, OK = (_row(i) for i in range(10, 18))
# make_qx_quants' state: the 19 candidates' inverse scales and sums, [19, G] each
NQX = 19
QMX, QSC, QBIS = (_row(i) for i in range(1, 4))
QISC = _row(4)
QS1 = QISC + NQX * G
QS2 = QS1 + NQX * G
WS_SIZE = max(_row(18), QS2 + NQX * G)


@njit(inline="always")
def rows_sigma2(x, sig2):
    # each row's sum_x2/n_per_row, sum_x2 += x[j]*x[j] left to right from 0 (four rows at a
    # time: four independent chains of additions)
    rows, n = x.shape
    fn = np.float32(n)
    r = 0
    while r + 4 <= rows:
        a = ZERO
        b = ZERO
        c = ZERO
        d = ZERO
        for j in range(n):
            a += x[r, j] * x[r, j]
            b += x[r + 1, j] * x[r + 1, j]
            c += x[r + 2, j] * x[r + 2, j]
            d += x[r + 3, j] * x[r + 3, j]
        sig2[r] = a / fn
        sig2[r + 1] = b / fn
        sig2[r + 2] = c / fn
        sig2[r + 3] = d / fn
        r += 4
    while r < rows:
        a = ZERO
        for j in range(n):
            a += x[r, j] * x[r, j]
        sig2[r] = a / fn
        r += 1


@njit(inline="always")
def load_tile(xf, n, w, has_w, k0, m, nb, ws, lr, lb, xb, wb):
    # lanes g < m: block k0 + g of the rows taken as one sequence of blocks (row k//nb, block
    # k%nb; xf: the rows as one flat array of n each); spare lanes repeat the last block
    # (their results are dropped). The values into XT, the quant weights qw (has_w) into WT.
    # (Value j of every lane, then j+1: the loads gather, the stores are contiguous.)
    for g in range(G):
        k = k0 + min(g, m - 1)
        r = k // nb
        ib = k - r * nb
        lr[g] = r
        lb[g] = ib
        xb[g] = r * n + ib * QK
        wb[g] = ib * QK
    for j in range(QK):
        for g in range(G):
            ws[XT + j * G + g] = xf[xb[g] + j]
            if has_w:
                ws[WT + j * G + g] = w[wb[g] + j]


@njit(inline="always")
def sqrt_weights(ws):
    # WT = qw*sqrtf(sigma2 + x*x) with the lane's sigma2 in SG (the square roots in a loop of
    # their own, which LLVM vectorises)
    for j in range(QK):
        for g in range(G):
            v = ws[XT + j * G + g]
            ws[AUX + j * G + g] = ws[SG + g] + v * v
    for k in range(QK * G):
        ws[WT + k] = ws[WT + k] * np.sqrt(ws[AUX + k])


@njit(inline="always")
def row_weights(ws, sig2, lr):
    # the legacy types' weights: sigma2 = the block's row's (sig2[row])
    for g in range(G):
        ws[SG + g] = sig2[lr[g]]
    sqrt_weights(ws)


@njit(inline="always")
def levels(isc, x, mn, fnmax):
    # MAX(0, MIN(nmax, nearest_int(iscale*(x - min)))), clamped before rounding (the same for
    # the finite inverse scales used here: |iscale*(x - min)| stays far below 2**22)
    v = (x - mn) * isc
    if not v >= ZERO:
        v = ZERO
    if v > fnmax:
        v = fnmax
    return rint(v)


@njit(inline="always")
def finite_or_zero(v):
    # an inverse scale that overflowed: 0 (every level then 0, as nearest_int(inf) clamps to)
    return v if np.abs(v) < INF else ZERO


@njit(inline="always")
def qkx_tile(ws, nmax, cand, Lt):
    # make_qkx3_quants(32, nmax, x, weight, L, &the_min, Laux, rmin, rdelta, nstep, false) for
    # the tile's lanes (cand: rmin + rdelta*is + nmax), as numba_kernels.qkx. A candidate that
    # wins moves `min` for the next ones, so the candidates run in order, the lanes side by
    # side. Leaves the scale in ws[SC + g], `min` (= -the_min) in ws[MN + g], the levels in Lt.
    fnmax = np.float32(nmax)
    for g in range(G):
        ws[MN + g] = ws[XT + g]
        ws[MX + g] = ws[XT + g]
        ws[SW + g] = ws[WT + g]
        ws[SX + g] = ws[WT + g] * ws[XT + g]
    for j in range(1, QK):
        jo = j * G
        for g in range(G):
            v = ws[XT + jo + g]
            ws[MN + g] = v if v < ws[MN + g] else ws[MN + g]
            ws[MX + g] = v if v > ws[MX + g] else ws[MX + g]
            ws[SW + g] += ws[WT + jo + g]
            ws[SX + g] += ws[WT + jo + g] * v
    for g in range(G):
        if ws[MN + g] > ZERO:
            ws[MN + g] = ZERO
        ws[MN0 + g] = ws[MN + g]
        iscale = fnmax / (ws[MX + g] - ws[MN + g])
        ws[SC + g] = ONE / iscale
        ws[BIS + g] = finite_or_zero(iscale)
        ws[BEST + g] = ZERO
        ws[BMN + g] = ws[MN + g]
    for j in range(QK):
        jo = j * G
        for g in range(G):
            la = levels(ws[BIS + g], ws[XT + jo + g], ws[MN + g], fnmax)
            diff = ws[SC + g] * la + ws[MN + g] - ws[XT + jo + g]
            ws[BEST + g] += diff * diff * ws[WT + jo + g]
    for c in range(cand.shape[0]):
        for g in range(G):
            ws[ISC + g] = finite_or_zero(cand[c] / (ws[MX + g] - ws[MN + g]))
            ws[SL + g] = ZERO
            ws[SL2 + g] = ZERO
            ws[SXL + g] = ZERO
            ws[ERR + g] = ZERO
        for j in range(QK):
            jo = j * G
            for g in range(G):
                la = levels(ws[ISC + g], ws[XT + jo + g], ws[MN + g], fnmax)
                ws[AUX + jo + g] = la
                wl = ws[WT + jo + g] * la
                ws[SL + g] += wl
                ws[SL2 + g] += wl * la
                ws[SXL + g] += wl * ws[XT + jo + g]
        for g in range(G):
            sw = ws[SW + g]
            sl = ws[SL + g]
            sl2 = ws[SL2 + g]
            sxl = ws[SXL + g]
            sx = ws[SX + g]
            D = sw * sl2 - sl * sl
            ts = (sw * sxl - sx * sl) / D
            tm = (sl2 * sx - sl * sxl) / D
            if tm > ZERO:
                tm = ZERO
                ts = sxl / sl2
            ws[TSC + g] = ts
            ws[TMN + g] = tm
            ws[OK + g] = ONE if D > ZERO else ZERO
        for j in range(QK):
            jo = j * G
            for g in range(G):
                diff = ws[AUX + jo + g] * ws[TSC + g] + ws[TMN + g] - ws[XT + jo + g]
                ws[ERR + g] += diff * diff * ws[WT + jo + g]
        for g in range(G):
            take = (ws[OK + g] > ZERO) & (ws[ERR + g] < ws[BEST + g])
            ws[BIS + g] = ws[ISC + g] if take else ws[BIS + g]
            ws[BMN + g] = ws[MN + g] if take else ws[BMN + g]
            ws[BEST + g] = ws[ERR + g] if take else ws[BEST + g]
            ws[SC + g] = ws[TSC + g] if take else ws[SC + g]
            ws[MN + g] = ws[TMN + g] if take else ws[MN + g]
    for j in range(QK):
        jo = j * G
        for g in range(G):
            l = np.int32(levels(ws[BIS + g], ws[XT + jo + g], ws[BMN + g], fnmax))
            Lt[jo + g] = 0 if ws[MX + g] <= ws[MN0 + g] else l
    for g in range(G):
        if ws[MX + g] <= ws[MN0 + g]:  # flat: L = 0, scale 0, the_min = -min
            ws[SC + g] = ZERO
            ws[MN + g] = ws[MN0 + g]


@njit(inline="always")
def tile_signed_max(ws):
    # each lane's max, the first value of largest magnitude (`if (ax > amax) { amax = ax; max
    # = x; }`), into ws[QMX + g]
    for g in range(G):
        ws[QMX + g] = ZERO
    for j in range(QK):
        for g in range(G):
            v = ws[XT + j * G + g]
            ws[QMX + g] = v if np.abs(v) > np.abs(ws[QMX + g]) else ws[QMX + g]


@njit(inline="always")
def qx_tile(ws, nmax, cand, Lt):
    # make_qx_quants(32, nmax, x, L, rmse_type 1, weight) for the tile's lanes: the 19
    # candidate inverse scales -cand[t]/max (cand: nmax, then nmax + 0.1f*is) summed side by
    # side (each sum still left to right over the block), then ggml's in-order choice. Leaves
    # the scale in ws[QSC + g], in Lt the levels of the last candidate taken, + nmax; an
    # all-zero block (amax < GROUP_MAX_EPS): L = 0, scale 0
    flo = np.float32(-nmax)
    fhi = np.float32(nmax - 1)
    tile_signed_max(ws)
    for g in range(G):
        # an all-zero block's max is taken as 1 (finite work; its result is replaced below)
        m = ws[QMX + g] if np.abs(ws[QMX + g]) >= EPS else ONE
        for t in range(NQX):
            ws[QISC + t * G + g] = -cand[t] / m
            ws[QS1 + t * G + g] = ZERO
            ws[QS2 + t * G + g] = ZERO
    for k in range(QK * G):
        ws[AUX + k] = ws[WT + k] * ws[XT + k]
    for j in range(QK):
        jo = j * G
        for t in range(NQX):
            to = t * G
            for g in range(G):
                lf = min(max(rint(ws[QISC + to + g] * ws[XT + jo + g]), flo), fhi)
                ws[QS1 + to + g] += ws[AUX + jo + g] * lf
                ws[QS2 + to + g] += ws[WT + jo + g] * lf * lf
    for g in range(G):
        sx = ws[QS1 + g]
        sl = ws[QS2 + g]
        sc = sx / sl if sl != ZERO else ZERO
        best = sc * sx
        bis = ws[QISC + g]
        for t in range(1, NQX):
            sx = ws[QS1 + t * G + g]
            sl = ws[QS2 + t * G + g]
            take = (sl > ZERO) & (sx * sx > best * sl)
            sc = sx / sl if take else sc
            best = sc * sx if take else best
            bis = ws[QISC + t * G + g] if take else bis
        ws[QSC + g] = sc if np.abs(ws[QMX + g]) >= EPS else ZERO
        ws[QBIS + g] = bis
    for j in range(QK):
        jo = j * G
        for g in range(G):
            l = np.int32(min(max(rint(ws[QBIS + g] * ws[XT + jo + g]), flo), fhi)) + nmax
            Lt[jo + g] = l if np.abs(ws[QMX + g]) >= EPS else 0


@njit(inline="always")
def tile_halves(ws, off, hv):
    # hv[g] = the fp16 bits of ws[off + g], every lane
    for g in range(G):
        hv[g] = fp16_bits(ws[off + g])


# ---- Q8_0 ------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q8_0(x, w, has_w, out):
    # quantize_row_q8_0_ref (ggml ignores the imatrix): d = amax/127, q = roundf(x/d)
    rows, n = x.shape
    nb = n // QK
    dv = np.empty(nb, np.float32)
    for r in range(rows):
        for ib in range(nb):
            j0 = ib * QK
            o = ib * 34 + 2
            amax = ZERO
            for j in range(QK):
                v = np.abs(x[r, j0 + j])
                if v > amax:
                    amax = v
            d = amax / np.float32(127.0)
            idd = ONE / d if d != ZERO else ZERO
            dv[ib] = d
            for j in range(QK):
                v = x[r, j0 + j] * idd
                t = np.trunc(v)
                v = t + np.trunc((v - t) * TWO)  # roundf: half away from zero, exactly
                out[r, o + j] = np.uint8(trunc_i32(v) & 0xFF)
        put_halves(out, r, dv, nb, 34, 0)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q8_0(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 34
            d = get_half(q, r, o)
            for j in range(QK):
                out[r, ib * QK + j] = np.float32(np.int8(q[r, o + 2 + j])) * d


# ---- Q4_0, Q5_0 ------------------------------------------------------------------------------


def _qx_cand(nmax):
    # make_qx_quants' candidate numerators: nmax, then nmax + 0.1f*is for is = -9..-1, 1..9
    c = [np.float32(nmax)]
    for i in range(-9, 10):
        if i != 0:
            c.append(np.float32(np.float32(0.1) * np.float32(i)) + np.float32(nmax))
    return np.array(c, np.float32)


def _qkx3_cand(nmax):
    # make_qkx3_quants(…, rmin -0.9f, rdelta 0.05f, nstep 36)'s numerators rmin + rdelta*is + nmax
    c = [
        np.float32(np.float32(-0.9) + np.float32(np.float32(0.05) * np.float32(i)))
        + np.float32(nmax)
        for i in range(37)
    ]
    return np.array(c, np.float32)


_CAND_Q4_0 = _qx_cand(8)
_CAND_Q5_0 = _qx_cand(16)
_CAND_Q4_1 = _qkx3_cand(15)
_CAND_Q5_1 = _qkx3_cand(31)


@njit(nogil=True, cache=True, error_model="numpy")
def tile_rows(x, w, out, nmax, bsize, cand, qkx3, q5):
    # quantize_row_q{4,5}_{0,1}_impl with quant weights: per block, make_qx_quants(32, nmax,
    # …) (qkx3 False) or make_qkx3_quants(32, nmax, …) (qkx3 True), LANES blocks at a time
    rows, n = x.shape
    nb = n // QK
    sig2 = np.empty(rows, np.float32)
    rows_sigma2(x, sig2)
    ws = np.zeros(WS_SIZE, np.float32)
    Lt = np.empty(QK * G, np.int32)
    hd = np.empty(G, np.int32)
    hm = np.empty(G, np.int32)
    lr = np.empty(G, np.int64)
    lb = np.empty(G, np.int64)
    xb = np.empty(G, np.int64)
    wb = np.empty(G, np.int64)
    xf = x.reshape(-1)
    B = rows * nb
    for k0 in range(0, B, G):
        m = min(G, B - k0)
        load_tile(xf, n, w, True, k0, m, nb, ws, lr, lb, xb, wb)
        row_weights(ws, sig2, lr)
        if qkx3:
            qkx_tile(ws, nmax, cand, Lt)
            tile_halves(ws, SC, hd)
            tile_halves(ws, MN, hm)  # -the_min
            o2 = 4
        else:
            qx_tile(ws, nmax, cand, Lt)
            tile_halves(ws, QSC, hd)
            o2 = 2
        for g in range(m):
            r = lr[g]
            o = lb[g] * bsize
            put_half(out, r, o, hd[g])
            if qkx3:
                put_half(out, r, o + 2, hm[g])
            if q5:
                put_tile_q5(Lt, g, out, r, o + o2)
            else:
                put_tile_nibbles(Lt, g, out, r, o + o2)


@njit(inline="always")
def sym_rows(x, out, div, bias, nmax, bsize, q5):
    # quantize_row_q4_0_ref (div -8, bias 8.5, nmax 15) and quantize_row_q5_0_ref (-16, 16.5,
    # 31): d = max/div with max the first value of largest magnitude, quants MIN(nmax, x/d +
    # bias); the row's fp16 scales written together
    rows, n = x.shape
    nb = n // QK
    dv = np.empty(nb, np.float32)
    for r in range(rows):
        for ib in range(nb):
            j0 = ib * QK
            d = abs_max_signed(x, r, j0) / div
            idd = ONE / d if d != ZERO else ZERO
            dv[ib] = d
            if q5:
                put_q5_sym(x, r, j0, out, ib * bsize + 2, idd, bias, nmax)
            else:
                put_q4_sym(x, r, j0, out, ib * bsize + 2, idd, bias, nmax)
        put_halves(out, r, dv, nb, bsize, 0)


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q4_0(x, w, has_w, out):
    # ggml's quantize_q4_0: quantize_row_q4_0_ref without an imatrix, quantize_row_q4_0_impl
    # (make_qx_quants(32, 8, …)) with one
    if has_w:
        tile_rows(x, w, out, 8, 18, _CAND_Q4_0, False, False)
    else:
        sym_rows(x, out, np.float32(-8.0), np.float32(8.5), 15, 18, False)


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q5_0(x, w, has_w, out):
    # ggml's quantize_q5_0: quantize_row_q5_0_ref / quantize_row_q5_0_impl (make_qx_quants(32, 16))
    if has_w:
        tile_rows(x, w, out, 16, 22, _CAND_Q5_0, False, True)
    else:
        sym_rows(x, out, np.float32(-16.0), np.float32(16.5), 31, 22, True)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q4_0(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 18
            d = get_half(q, r, o)
            for j in range(16):
                b = np.int32(q[r, o + 2 + j])
                out[r, ib * QK + j] = np.float32((b & 0xF) - 8) * d
                out[r, ib * QK + j + 16] = np.float32((b >> 4) - 8) * d


@njit(inline="always")
def get_qh(q, r, o):
    return (
        np.int32(q[r, o])
        | (np.int32(q[r, o + 1]) << 8)
        | (np.int32(q[r, o + 2]) << 16)
        | (np.int32(q[r, o + 3]) << 24)
    )


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q5_0(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 22
            d = get_half(q, r, o)
            qh = get_qh(q, r, o + 2)
            for j in range(16):
                b = np.int32(q[r, o + 6 + j])
                h0 = ((qh >> j) << 4) & 0x10
                h1 = (qh >> (j + 12)) & 0x10
                out[r, ib * QK + j] = np.float32(((b & 0xF) | h0) - 16) * d
                out[r, ib * QK + j + 16] = np.float32(((b >> 4) | h1) - 16) * d


# ---- Q4_1, Q5_1 ------------------------------------------------------------------------------


@njit(inline="always")
def asym_rows(x, out, nmax, bsize, q5):
    # quantize_row_q4_1_ref (nmax 15, quants clamped) and quantize_row_q5_1_ref (31): d =
    # (max - min)/nmax, quants (x - min)/d + 0.5f; the row's fp16 scales and mins together
    rows, n = x.shape
    nb = n // QK
    dv = np.empty(nb, np.float32)
    mv = np.empty(nb, np.float32)
    for r in range(rows):
        for ib in range(nb):
            j0 = ib * QK
            mn, mx = min_max(x, r, j0)
            d = (mx - mn) / np.float32(nmax)
            idd = ONE / d if d != ZERO else ZERO
            dv[ib] = d
            mv[ib] = mn
            if q5:
                put_q5_asym(x, r, j0, out, ib * bsize + 4, mn, idd)
            else:
                put_q4_asym(x, r, j0, out, ib * bsize + 4, mn, idd, nmax, True)
        put_halves(out, r, dv, nb, bsize, 0)
        put_halves(out, r, mv, nb, bsize, 2)


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q4_1(x, w, has_w, out):
    # ggml's quantize_q4_1: quantize_row_q4_1_ref / quantize_row_q4_1_impl
    # (make_qkx3_quants(32, 15, …, -0.9f, 0.05f, 36, false))
    if has_w:
        tile_rows(x, w, out, 15, 20, _CAND_Q4_1, True, False)
    else:
        asym_rows(x, out, 15, 20, False)


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q5_1(x, w, has_w, out):
    # ggml's quantize_q5_1: quantize_row_q5_1_ref / quantize_row_q5_1_impl
    # (make_qkx3_quants(32, 31, …, -0.9f, 0.05f, 36, false))
    if has_w:
        tile_rows(x, w, out, 31, 24, _CAND_Q5_1, True, True)
    else:
        asym_rows(x, out, 31, 24, True)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q4_1(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 20
            d = get_half(q, r, o)
            m = get_half(q, r, o + 2)
            for j in range(16):
                b = np.int32(q[r, o + 4 + j])
                out[r, ib * QK + j] = np.float32(b & 0xF) * d + m
                out[r, ib * QK + j + 16] = np.float32(b >> 4) * d + m


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q5_1(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 24
            d = get_half(q, r, o)
            m = get_half(q, r, o + 2)
            qh = get_qh(q, r, o + 4)
            for j in range(16):
                b = np.int32(q[r, o + 8 + j])
                h0 = ((qh >> j) << 4) & 0x10
                h1 = (qh >> (j + 12)) & 0x10
                out[r, ib * QK + j] = np.float32((b & 0xF) | h0) * d + m
                out[r, ib * QK + j + 16] = np.float32((b >> 4) | h1) * d + m


QUANTIZE = {
    "Q8_0": quantize_q8_0,
    "Q4_0": quantize_q4_0,
    "Q4_1": quantize_q4_1,
    "Q5_0": quantize_q5_0,
    "Q5_1": quantize_q5_1,
}
DEQUANTIZE = {
    "Q8_0": dequantize_q8_0,
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
}
