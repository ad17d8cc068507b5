"""The numba-compiled loops behind :mod:`dynq.kernels.compiled` (imported only when they run).

Each function is the C of ``ggml-quants.c`` named in its comment, over the groups (rows) of a
float32 ``[B, n]`` array. Every float is a ``float32`` and every constant too: a Python float
or an int meeting a float32 would make numba compute in float64. ``error_model="numpy"``: a
division by zero gives inf/NaN as in C (numba's default raises ZeroDivisionError).
"""

# ruff: noqa: E741

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

MAGIC = np.float32(12582912.0)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
EPS = np.float32(1e-15)
INF = np.float32(np.inf)


@intrinsic
def f32_bits(typingctx, v):
    # the bits of a float32 as an int32 (C's memcpy from float to int): one LLVM bitcast, which
    # stays in registers, so loops of it vectorise
    if not isinstance(v, types.Float) or v.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@njit(inline="always")
def nearest_int(v):
    # ggml's nearest_int: the low 23 bits of v + 1.5*2**23, minus 2**22 (exact for every float:
    # beyond 2**22, inf and NaN it wraps as the C does), the bits read in registers
    return (np.int64(f32_bits(v + MAGIC)) & 0x7FFFFF) - 0x400000


@njit(inline="always")
def rint(v):
    # nearest_int as a float, for |v| <= 2**22 (no trip through memory: this is the hot loop)
    return (v + MAGIC) - MAGIC


@njit(inline="always")
def levels(iscale, x, mn, fnmax):
    # MAX(0, MIN(nmax, nearest_int(iscale*(x - min)))), clamped before rounding (same result)
    v = (x - mn) * iscale
    if not v >= ZERO:
        v = ZERO
    if v > fnmax:
        v = fnmax
    return rint(v)


#: groups searched side by side by :func:`qkx` (independent lanes LLVM can vectorise)
LANES = 16


@njit(nogil=True, cache=True, error_model="numpy")
def qkx(x, w, nmax, cand, use_mad, scale_out, min_out, L_out):
    # make_qkx2_quants / make_qkx3_quants (cand: rmin + rdelta*is + nmax). A winning candidate
    # moves `min` for the next ones, so candidates run in order; LANES groups run side by side
    # instead, each with its own state (the C's branches become per-lane selects).
    B, n = x.shape
    G = LANES
    fnmax = np.float32(nmax)
    xt = np.empty((n, G), np.float32)
    wt = np.empty((n, G), np.float32)
    aux = np.empty((n, G), np.float32)  # the C's Laux: this candidate's levels
    mn = np.empty(G, np.float32)
    mn0 = np.empty(G, np.float32)
    mx = np.empty(G, np.float32)
    sum_w = np.empty(G, np.float32)
    sum_x = np.empty(G, np.float32)
    scale = np.empty(G, np.float32)
    best = np.empty(G, np.float32)
    best_is = np.empty(G, np.float32)
    best_mn = np.empty(G, np.float32)
    isc = np.empty(G, np.float32)
    sl = np.empty(G, np.float32)
    sl2 = np.empty(G, np.float32)
    sxl = np.empty(G, np.float32)
    tsc = np.empty(G, np.float32)
    tmn = np.empty(G, np.float32)
    ok = np.empty(G, np.bool_)
    err = np.empty(G, np.float32)
    for b0 in range(0, B, G):
        m = min(G, B - b0)
        for g in range(G):  # spare lanes repeat the last group (results dropped)
            r = b0 + min(g, m - 1)
            for j in range(n):
                xt[j, g] = x[r, j]
                wt[j, g] = w[r, j]
        for g in range(G):
            mn[g] = xt[0, g]
            mx[g] = xt[0, g]
            sum_w[g] = wt[0, g]
            sum_x[g] = wt[0, g] * xt[0, g]
        for j in range(1, n):
            for g in range(G):
                xj = xt[j, g]
                mn[g] = xj if xj < mn[g] else mn[g]
                mx[g] = xj if xj > mx[g] else mx[g]
                sum_w[g] += wt[j, g]
                sum_x[g] += wt[j, g] * xj
        for g in range(G):
            if mn[g] > ZERO:
                mn[g] = ZERO
            mn0[g] = mn[g]
            iscale = fnmax / (mx[g] - mn[g])
            scale[g] = ONE / iscale
            best_is[g] = iscale if abs(iscale) < INF else ZERO
            best[g] = ZERO
            best_mn[g] = mn[g]
        for j in range(n):
            for g in range(G):
                la = levels(best_is[g], xt[j, g], mn[g], fnmax)
                diff = scale[g] * la + mn[g] - xt[j, g]
                diff = abs(diff) if use_mad else diff * diff
                best[g] += diff * wt[j, g]
        for c in range(cand.shape[0]):
            for g in range(G):
                v = cand[c] / (mx[g] - mn[g])
                isc[g] = v if abs(v) < INF else ZERO
                sl[g] = ZERO
                sl2[g] = ZERO
                sxl[g] = ZERO
                err[g] = ZERO
            for j in range(n):
                for g in range(G):
                    la = levels(isc[g], xt[j, g], mn[g], fnmax)
                    aux[j, g] = la
                    wl = wt[j, g] * la
                    sl[g] += wl
                    sl2[g] += wl * la
                    sxl[g] += wl * xt[j, g]
            for g in range(G):
                D = sum_w[g] * sl2[g] - sl[g] * sl[g]
                ts = (sum_w[g] * sxl[g] - sum_x[g] * sl[g]) / D
                tm = (sl2[g] * sum_x[g] - sl[g] * sxl[g]) / D
                if tm > ZERO:
                    tm = ZERO
                    ts = sxl[g] / sl2[g]
                tsc[g] = ts
                tmn[g] = tm
                ok[g] = D > ZERO
            for j in range(n):
                for g in range(G):
                    diff = aux[j, g] * tsc[g] + tmn[g] - xt[j, g]
                    diff = abs(diff) if use_mad else diff * diff
                    err[g] += diff * wt[j, g]
            for g in range(G):
                if ok[g] and err[g] < best[g]:
                    best_is[g] = isc[g]
                    best_mn[g] = mn[g]
                    best[g] = err[g]
                    scale[g] = tsc[g]
                    mn[g] = tmn[g]
        for g in range(m):
            b = b0 + g
            if mx[g] <= mn0[g]:  # flat: L = 0, scale 0, the_min = -min
                for j in range(n):
                    L_out[b, j] = 0
                scale_out[b] = ZERO
                min_out[b] = -mn0[g]
                continue
            for j in range(n):
                L_out[b, j] = np.int32(levels(best_is[g], xt[j, g], best_mn[g], fnmax))
            scale_out[b] = scale[g]
            min_out[b] = -mn[g]


@njit(inline="always")
def zero_group(L_out, scale_out, b):
    # the C's answer for an all-zero group: L = 0, scale 0
    for j in range(L_out.shape[1]):
        L_out[b, j] = 0
    scale_out[b] = ZERO


@njit(inline="always")
def first_abs_max(x, b, n):
    amax = ZERO
    mx = ZERO
    for j in range(n):
        ax = abs(x[b, j])
        if ax > amax:
            amax = ax
            mx = x[b, j]
    return amax, mx


@njit(nogil=True, cache=True, error_model="numpy")
def qx(x, w, has_w, nmax, cand, scale_out, L_out):
    # make_qx_quants(rmse_type=1) (cand: nmax, then nmax + 0.1f*is). The candidates' sums do
    # not depend on each other, so they are accumulated side by side (each still left to right
    # over the group's values): independent chains the CPU overlaps and LLVM can vectorise.
    B, n = x.shape
    T = cand.shape[0]
    flo = np.float32(-nmax)
    fhi = np.float32(nmax - 1)
    isc = np.empty(T, np.float32)
    sumlx = np.empty(T, np.float32)
    suml2 = np.empty(T, np.float32)
    for b in range(B):
        amax, mx = first_abs_max(x, b, n)
        if amax < EPS:
            zero_group(L_out, scale_out, b)
            continue
        for t in range(T):
            isc[t] = -cand[t] / mx
            sumlx[t] = ZERO
            suml2[t] = ZERO
        for j in range(n):
            xj = x[b, j]
            wj = w[b, j] if has_w else xj * xj
            wx = wj * xj
            for t in range(T):
                # |isc*x| <= nmax + 1: rint is nearest_int there
                lf = min(max(rint(isc[t] * xj), flo), fhi)
                sumlx[t] += wx * lf
                suml2[t] += wj * lf * lf
        scale = sumlx[0] / suml2[0] if suml2[0] != ZERO else ZERO
        best = scale * sumlx[0]
        best_is = isc[0]
        for t in range(1, T):
            if suml2[t] > ZERO and sumlx[t] * sumlx[t] > best * suml2[t]:
                scale = sumlx[t] / suml2[t]
                best = scale * sumlx[t]
                best_is = isc[t]
        for j in range(n):
            L_out[b, j] = np.int32(min(max(rint(best_is * x[b, j]), flo), fhi)) + nmax
        scale_out[b] = scale


@njit(nogil=True, cache=True, error_model="numpy")
def qp(x, w, nmax, cand, scale_out, L_out):
    # make_qp_quants (cand: 0.1f*is + nmax); L[] is uint8_t in the C
    B, n = x.shape
    fnmax = np.float32(nmax)
    L = np.empty(n, np.int64)
    for b in range(B):
        mx = ZERO
        for j in range(n):
            mx = mx if mx > x[b, j] else x[b, j]
        if mx < EPS:
            zero_group(L_out, scale_out, b)
            continue
        iscale = fnmax / mx
        for j in range(n):
            L[j] = nearest_int(iscale * x[b, j]) & 0xFF
        scale = ONE / iscale
        best = ZERO
        for j in range(n):
            diff = x[b, j] - scale * np.float32(L[j])
            best += w[b, j] * diff * diff
        for c in range(cand.shape[0]):
            isc = cand[c] / mx
            sc = ONE / isc
            mse = ZERO
            for j in range(n):
                l = min(nmax, nearest_int(isc * x[b, j]))
                diff = x[b, j] - sc * np.float32(l)
                mse += w[b, j] * diff * diff
            if mse < best:
                best = mse
                iscale = isc
        sumlx = ZERO
        suml2 = ZERO
        for j in range(n):
            l = min(nmax, nearest_int(iscale * x[b, j]))
            L[j] = l & 0xFF
            lf = np.float32(l)
            sumlx += w[b, j] * x[b, j] * lf
            suml2 += w[b, j] * lf * lf
        for _ in range(5):
            changed = False
            for i in range(n):
                wi = w[b, i]
                xi = x[b, i]
                li = np.float32(L[i])
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                if slx > ZERO and sl2 > ZERO:
                    new_l = min(nmax, nearest_int(xi * sl2 / slx))
                    if new_l != L[i]:
                        nl = np.float32(new_l)
                        slx += wi * xi * nl
                        sl2 += wi * nl * nl
                        if slx * slx * suml2 > sumlx * sumlx * sl2:
                            L[i] = new_l & 0xFF
                            sumlx = slx
                            suml2 = sl2
                            changed = True
            if not changed:
                break
        for j in range(n):
            L_out[b, j] = L[j]
        scale_out[b] = sumlx / suml2 if suml2 > ZERO else ZERO


@njit(nogil=True, cache=True, error_model="numpy")
def q3(x, nmax, scale_out, L_out):
    # make_q3_quants(do_rmse=true)
    B, n = x.shape
    L = np.empty(n, np.int64)
    for b in range(B):
        amax, mx = first_abs_max(x, b, n)
        if amax < EPS:
            zero_group(L_out, scale_out, b)
            continue
        iscale = np.float32(-nmax) / mx
        sumlx = ZERO
        suml2 = ZERO
        for j in range(n):
            xj = x[b, j]
            l = min(max(nearest_int(iscale * xj), -nmax), nmax - 1)
            L[j] = l
            wj = xj * xj
            lf = np.float32(l)
            sumlx += wj * xj * lf
            suml2 += wj * lf * lf
        for _ in range(5):
            changed = False
            for i in range(n):
                xi = x[b, i]
                wi = xi * xi
                li = np.float32(L[i])
                slx = sumlx - wi * xi * li
                if slx > ZERO:
                    sl2 = suml2 - wi * li * li
                    new_l = min(max(nearest_int(xi * sl2 / slx), -nmax), nmax - 1)
                    if new_l != L[i]:
                        nl = np.float32(new_l)
                        slx += wi * xi * nl
                        sl2 += wi * nl * nl
                        if sl2 > ZERO and slx * slx * suml2 > sumlx * sumlx * sl2:
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            changed = True
            if not changed:
                break
        for j in range(n):
            L_out[b, j] = L[j] + nmax
        scale_out[b] = sumlx / suml2 if suml2 > ZERO else ZERO


@njit(nogil=True, cache=True, error_model="numpy")
def seq_sum(t, first, out):
    # for (j) s += t[j], per column of t [n, M], strictly left to right (columns independent)
    n, M = t.shape
    if first:
        for m in range(M):
            out[m] = t[0, m]
    else:
        for m in range(M):
            out[m] = ZERO + t[0, m]
    for j in range(1, n):
        for m in range(M):
            out[m] += t[j, m]


@njit(nogil=True, cache=True, error_model="numpy")
def sqrtf(v, out):
    # C sqrtf: the correctly rounded float32 square root (sqrtss/sqrtps)
    for i in range(v.shape[0]):
        out[i] = np.sqrt(v[i])


@njit(nogil=True, cache=True, error_model="numpy")
def requant(x, d, dm, has_dm, L, lo, hi, out):
    # every k-quant's last pass: l = nearest_int((x + dm)/d) clamped to [lo, hi]; where d == 0
    # the C skips the group (`if (!d) continue;`) and the search's L stays
    G, sub = x.shape
    for g in range(G):
        dg = d[g]
        if dg == ZERO:
            for i in range(sub):
                out[g, i] = L[g, i]
            continue
        for i in range(sub):
            v = x[g, i] + dm[g] if has_dm else x[g, i]
            out[g, i] = min(max(nearest_int(v / dg), lo), hi)


# ---- the legacy types' single-pass quantizers (ggml's quantize_row_*_ref) --------------------

I32_LO = np.float32(-2147483648.0)
I32_HI = np.float32(2147483648.0)


@njit(inline="always")
def trunc_i32(v):
    # C's float -> int as x86 does it (cvttss2si): toward zero, INT32_MIN for NaN, inf and
    # values outside int32 (base.trunc_i32)
    if v >= I32_LO and v < I32_HI:
        return np.int32(v)
    return np.int32(-2147483648)


TWO24 = np.float32(16777216.0)


@njit(inline="always")
def fp16_bits(v):
    # GGML_FP32_TO_FP16 of float32 v (round to nearest even, as F16C's vcvtps2ph): the half's
    # bits as an int; NaN -> sign | 0x7E00. Branch-free, so a loop of it vectorises
    b = f32_bits(v)
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    # below 2**-14 (subnormal halves): |v|*2**24 is exact and below 1024; rint it
    sub = np.int32((np.abs(v) * TWO24 + MAGIC) - MAGIC)
    # normal: drop 13 mantissa bits, ties to even (a carry moves into the exponent)
    nrm = (a + np.int32(0xFFF - 0x38000000) + ((a >> 13) & 1)) >> 13
    h = nrm if a >= 0x38800000 else sub
    h = 0x7C00 if a >= 0x477FF000 else h  # 65520 and up round to inf
    h = 0x7E00 if a > 0x7F800000 else h
    return sign | h


#: 2**(e - 25), the weight of a half's integer significand for exponent field e (e = 0: 2**-24;
#: 31: inf and NaN)
_HALF_SCALE = np.array(
    [2.0**-24] + [2.0 ** (e - 25) for e in range(1, 31)] + [np.inf], dtype=np.float32
)


@njit(inline="always")
def fp16_value(h):
    # GGML_FP16_TO_FP32 of the half bits h (an int): exact
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    sig = m if e == 0 else m + 1024
    v = np.float32(sig) * _HALF_SCALE[e]
    if e == 31 and m != 0:
        v = np.float32(np.nan)
    return -v if h & 0x8000 else v


@njit(nogil=True, cache=True, error_model="numpy")
def error_sums(x, y, d2, x2):
    # per column c: d2[c] = sum over rows of (x - y)^2, x2[c] = sum of x^2 (float64), in one
    # pass over x and y (kernels._error_sums)
    B, n = x.shape
    for c in range(n):
        d2[c] = 0.0
        x2[c] = 0.0
    for b in range(B):
        for c in range(n):
            xv = np.float64(x[b, c])
            d = xv - np.float64(y[b, c])
            d2[c] += d * d
            x2[c] += xv * xv


@njit(nogil=True, cache=True)
def any_nonfinite(u):
    # whether any float32 of ``u`` (its bits, a uint32 array) is inf or NaN: all exponent bits
    # set. An integer OR over the array, which LLVM vectorises (no early exit)
    bad = np.uint32(0)
    for i in range(u.size):
        bad |= np.uint32((u.flat[i] & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
    return bad != 0
