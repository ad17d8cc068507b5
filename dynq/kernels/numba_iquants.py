"""Whole-row numba kernels for the 4-bit non-linear i-quants IQ4_NL and IQ4_XS, torch-free:
float32 rows to GGUF bytes and back.

``quantize_<t>(x, w, has_w, out)``: float32 rows ``x`` ``[rows, n]`` (C-contiguous, ``n`` a
multiple of 32 for IQ4_NL, of 256 for IQ4_XS) → ``out`` uint8 ``[rows, row_bytes]``, exactly
the bytes ggml's ``quantize_<t>`` writes; ``w`` float32 ``[n]`` is its ``quant_weights`` (the
imatrix), read only when ``has_w`` (otherwise a 1-element dummy). ``dequantize_<t>(q, out)``:
``q`` uint8 ``[rows, row_bytes]`` → ``out`` float32 ``[rows, n]``, exactly ggml's
``dequantize_row_<t>``. Types: :data:`QUANTIZE`, :data:`DEQUANTIZE`.

Both are ggml's ``quantize_row_iq4_nl_impl`` (ntry = 7, with or without an imatrix): IQ4_NL
with one 32-block per super-block (its scale the block's, in fp16), IQ4_XS with 256-element
super-blocks of eight 32-blocks (the block scales as 6-bit multiples of one fp16 ``d``). The
specification is the torch path, :mod:`dynq.kernels.iquants`; the conventions (float32
everywhere, no fast-math, C sums left to right, fp16 rounding) those of
:mod:`dynq.kernels.numba_legacy`, whose tiles the search runs on: :data:`LANES` blocks side by
side, each one lane of a flat tile ``[32, LANES]`` in that module's workspace. The weights are
``x[j]^2`` without an imatrix, ``qw[j]*sqrtf(sigma2 + x[j]^2)`` with one (sigma2 = 2/size ·
the super-block's sum of squares, left to right: a 32-block's for IQ4_NL, 256 values'
for IQ4_XS). An IQ4_XS tile holds ``LANES/8`` whole super-blocks (a row's blocks run in order
and ``LANES`` is a multiple of 8), so its super-block pass follows the block search in the tile.

Where a block's scale is NaN (float32 overflow in the sums of a block with values beyond about
1e12), IQ4_XS follows the C: ``fabsf(d) > amax_scale`` is false for it, so the super-block's
``d`` comes from its other blocks (the torch class takes the NaN as the largest and zeroes the
super-block instead).

This module imports no torch, directly or through its imports.
"""

# ruff: noqa: E741

import numpy as np
from numba import njit

from dynq.kernels.numba_kernels import fp16_bits, nearest_int
from dynq.kernels.numba_legacy import (
    EPS,
    LANES,
    NQX,
    ONE,
    QBIS,
    QISC,
    QK,
    QMX,
    QS1,
    QS2,
    QSC,
    SG,
    WS_SIZE,
    WT,
    XT,
    ZERO,
    get_half,
    load_tile,
    put_half,
    put_tile_nibbles,
    sqrt_weights,
    tile_halves,
    tile_signed_max,
)

__all__ = [
    "DEQUANTIZE",
    "KVALUES_IQ4NL",
    "QUANTIZE",
    "dequantize_iq4_nl",
    "dequantize_iq4_xs",
    "quantize_iq4_nl",
    "quantize_iq4_xs",
]

G = LANES
QK_K = 256
NSUB = QK_K // QK  # 32-blocks per IQ4_XS super-block
XS_BYTES = 136  # block_iq4_xs: d (2), scales_h (2), scales_l (4), qs (128)
F_32 = np.float32(32.0)
SIGMA_NL = np.float32(2.0 / QK)  # quantize_row_iq4_nl_impl's 2.f/super_block_size
SIGMA_XS = np.float32(2.0 / QK_K)

#: ggml's kvalues_iq4nl
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
_KV = np.array(KVALUES_IQ4NL, dtype=np.float32)
KV0 = np.float32(KVALUES_IQ4NL[0])
#: where best_index_int8(16, kvalues_iq4nl, v) steps from k-1 to k (k = 1..15): the midpoints
#: of neighbouring values, exactly (the C's float32 test `x - val[mu-1] < val[mu] - x` flips
#: there, ties going up; tests/kernels/test_numba_iquants.py checks it against the C's search)
_IQ4_TH = np.array([(_KV[k - 1] + _KV[k]) / 2 for k in range(1, 16)], dtype=np.float32)
_IQ4_STEP = np.array([_KV[k] - _KV[k - 1] for k in range(1, 16)], dtype=np.float32)
#: the trial numerators itry + values[0], itry = -7..7 (quantize_iq4_{nl,xs}'s ntry = 7)
_IQ4_NUM = np.array([i + KVALUES_IQ4NL[0] for i in range(-7, 8)], dtype=np.float32)
NIQ = 16  # trials: the first (-max/values[0]), then the 15 numerators
# the trials' inverse scales and sums use make_qx_quants' [NQX, G] rows of the workspace
assert NIQ <= NQX and G % NSUB == 0


@njit(inline="always")
def iq4_value(v):
    # kvalues_iq4nl[best_index_int8(16, kvalues_iq4nl, v)] for v not NaN: the lowest value
    # plus the steps whose midpoint v reaches (exact: small integers)
    q = KV0
    for k in range(15):
        q += _IQ4_STEP[k] if v >= _IQ4_TH[k] else ZERO
    return q


@njit(inline="always")
def iq4_index(v):
    # best_index_int8(16, kvalues_iq4nl, v) (NaN: 15, as the C's binary search ends)
    i = 0
    for k in range(15):
        i += 1 if v >= _IQ4_TH[k] else 0
    return i if v == v else 15


# ---- the block search, on a tile ---------------------------------------------------------------


@njit(inline="always")
def tile_weights(ws, has_w, nsub, fs):
    # quantize_row_iq4_nl_impl's weights: qw[j]*sqrtf(sigma2 + x[j]^2) with sigma2 = fs * the
    # super-block's sum of squares (nsub consecutive lanes: one block, or eight), or x[j]^2
    # without an imatrix
    if has_w:
        for g in range(G):
            ws[SG + g] = ZERO
        if nsub == 1:
            for j in range(QK):
                for g in range(G):
                    v = ws[XT + j * G + g]
                    ws[SG + g] += v * v
        else:
            # the sum over the super-block's 8*32 values in order, G/nsub super-blocks side by
            # side (their totals in the first lane of each)
            for b in range(nsub):
                for j in range(QK):
                    for s in range(0, G, nsub):
                        v = ws[XT + j * G + s + b]
                        ws[SG + s] += v * v
            for s in range(0, G, nsub):
                for b in range(1, nsub):
                    ws[SG + s + b] = ws[SG + s]
        for g in range(G):
            ws[SG + g] = ws[SG + g] * fs
        sqrt_weights(ws)
    else:
        for k in range(QK * G):
            ws[WT + k] = ws[XT + k] * ws[XT + k]


@njit(inline="always")
def iq4_scales(ws):
    # quantize_row_iq4_nl_impl's block search (ntry 7) for the tile's lanes: the trial inverse
    # scales (1/(-max/values[0]), then (itry + values[0])/max) summed side by side (each sum
    # left to right over the block), then ggml's in-order choice of the scale d. Leaves d in
    # ws[QSC + g] (0 for a block with amax < GROUP_MAX_EPS).
    tile_signed_max(ws)
    for g in range(G):
        # an all-zero block's max is taken as 1 (finite work; its result is replaced below)
        m = ws[QMX + g] if np.abs(ws[QMX + g]) >= EPS else ONE
        ws[QISC + g] = ONE / ((-m) / KV0)
        for t in range(1, NIQ):
            ws[QISC + t * G + g] = _IQ4_NUM[t - 1] / m
        for t in range(NIQ):
            ws[QS1 + t * G + g] = ZERO
            ws[QS2 + t * G + g] = ZERO
    for j in range(QK):
        jo = j * G
        for t in range(NIQ):
            to = t * G
            for g in range(G):
                x = ws[XT + jo + g]
                q = iq4_value(ws[QISC + to + g] * x)
                wq = ws[WT + jo + g] * q
                ws[QS1 + to + g] += wq * x
                ws[QS2 + to + g] += wq * q
    for g in range(G):
        sx = ws[QS1 + g]
        sq = ws[QS2 + g]
        d = sx / sq if sq > ZERO else ZERO
        best = d * sx
        for t in range(1, NIQ):
            sx = ws[QS1 + t * G + g]
            sq = ws[QS2 + t * G + g]
            take = (sq > ZERO) & (sx * sx > best * sq)
            d = sx / sq if take else d
            best = d * sx if take else best
        ws[QSC + g] = d if np.abs(ws[QMX + g]) >= EPS else ZERO


@njit(inline="always")
def iq4_levels(ws, Lt):
    # the indices best_index_int8(16, kvalues_iq4nl, id*x) with each lane's id in ws[QBIS + g]
    for j in range(QK):
        jo = j * G
        for g in range(G):
            Lt[jo + g] = iq4_index(ws[QBIS + g] * ws[XT + jo + g])


# ---- IQ4_NL ----------------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_iq4_nl(x, w, has_w, out):
    # ggml's quantize_iq4_nl: quantize_row_iq4_nl_impl(QK4_NL, 32, …, ntry 7) per block, with
    # or without quant weights
    rows, n = x.shape
    nb = n // QK
    ws = np.zeros(WS_SIZE, np.float32)
    Lt = np.empty(QK * G, np.int32)
    hd = np.empty(G, np.int32)
    lr = np.empty(G, np.int64)
    lb = np.empty(G, np.int64)
    xb = np.empty(G, np.int64)
    wb = np.empty(G, np.int64)
    xf = x.reshape(-1)
    nsub = 1
    B = rows * nb
    for k0 in range(0, B, G):
        m = min(G, B - k0)
        load_tile(xf, n, w, has_w, k0, m, nb, ws, lr, lb, xb, wb)
        tile_weights(ws, has_w, nsub, SIGMA_NL)
        iq4_scales(ws)
        for g in range(G):
            # `id = scales[0] ? 1/scales[0] : 0` (a NaN scale is true in C, and != 0 here)
            d = ws[QSC + g]
            ws[QBIS + g] = ONE / d if d != ZERO else ZERO
        iq4_levels(ws, Lt)
        tile_halves(ws, QSC, hd)
        for g in range(m):
            r = lr[g]
            o = lb[g] * 18
            put_half(out, r, o, hd[g])
            put_tile_nibbles(Lt, g, out, r, o + 2)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_iq4_nl(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ib in range(n // QK):
            o = ib * 18
            d = get_half(q, r, o)
            for j in range(16):
                b = np.int32(q[r, o + 2 + j])
                out[r, ib * QK + j] = d * _KV[b & 0xF]
                out[r, ib * QK + j + 16] = d * _KV[b >> 4]


# ---- IQ4_XS ----------------------------------------------------------------------------------


@njit(inline="always")
def xs_scales(ws, ls, dsb):
    # quantize_row_iq4_nl_impl's super-block pass for the tile's G/8 super-blocks (lanes s..s+7):
    # max_scale = the first block scale of largest magnitude (`fabsf(d) > amax_scale` from 0,
    # so NaN scales never win), d = -max_scale/32, each block's l = MAX(-32, MIN(31,
    # nearest_int(id*scale))) and its inverse 1/(d*l) (0 where d*l is 0) into ws[QBIS + g].
    # Leaves l + 32 in ls[g], d in dsb[s].
    for s in range(0, G, NSUB):
        amax = ZERO
        mx = ZERO
        for b in range(NSUB):
            sc = ws[QSC + s + b]
            if np.abs(sc) > amax:
                amax = np.abs(sc)
                mx = sc
        d = (-mx) / F_32
        dsb[s] = d
        idd = ONE / d if d != ZERO else ZERO
        for b in range(NSUB):
            l = nearest_int(idd * ws[QSC + s + b])
            l = max(-32, min(31, l))
            dl = d * np.float32(l)
            ws[QBIS + s + b] = ONE / dl if dl != ZERO else ZERO
            ls[s + b] = l + 32


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_iq4_xs(x, w, has_w, out):
    # ggml's quantize_iq4_xs: quantize_row_iq4_nl_impl(QK_K, 32, …, ntry 7) per super-block,
    # with or without quant weights
    rows, n = x.shape
    nb = n // QK
    ws = np.zeros(WS_SIZE, np.float32)
    Lt = np.empty(QK * G, np.int32)
    ls = np.zeros(G, np.int64)
    dsb = np.zeros(G, np.float32)
    lr = np.empty(G, np.int64)
    lb = np.empty(G, np.int64)
    xb = np.empty(G, np.int64)
    wb = np.empty(G, np.int64)
    xf = x.reshape(-1)
    nsub = NSUB
    B = rows * nb
    for k0 in range(0, B, G):
        m = min(G, B - k0)  # a multiple of 8: whole super-blocks
        load_tile(xf, n, w, has_w, k0, m, nb, ws, lr, lb, xb, wb)
        tile_weights(ws, has_w, nsub, SIGMA_XS)
        iq4_scales(ws)
        xs_scales(ws, ls, dsb)
        iq4_levels(ws, Lt)
        for s in range(0, m, NSUB):
            r = lr[s]
            o = (lb[s] // NSUB) * XS_BYTES
            put_half(out, r, o, fp16_bits(dsb[s]))
            sh = 0
            for b in range(NSUB):
                sh |= (ls[s + b] >> 4) << (2 * b)
            out[r, o + 2] = np.uint8(sh & 0xFF)
            out[r, o + 3] = np.uint8(sh >> 8)
            for b in range(0, NSUB, 2):
                out[r, o + 4 + b // 2] = np.uint8((ls[s + b] & 0xF) | ((ls[s + b + 1] & 0xF) << 4))
            for b in range(NSUB):
                put_tile_nibbles(Lt, s + b, out, r, o + 8 + 16 * b)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_iq4_xs(q, out):
    rows, n = out.shape
    for r in range(rows):
        for ibl in range(n // QK_K):
            o = ibl * XS_BYTES
            d = get_half(q, r, o)
            sh = np.int32(q[r, o + 2]) | (np.int32(q[r, o + 3]) << 8)
            for ib in range(NSUB):
                lo = (np.int32(q[r, o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF
                l = lo | (((sh >> (2 * ib)) & 3) << 4)
                dl = d * np.float32(l - 32)
                y = ibl * QK_K + ib * QK
                qo = o + 8 + 16 * ib
                for j in range(16):
                    b = np.int32(q[r, qo + j])
                    out[r, y + j] = dl * _KV[b & 0xF]
                    out[r, y + j + 16] = dl * _KV[b >> 4]


QUANTIZE = {"IQ4_NL": quantize_iq4_nl, "IQ4_XS": quantize_iq4_xs}
DEQUANTIZE = {"IQ4_NL": dequantize_iq4_nl, "IQ4_XS": dequantize_iq4_xs}
