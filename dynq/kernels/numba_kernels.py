"""The numba-compiled loops behind :mod:`dynq.kernels.compiled` (imported only when they run).

Each function is the C of ``ggml-quants.c`` named in its comment, over the groups (rows) of a
float32 ``[B, n]`` array. Every float is a ``float32`` and every constant too: a Python float
or an int meeting a float32 would make numba compute in float64. ``error_model="numpy"``: a
division by zero gives inf/NaN as in C (numba's default raises ZeroDivisionError).
"""

# ruff: noqa: E741

import numpy as np
from numba import njit

MAGIC = np.float32(12582912.0)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
EPS = np.float32(1e-15)
INF = np.float32(np.inf)


@njit(inline="always")
def nearest_int(v, fb, ib):
    # ggml's nearest_int: the low 23 bits of v + 1.5*2**23, minus 2**22
    fb[0] = v + MAGIC
    return (ib[0] & 0x7FFFFF) - 0x400000


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


@njit(nogil=True, cache=True, error_model="numpy")
def qkx(x, w, nmax, cand, use_mad, scale_out, min_out, L_out):
    # make_qkx2_quants / make_qkx3_quants (cand: rmin + rdelta*is + nmax)
    B, n = x.shape
    fnmax = np.float32(nmax)
    aux = np.empty(n, np.float32)  # the C's Laux: this candidate's levels
    for b in range(B):
        mn = x[b, 0]
        mx = x[b, 0]
        sum_w = w[b, 0]
        sum_x = sum_w * x[b, 0]
        for j in range(1, n):
            xj = x[b, j]
            if xj < mn:
                mn = xj
            if xj > mx:
                mx = xj
            wj = w[b, j]
            sum_w += wj
            sum_x += wj * xj
        if mn > ZERO:
            mn = ZERO
        if mx <= mn:
            for j in range(n):
                L_out[b, j] = 0
            scale_out[b] = ZERO
            min_out[b] = -mn
            continue
        iscale = fnmax / (mx - mn)
        scale = ONE / iscale
        best_is = iscale if abs(iscale) < INF else ZERO
        best = ZERO
        for j in range(n):
            la = levels(best_is, x[b, j], mn, fnmax)
            diff = scale * la + mn - x[b, j]
            diff = abs(diff) if use_mad else diff * diff
            best += diff * w[b, j]
        best_mn = mn
        for c in range(cand.shape[0]):
            isc = cand[c] / (mx - mn)
            if not abs(isc) < INF:
                isc = ZERO
            sum_l = ZERO
            sum_l2 = ZERO
            sum_xl = ZERO
            for j in range(n):
                la = levels(isc, x[b, j], mn, fnmax)
                aux[j] = la
                wl = w[b, j] * la
                sum_l += wl
                sum_l2 += wl * la
                sum_xl += wl * x[b, j]
            D = sum_w * sum_l2 - sum_l * sum_l
            if D > ZERO:
                this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
                this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
                if this_min > ZERO:
                    this_min = ZERO
                    this_scale = sum_xl / sum_l2
                err = ZERO
                for j in range(n):
                    diff = aux[j] * this_scale + this_min - x[b, j]
                    diff = abs(diff) if use_mad else diff * diff
                    err += diff * w[b, j]
                if err < best:
                    best_is = isc
                    best_mn = mn
                    best = err
                    scale = this_scale
                    mn = this_min
        for j in range(n):
            L_out[b, j] = np.int32(levels(best_is, x[b, j], best_mn, fnmax))
        scale_out[b] = scale
        min_out[b] = -mn


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
            for j in range(n):
                L_out[b, j] = 0
            scale_out[b] = ZERO
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
    fb = np.empty(1, np.float32)
    ib = fb.view(np.int32)
    L = np.empty(n, np.int64)
    for b in range(B):
        mx = ZERO
        for j in range(n):
            mx = mx if mx > x[b, j] else x[b, j]
        if mx < EPS:
            for j in range(n):
                L_out[b, j] = 0
            scale_out[b] = ZERO
            continue
        iscale = fnmax / mx
        for j in range(n):
            L[j] = nearest_int(iscale * x[b, j], fb, ib) & 0xFF
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
                l = min(nmax, nearest_int(isc * x[b, j], fb, ib))
                diff = x[b, j] - sc * np.float32(l)
                mse += w[b, j] * diff * diff
            if mse < best:
                best = mse
                iscale = isc
        sumlx = ZERO
        suml2 = ZERO
        for j in range(n):
            l = min(nmax, nearest_int(iscale * x[b, j], fb, ib))
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
                    new_l = min(nmax, nearest_int(xi * sl2 / slx, fb, ib))
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
    fb = np.empty(1, np.float32)
    ib = fb.view(np.int32)
    L = np.empty(n, np.int64)
    for b in range(B):
        amax, mx = first_abs_max(x, b, n)
        if amax < EPS:
            for j in range(n):
                L_out[b, j] = 0
            scale_out[b] = ZERO
            continue
        iscale = np.float32(-nmax) / mx
        sumlx = ZERO
        suml2 = ZERO
        for j in range(n):
            xj = x[b, j]
            l = min(max(nearest_int(iscale * xj, fb, ib), -nmax), nmax - 1)
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
                    new_l = min(max(nearest_int(xi * sl2 / slx, fb, ib), -nmax), nmax - 1)
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
    fb = np.empty(1, np.float32)
    ib = fb.view(np.int32)
    for g in range(G):
        dg = d[g]
        if dg == ZERO:
            for i in range(sub):
                out[g, i] = L[g, i]
            continue
        for i in range(sub):
            v = x[g, i] + dm[g] if has_dm else x[g, i]
            out[g, i] = min(max(nearest_int(v / dg, fb, ib), lo), hi)
