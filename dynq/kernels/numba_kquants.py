"""The k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K as whole-row numba kernels: float32 rows straight
to the bytes GGUF stores, and back, with no torch anywhere (imports: numpy, numba and
:mod:`dynq.kernels.numba_kernels`).

``quantize_<type>(x, w, has_w, out)``: ``x`` float32 ``[rows, n]`` C-contiguous (``n`` a
multiple of 256), ``w`` float32 ``[n]`` the importance of each column (a 1-element dummy, never
read, where ``has_w`` is False), ``out`` uint8 ``[rows, row_bytes]``: the bytes of ggml's
``quantize_<type>`` (``quantize_row_<type>_impl`` with ``w`` as its ``quant_weights`` when
``has_w``, ``quantize_row_<type>_ref`` without). ``dequantize_<type>(q, out)``: ggml's
``dequantize_row_<type>`` from uint8 ``[rows, row_bytes]`` into float32 ``[rows, n]``.

Each quantizer is a port of the C in ``ggml-quants.c`` (and of its torch twin in
:mod:`dynq.kernels.kquants`, which is byte-identical to it): the scale searches are the njit
loops of :mod:`~dynq.kernels.numba_kernels` (``qkx`` for ``make_qkx2/3_quants``, ``qx`` for
``make_qx_quants``, ``qp`` for ``make_qp_quants``, ``q3`` for ``make_q3_quants``), called on
chunks of :data:`CHUNK` super-blocks at a time so that a chunk's values, weights and levels
stay in cache; the rest (the super-block scales, their fp16 rounding, the last requantization,
the bit packing) is written out here, super-block by super-block.

The float arithmetic is the C's, operation for operation: every float is a ``float32`` and
every constant too (a Python float or an int meeting a float32 would make numba compute in
float64); numba compiles without fast-math, so there is no fused multiply-add; every sum runs
left to right as the C's ``for`` loop does; ``nearest_int`` is ggml's ``+ 12582912.f`` bit
trick (the float's bits read with an LLVM bitcast,
:func:`~dynq.kernels.numba_kernels.nearest_int`, so it stays in registers and the 256 roundings
of a super-block's last pass vectorise); fp16 is :func:`~dynq.kernels.numba_kernels.fp16_bits`
and :func:`~dynq.kernels.numba_kernels.fp16_value` (round to nearest even, as
``GGML_FP32_TO_FP16``).
``error_model="numpy"``: a division by zero gives inf/NaN as in C.

The ints and bools handed to the searches are runtime values (``np.int64(15)``, ``nmax < 0``),
never literals: numba compiles a callee anew for literal arguments, and ``qkx`` compiled for a
literal ``nmax`` ran at half the speed.

The functions release the GIL (``nogil``) and are cached beside this file (``cache=True``).
A kernel compiled for other dtypes or a non-contiguous ``x`` is refused at compile time
(``TypingError``), wrong shapes at run time (``ValueError``): numba checks no bounds.
"""

# ruff: noqa: E741

import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

from dynq.kernels.numba_kernels import fp16_bits, fp16_value, nearest_int, q3, qkx, qp, qx

__all__ = [
    "DEQUANTIZE",
    "QUANTIZE",
    "dequantize_q2_k",
    "dequantize_q3_k",
    "dequantize_q4_k",
    "dequantize_q5_k",
    "dequantize_q6_k",
    "quantize_q2_k",
    "quantize_q3_k",
    "quantize_q4_k",
    "quantize_q5_k",
    "quantize_q6_k",
]

QK_K = 256
#: super-blocks per call of a search: 8192 values (32 KiB of float32), in cache with their
#: weights and levels
CHUNK = 32

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
MAGIC = np.float32(12582912.0)
EPS = np.float32(1e-15)  # GROUP_MAX_EPS
F_QK = np.float32(256.0)
F_TWO = np.float32(2.0)
F_15 = np.float32(15.0)
F_32 = np.float32(32.0)
F_63 = np.float32(63.0)
F_M32 = np.float32(-32.0)
F_M128 = np.float32(-128.0)
TENTH = np.float32(0.1)


# ---- small pieces -----------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def _qkx_cand(rmin, rdelta, nstep, nmax):
    # make_qkx2/3_quants' candidate numerators rmin + rdelta*is + nmax, is = 0..nstep (float32)
    c = np.empty(nstep + 1, np.float32)
    for i in range(nstep + 1):
        c[i] = rmin + rdelta * np.float32(i) + np.float32(nmax)
    return c


@njit(nogil=True, cache=True, error_model="numpy")
def _qx_cand(nmax):
    # make_qx_quants' numerators: nmax, then nmax + 0.1f*is for is = -9..9, is != 0
    c = np.empty(19, np.float32)
    c[0] = np.float32(nmax)
    t = 1
    for i in range(-9, 10):
        if i != 0:
            c[t] = TENTH * np.float32(i) + np.float32(nmax)
            t += 1
    return c


@njit(nogil=True, cache=True, error_model="numpy")
def _qp_cand(nmax):
    # make_qp_quants' numerators: 0.1f*is + nmax for is = -4..4, is != 0
    c = np.empty(8, np.float32)
    t = 0
    for i in range(-4, 5):
        if i != 0:
            c[t] = TENTH * np.float32(i) + np.float32(nmax)
            t += 1
    return c


@njit(inline="always")
def _put_fp16(ob, off, v):
    # GGML_FP32_TO_FP16(v) into ob[off], ob[off + 1] (little-endian); returns its float value
    h = np.int64(fp16_bits(v))
    ob[off] = h & 0xFF
    ob[off + 1] = h >> 8
    return fp16_value(h)


@njit(inline="always")
def _get_fp16(ob, off):
    return fp16_value(np.int64(ob[off]) | (np.int64(ob[off + 1]) << 8))


@njit(inline="always")
def _scale_min_k4(j, ob, off):
    # get_scale_min_k4(j, ob + off)
    if j < 4:
        return np.int64(ob[off + j]) & 63, np.int64(ob[off + j + 4]) & 63
    a = np.int64(ob[off + j + 4])
    return (a & 0xF) | ((np.int64(ob[off + j - 4]) >> 6) << 4), (a >> 4) | (
        (np.int64(ob[off + j]) >> 6) << 4
    )


@njit(inline="always")
def _pack_scale_min_k4(ls, lm, ob, off):
    # the 12 scales bytes of Q4_K/Q5_K from 8 scales and mins (ints taken as uint8)
    for j in range(4):
        ob[off + j] = ls[j] & 0xFF
        ob[off + j + 4] = lm[j] & 0xFF
    for j in range(4, 8):
        a = ls[j] & 0xFF
        b = lm[j] & 0xFF
        ob[off + j + 4] = ((a & 0xF) | ((b & 0xF) << 4)) & 0xFF
        ob[off + j - 4] = (np.int64(ob[off + j - 4]) | ((a >> 4) << 6)) & 0xFF
        ob[off + j] = (np.int64(ob[off + j]) | ((b >> 4) << 6)) & 0xFF


@njit(inline="always")
def _requant(xr, dv, mv, has_dm, lo, hi, off, Lr):
    # every k-quant's last pass over one super-block (xr: its 256 values; dv, mv: each value's
    # group d and dm): l = MAX(lo, MIN(hi, nearest_int((x + dm)/d))) + off into Lr, except where
    # d == 0, where the C skips the group (`if (!d) continue;`) and the search's level stays.
    # One loop over the 256 values with the group's d repeated, which LLVM vectorises.
    for k in range(QK_K):
        d = dv[k]
        v = (xr[k] + mv[k]) / d if has_dm else xr[k] / d
        l = nearest_int(v)
        l = l if l < hi else hi
        l = l if l > lo else lo
        Lr[k] = Lr[k] if d == ZERO else np.int32(l + off)


@njit(inline="always")
def _pack_2bit(Lf, base, ob, off):
    # qs[32h + l] = L[128h + l] | L[128h + l + 32] << 2 | ... << 4 | ... << 6, the super-block's
    # 256 levels (0..3) at Lf[base:]
    for h in range(2):
        k = base + 128 * h
        for l in range(32):
            v = Lf[k + l] | (Lf[k + l + 32] << 2) | (Lf[k + l + 64] << 4) | (Lf[k + l + 96] << 6)
            ob[off + 32 * h + l] = v & 0xFF


def _types(x, w, out):
    pass


@overload(_types)
def _types_typed(x, w, out):
    # at compile time: float32 x [rows, n] C-contiguous, float32 w [n], uint8 out (numba would
    # otherwise compile a float64 version, which gives other bytes)
    if not (
        isinstance(x, types.Array) and x.dtype == types.float32 and x.ndim == 2 and x.layout == "C"
    ):
        raise TypingError(f"x: expected a C-contiguous 2-D float32 array, got {x}")
    if not (isinstance(w, types.Array) and w.dtype == types.float32 and w.ndim == 1):
        raise TypingError(f"w: expected a 1-D float32 array, got {w}")
    if not (isinstance(out, types.Array) and out.dtype == types.uint8 and out.ndim == 2):
        raise TypingError(f"out: expected a 2-D uint8 array, got {out}")
    if out.layout != "C":
        raise TypingError(f"out: expected a C-contiguous array, got {out}")
    return lambda x, w, out: None


def _dq_types(q, out):
    pass


@overload(_dq_types)
def _dq_types_typed(q, out):
    if not (isinstance(q, types.Array) and q.dtype == types.uint8 and q.ndim == 2):
        raise TypingError(f"q: expected a 2-D uint8 array, got {q}")
    if not (isinstance(out, types.Array) and out.dtype == types.float32 and out.ndim == 2):
        raise TypingError(f"out: expected a 2-D float32 array, got {out}")
    return lambda q, out: None


@njit(inline="always")
def _check(x, w, has_w, out, ts):
    # numba does no bounds checks: wrong shapes are refused before anything is read or written
    _types(x, w, out)
    rows, n = x.shape
    if n % QK_K != 0:
        raise ValueError("x: the row length is not a multiple of 256")
    if out.shape[0] != rows or out.shape[1] != n // QK_K * ts:
        raise ValueError("out: expected [rows, row_bytes] for x")
    if has_w and w.shape[0] != n:
        raise ValueError("w: expected one weight per column of x")


@njit(inline="always")
def _check_dq(q, out, ts):
    _dq_types(q, out)
    rows, n = out.shape
    if n % QK_K != 0:
        raise ValueError("out: the row length is not a multiple of 256")
    if q.shape[0] != rows or q.shape[1] != n // QK_K * ts:
        raise ValueError("q: expected [rows, row_bytes] for out")


@njit(inline="always")
def _sum_x2(xs, s, n):
    sx2 = ZERO
    for l in range(n):
        sx2 += xs[s, l] * xs[s, l]
    return sx2


# ---- Q4_K, Q5_K -------------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def _quantize_q45k(x, w, has_w, out, nmax):
    _check(x, w, has_w, out, 144 if nmax == 15 else 176)
    rows, n = x.shape
    nb = n // QK_K
    S = rows * nb
    TS = out.shape[1] // nb
    xs = x.reshape((S, QK_K))
    os = out.reshape((S, TS))
    if has_w:  # make_qkx3_quants(32, nmax, ..., -0.9f, 0.05f, 36, false)
        cand = _qkx_cand(np.float32(-0.9), np.float32(0.05), np.int64(36), nmax)
    elif nmax == 15:  # make_qkx2_quants(32, 15, ..., -1.f, 0.1f, 20, false)
        cand = _qkx_cand(np.float32(-1.0), np.float32(0.1), np.int64(20), nmax)
    else:  # make_qkx2_quants(32, 31, ..., -0.5f, 0.1f, 15, false)
        cand = _qkx_cand(np.float32(-0.5), np.float32(0.1), np.int64(15), nmax)
    n63 = np.int64(63)
    pcand = _qp_cand(n63)
    G = CHUNK * 8
    wg = np.empty((G, 32), np.float32)
    scales = np.empty(G, np.float32)
    mins = np.empty(G, np.float32)
    L = np.empty((G, 32), np.int32)
    Lf = L.reshape(-1)
    sw = np.empty(G, np.float32)
    dblk = np.empty(CHUNK, np.float32)
    mblk = np.empty(CHUNK, np.float32)
    Ls = np.empty((CHUNK, 8), np.int32)
    Lm = np.empty((CHUNK, 8), np.int32)
    ls = np.empty(8, np.int64)
    lm = np.empty(8, np.int64)
    dv = np.empty(QK_K, np.float32)
    mv = np.empty(QK_K, np.float32)
    for s0 in range(0, S, CHUNK):
        m = min(CHUNK, S - s0)
        xc = xs[s0 : s0 + m]
        xg = xc.reshape((m * 8, 32))
        # the weights of each group of 32
        for b in range(m):
            if has_w:
                wo = ((s0 + b) % nb) * QK_K
                sigma2 = F_TWO * _sum_x2(xc, b, QK_K) / F_QK
                for j in range(8):
                    g = 8 * b + j
                    for l in range(32):
                        v = xc[b, 32 * j + l]
                        wg[g, l] = w[wo + 32 * j + l] * np.sqrt(sigma2 + v * v)
                    sumw = ZERO
                    for l in range(32):
                        sumw += wg[g, l]
                    sw[g] = sumw
            else:
                for j in range(8):
                    g = 8 * b + j
                    sx2 = ZERO
                    for l in range(32):
                        v = xc[b, 32 * j + l]
                        sx2 += v * v
                    av_x = np.sqrt(sx2 / F_32)
                    for l in range(32):
                        wg[g, l] = av_x + abs(xc[b, 32 * j + l])
        k = m * 8
        qkx(xg, wg[:k], nmax, cand, nmax < 0, scales[:k], mins[:k], L[:k])  # use_mad false
        if has_w:
            qp(scales[:k].reshape((m, 8)), sw[:k].reshape((m, 8)), n63, pcand, dblk[:m], Ls[:m])
            qp(mins[:k].reshape((m, 8)), sw[:k].reshape((m, 8)), n63, pcand, mblk[:m], Lm[:m])
        for b in range(m):
            ob = os[s0 + b]
            if has_w:
                d = dblk[b]
                dmin = mblk[b]
                for j in range(8):
                    a = np.int64(Ls[b, j]) & 0xFF
                    c = np.int64(Lm[b, j]) & 0xFF
                    if nmax == 31:  # quantize_row_q5_K_impl has MIN(63, l); q4_K's has not
                        a = min(a, 63)
                        c = min(c, 63)
                    ls[j] = a
                    lm[j] = c
            else:
                max_scale = ZERO
                max_min = ZERO
                for j in range(8):
                    if scales[8 * b + j] > max_scale:
                        max_scale = scales[8 * b + j]
                    if mins[8 * b + j] > max_min:
                        max_min = mins[8 * b + j]
                inv_scale = F_63 / max_scale if max_scale > ZERO else ZERO
                inv_min = F_63 / max_min if max_min > ZERO else ZERO
                for j in range(8):
                    ls[j] = min(nearest_int(inv_scale * scales[8 * b + j]) & 0xFF, 63)
                    lm[j] = min(nearest_int(inv_min * mins[8 * b + j]) & 0xFF, 63)
                d = max_scale / F_63
                dmin = max_min / F_63
            dq = _put_fp16(ob, 0, d)
            dmq = _put_fp16(ob, 2, dmin)
            _pack_scale_min_k4(ls, lm, ob, 4)
            for j in range(8):
                sc, mm = _scale_min_k4(j, ob, 4)
                dj = dq * np.float32(sc)
                dmj = dmq * np.float32(mm)
                for i in range(32):
                    dv[32 * j + i] = dj
                    mv[32 * j + i] = dmj
            k0 = 256 * b
            _requant(xc[b], dv, mv, True, 0, nmax, 0, Lf[k0 : k0 + QK_K])
            if nmax == 15:
                for h in range(4):
                    for l in range(32):
                        ob[16 + 32 * h + l] = Lf[k0 + 64 * h + l] | (Lf[k0 + 64 * h + 32 + l] << 4)
            else:
                for l in range(32):
                    qh = 0
                    for h in range(4):
                        qh |= ((Lf[k0 + 64 * h + l] >> 4) << (2 * h)) | (
                            (Lf[k0 + 64 * h + 32 + l] >> 4) << (2 * h + 1)
                        )
                    ob[16 + l] = qh
                for h in range(4):
                    for l in range(32):
                        l1 = Lf[k0 + 64 * h + l] & 0xF
                        l2 = Lf[k0 + 64 * h + 32 + l] & 0xF
                        ob[48 + 32 * h + l] = l1 | (l2 << 4)


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q4_k(x, w, has_w, out):
    _quantize_q45k(x, w, has_w, out, np.int64(15))


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q5_k(x, w, has_w, out):
    _quantize_q45k(x, w, has_w, out, np.int64(31))


@njit(inline="always")
def _dequantize_q45k(q, out, ts, five):
    # dequantize_row_q4_K (ts 144) and dequantize_row_q5_K (ts 176, ``five``: the fifth bits in
    # qh, 32 bytes after the scales, before the nibbles)
    _check_dq(q, out, ts)
    rows, n = out.shape
    nb = n // QK_K
    for r in range(rows):
        for i in range(nb):
            off = ts * i
            d = _get_fp16(q[r], off)
            dmin = _get_fp16(q[r], off + 2)
            for h in range(4):
                sc1, m1 = _scale_min_k4(2 * h, q[r], off + 4)
                sc2, m2 = _scale_min_k4(2 * h + 1, q[r], off + 4)
                d1 = d * np.float32(sc1)
                mm1 = dmin * np.float32(m1)
                d2 = d * np.float32(sc2)
                mm2 = dmin * np.float32(m2)
                y = QK_K * i + 64 * h
                if five:
                    qo = off + 48 + 32 * h
                    for l in range(32):
                        hb = ((np.int32(q[r, off + 16 + l]) >> (2 * h)) & 1) << 4
                        out[r, y + l] = d1 * np.float32((q[r, qo + l] & 0xF) + hb) - mm1
                    for l in range(32):
                        hb = ((np.int32(q[r, off + 16 + l]) >> (2 * h + 1)) & 1) << 4
                        out[r, y + 32 + l] = d2 * np.float32((q[r, qo + l] >> 4) + hb) - mm2
                else:
                    qo = off + 16 + 32 * h
                    for l in range(32):
                        out[r, y + l] = d1 * np.float32(q[r, qo + l] & 0xF) - mm1
                    for l in range(32):
                        out[r, y + 32 + l] = d2 * np.float32(q[r, qo + l] >> 4) - mm2


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q4_k(q, out):
    _dequantize_q45k(q, out, 144, False)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q5_k(q, out):
    _dequantize_q45k(q, out, 176, True)


# ---- Q6_K -------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q6_k(x, w, has_w, out):
    _check(x, w, has_w, out, 210)
    rows, n = x.shape
    nb = n // QK_K
    S = rows * nb
    xs = x.reshape((S, QK_K))
    os = out.reshape((S, 210))
    n32 = np.int64(32)
    cand = _qx_cand(n32)
    G = CHUNK * 16
    wg = np.empty((G, 16), np.float32)
    scales = np.empty(G, np.float32)
    L = np.empty((G, 16), np.int32)
    Lf = L.reshape(-1)
    sc = np.empty(16, np.int64)
    dv = np.empty(QK_K, np.float32)
    for s0 in range(0, S, CHUNK):
        m = min(CHUNK, S - s0)
        xc = xs[s0 : s0 + m]
        xg = xc.reshape((m * 16, 16))
        k = m * 16
        if has_w:
            for b in range(m):
                wo = ((s0 + b) % nb) * QK_K
                for j in range(16):
                    for l in range(16):
                        wg[16 * b + j, l] = w[wo + 16 * j + l]
            qx(xg, wg[:k], has_w, n32, cand, scales[:k], L[:k])
        else:
            qx(xg, xg, has_w, n32, cand, scales[:k], L[:k])
        for b in range(m):
            ob = os[s0 + b]
            g0 = 16 * b
            max_scale = ZERO
            max_abs = ZERO
            for j in range(16):
                a = abs(scales[g0 + j])
                if a > max_abs:
                    max_abs = a
                    max_scale = scales[g0 + j]
            if max_abs < EPS:
                for t in range(210):
                    ob[t] = 0
                continue
            iscale = F_M128 / max_scale
            dq = _put_fp16(ob, 208, ONE / iscale)
            for j in range(16):
                v = min(nearest_int(iscale * scales[g0 + j]), 127) & 0xFF
                ob[192 + j] = v
                sc[j] = v - 256 if v > 127 else v
            for j in range(16):
                dj = dq * np.float32(sc[j])
                for i in range(16):
                    dv[16 * j + i] = dj
            _requant(xc[b], dv, dv, False, -32, 31, 32, Lf[256 * b : 256 * b + QK_K])
            for h in range(2):
                k0 = 256 * b + 128 * h
                for l in range(32):
                    q1 = Lf[k0 + l]
                    q2 = Lf[k0 + l + 32]
                    q3_ = Lf[k0 + l + 64]
                    q4 = Lf[k0 + l + 96]
                    ob[64 * h + l] = ((q1 & 0xF) | ((q3_ & 0xF) << 4)) & 0xFF
                    ob[64 * h + l + 32] = ((q2 & 0xF) | ((q4 & 0xF) << 4)) & 0xFF
                    ob[128 + 32 * h + l] = (
                        (q1 >> 4) | ((q2 >> 4) << 2) | ((q3_ >> 4) << 4) | ((q4 >> 4) << 6)
                    ) & 0xFF


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q6_k(q, out):
    _check_dq(q, out, 210)
    rows, n = out.shape
    nb = n // QK_K
    for r in range(rows):
        for i in range(nb):
            off = 210 * i
            d = _get_fp16(q[r], off + 208)
            for h in range(2):
                y = QK_K * i + 128 * h
                for l in range(32):
                    s = 8 * h + l // 16
                    qh = np.int32(q[r, off + 128 + 32 * h + l])
                    a = np.int32(q[r, off + 64 * h + l])
                    c = np.int32(q[r, off + 64 * h + l + 32])
                    q1 = ((a & 0xF) | (((qh >> 0) & 3) << 4)) - 32
                    q2 = ((c & 0xF) | (((qh >> 2) & 3) << 4)) - 32
                    q3_ = ((a >> 4) | (((qh >> 4) & 3) << 4)) - 32
                    q4 = ((c >> 4) | (((qh >> 6) & 3) << 4)) - 32
                    out[r, y + l] = d * _i8(q[r, off + 192 + s]) * np.float32(q1)
                    out[r, y + l + 32] = d * _i8(q[r, off + 192 + s + 2]) * np.float32(q2)
                    out[r, y + l + 64] = d * _i8(q[r, off + 192 + s + 4]) * np.float32(q3_)
                    out[r, y + l + 96] = d * _i8(q[r, off + 192 + s + 6]) * np.float32(q4)


@njit(inline="always")
def _i8(b):
    # a uint8 as int8_t, as a float32
    v = np.int32(b)
    return np.float32(v - 256 if v > 127 else v)


# ---- Q3_K -------------------------------------------------------------------------------------


@njit(inline="always")
def _q3_scale(ob, j):
    # Q3_K's signed scale j (-32..31) from the 12 scales bytes at ob[96:108]
    lo = np.int64(ob[96 + j]) & 0xF if j < 8 else np.int64(ob[96 + j - 8]) >> 4
    return (lo | (((np.int64(ob[104 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q3_k(x, w, has_w, out):
    _check(x, w, has_w, out, 110)
    rows, n = x.shape
    nb = n // QK_K
    S = rows * nb
    xs = x.reshape((S, QK_K))
    os = out.reshape((S, 110))
    n4 = np.int64(4)
    n32 = np.int64(32)
    cand4 = _qx_cand(n4)
    cand32 = _qx_cand(n32)
    G = CHUNK * 16
    wg = np.empty((G, 16), np.float32)
    scales = np.empty(G, np.float32)
    sw = np.empty(G, np.float32)
    L = np.empty((G, 16), np.int32)
    Lf = L.reshape(-1)
    dblk = np.empty(CHUNK, np.float32)
    Ls = np.empty((CHUNK, 16), np.int32)
    dv = np.empty(QK_K, np.float32)
    for s0 in range(0, S, CHUNK):
        m = min(CHUNK, S - s0)
        xc = xs[s0 : s0 + m]
        xg = xc.reshape((m * 16, 16))
        k = m * 16
        if has_w:
            for b in range(m):
                wo = ((s0 + b) % nb) * QK_K
                sigma2 = F_TWO * _sum_x2(xc, b, QK_K) / F_QK
                for j in range(16):
                    g = 16 * b + j
                    for l in range(16):
                        v = xc[b, 16 * j + l]
                        wg[g, l] = w[wo + 16 * j + l] * np.sqrt(sigma2 + v * v)
                    sumw = ZERO
                    for l in range(16):
                        sumw += wg[g, l]
                    sw[g] = sumw
            qx(xg, wg[:k], has_w, n4, cand4, scales[:k], L[:k])
            sc16 = scales[:k].reshape((m, 16))
            qx(sc16, sw[:k].reshape((m, 16)), has_w, n32, cand32, dblk[:m], Ls[:m])
        else:
            q3(xg, n4, scales[:k], L[:k])
        for b in range(m):
            ob = os[s0 + b]
            g0 = 16 * b
            for t in range(96, 108):
                ob[t] = 0
            iscale = ZERO
            if has_w:
                d = dblk[b]
                nz = True
            else:
                max_scale = ZERO
                amax = ZERO
                for j in range(16):
                    a = abs(scales[g0 + j])
                    if a > amax:
                        amax = a
                        max_scale = scales[g0 + j]
                nz = max_scale != ZERO
                if nz:
                    iscale = F_M32 / max_scale
                    d = ONE / iscale
                else:
                    d = ZERO
            if nz:
                for j in range(16):
                    if has_w:
                        l = np.int64(Ls[b, j])
                    else:
                        l = nearest_int(iscale * scales[g0 + j]) & 0xFF
                        l = l - 256 if l > 127 else l  # int8_t
                        l = min(max(l, -32), 31) + 32
                    if j < 8:
                        ob[96 + j] = l & 0xF
                    else:
                        ob[96 + j - 8] = (np.int64(ob[96 + j - 8]) | ((l & 0xF) << 4)) & 0xFF
                    l >>= 4
                    ob[104 + j % 4] = (np.int64(ob[104 + j % 4]) | (l << (2 * (j // 4)))) & 0xFF
            dq = _put_fp16(ob, 108, d)
            for j in range(16):
                dj = dq * np.float32(_q3_scale(ob, j))
                for i in range(16):
                    dv[16 * j + i] = dj
            _requant(xc[b], dv, dv, False, -4, 3, 4, Lf[256 * b : 256 * b + QK_K])
            # hmask: bit k//32 of byte k%32 is value k > 3 (levels 0..7); then the low 2 bits
            k0 = 256 * b
            for l in range(32):
                hm = 0
                for h in range(8):
                    hm |= (Lf[k0 + 32 * h + l] >> 2) << h
                ob[l] = hm
            for t in range(256):
                Lf[k0 + t] &= 3
            _pack_2bit(Lf, k0, ob, 32)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q3_k(q, out):
    _check_dq(q, out, 110)
    rows, n = out.shape
    nb = n // QK_K
    for r in range(rows):
        qr = q[r]
        for i in range(nb):
            off = 110 * i
            d_all = _get_fp16(qr, off + 108)
            for h in range(2):
                for s in range(4):
                    shift = 2 * s
                    bit = 4 * h + s
                    for half in range(2):
                        j = 8 * h + 2 * s + half
                        lo = (
                            np.int64(qr[off + 96 + j]) & 0xF
                            if j < 8
                            else (np.int64(qr[off + 96 + j - 8]) >> 4)
                        )
                        hi = (np.int64(qr[off + 104 + j % 4]) >> (2 * (j // 4))) & 3
                        dl = d_all * np.float32((lo | (hi << 4)) - 32)
                        y = QK_K * i + 16 * j
                        for l in range(16):
                            qi = off + 32 + 32 * h + 16 * half + l
                            v = (np.int32(qr[qi]) >> shift) & 3
                            if not (np.int32(qr[off + 16 * half + l]) >> bit) & 1:
                                v -= 4
                            out[r, y + l] = dl * np.float32(v)


# ---- Q2_K -------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def quantize_q2_k(x, w, has_w, out):
    _check(x, w, has_w, out, 84)
    rows, n = x.shape
    nb = n // QK_K
    S = rows * nb
    xs = x.reshape((S, QK_K))
    os = out.reshape((S, 84))
    n3 = np.int64(3)
    n15 = np.int64(15)
    if has_w:
        cand = _qkx_cand(np.float32(-0.9), np.float32(0.05), np.int64(36), n3)
    else:
        cand = _qkx_cand(np.float32(-0.5), np.float32(0.1), np.int64(15), n3)
    pcand = _qp_cand(n15)
    G = CHUNK * 16
    wg = np.empty((G, 16), np.float32)
    scales = np.empty(G, np.float32)
    mins = np.empty(G, np.float32)
    sw = np.empty(G, np.float32)
    L = np.empty((G, 16), np.int32)
    Lf = L.reshape(-1)
    dblk = np.empty(CHUNK, np.float32)
    mblk = np.empty(CHUNK, np.float32)
    Ls = np.empty((CHUNK, 16), np.int32)
    Lm = np.empty((CHUNK, 16), np.int32)
    dv = np.empty(QK_K, np.float32)
    mv = np.empty(QK_K, np.float32)
    for s0 in range(0, S, CHUNK):
        m = min(CHUNK, S - s0)
        xc = xs[s0 : s0 + m]
        xg = xc.reshape((m * 16, 16))
        k = m * 16
        if has_w:
            for b in range(m):
                wo = ((s0 + b) % nb) * QK_K
                sigma2 = _sum_x2(xc, b, QK_K) / F_QK
                for j in range(16):
                    g = 16 * b + j
                    for l in range(16):
                        v = xc[b, 16 * j + l]
                        wg[g, l] = w[wo + 16 * j + l] * np.sqrt(sigma2 + v * v)
                    sumw = ZERO
                    for l in range(16):
                        sumw += wg[g, l]
                    sw[g] = sumw
            qkx(xg, wg[:k], n3, cand, not has_w, scales[:k], mins[:k], L[:k])
            qp(scales[:k].reshape((m, 16)), sw[:k].reshape((m, 16)), n15, pcand, dblk[:m], Ls[:m])
            qp(mins[:k].reshape((m, 16)), sw[:k].reshape((m, 16)), n15, pcand, mblk[:m], Lm[:m])
        else:
            for g in range(k):
                for l in range(16):
                    wg[g, l] = abs(xg[g, l])
            qkx(xg, wg[:k], n3, cand, not has_w, scales[:k], mins[:k], L[:k])
        for b in range(m):
            ob = os[s0 + b]
            g0 = 16 * b
            if has_w:
                d = dblk[b]
                dmin = mblk[b]
                for j in range(16):
                    ob[j] = (np.int64(Ls[b, j]) | (np.int64(Lm[b, j]) << 4)) & 0xFF
            else:
                max_scale = ZERO
                max_min = ZERO
                for j in range(16):
                    if scales[g0 + j] > max_scale:
                        max_scale = scales[g0 + j]
                    if mins[g0 + j] > max_min:
                        max_min = mins[g0 + j]
                if max_scale > ZERO:
                    iscale = F_15 / max_scale
                    for j in range(16):
                        ob[j] = nearest_int(iscale * scales[g0 + j]) & 0xFF
                    d = max_scale / F_15
                else:
                    for j in range(16):
                        ob[j] = 0
                    d = ZERO
                if max_min > ZERO:
                    iscale = F_15 / max_min
                    for j in range(16):
                        l = nearest_int(iscale * mins[g0 + j])
                        ob[j] = (np.int64(ob[j]) | (l << 4)) & 0xFF
                    dmin = max_min / F_15
                else:
                    dmin = ZERO
            dq = _put_fp16(ob, 80, d)
            dmq = _put_fp16(ob, 82, dmin)
            for j in range(16):
                sc = np.int64(ob[j])
                dj = dq * np.float32(sc & 0xF)
                dmj = dmq * np.float32(sc >> 4)
                for i in range(16):
                    dv[16 * j + i] = dj
                    mv[16 * j + i] = dmj
            _requant(xc[b], dv, mv, True, 0, 3, 0, Lf[256 * b : 256 * b + QK_K])
            _pack_2bit(Lf, 256 * b, ob, 16)


@njit(nogil=True, cache=True, error_model="numpy")
def dequantize_q2_k(q, out):
    _check_dq(q, out, 84)
    rows, n = out.shape
    nb = n // QK_K
    for r in range(rows):
        qr = q[r]
        for i in range(nb):
            off = 84 * i
            d = _get_fp16(qr, off + 80)
            dmin = _get_fp16(qr, off + 82)
            for h in range(2):
                for s in range(4):
                    shift = 2 * s
                    for half in range(2):
                        j = 8 * h + 2 * s + half
                        sc = np.int64(qr[off + j])
                        dl = d * np.float32(sc & 0xF)
                        ml = dmin * np.float32(sc >> 4)
                        y = QK_K * i + 16 * j
                        for l in range(16):
                            v = (np.int32(qr[off + 16 + 32 * h + 16 * half + l]) >> shift) & 3
                            out[r, y + l] = dl * np.float32(v) - ml


QUANTIZE = {
    "Q2_K": quantize_q2_k,
    "Q3_K": quantize_q3_k,
    "Q4_K": quantize_q4_k,
    "Q5_K": quantize_q5_k,
    "Q6_K": quantize_q6_k,
}
DEQUANTIZE = {
    "Q2_K": dequantize_q2_k,
    "Q3_K": dequantize_q3_k,
    "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k,
    "Q6_K": dequantize_q6_k,
}
