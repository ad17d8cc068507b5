"""The numba-compiled IQ1_S/IQ1_M quantizers behind :mod:`dynq.kernels.compiled` (imported
only when they run).

ggml's ``quantize_row_iq1_s_impl`` and ``quantize_row_iq1_m_impl`` sort each block, then try
every pair of split points ``i1 <= i2`` of the sorted values (levels 0 below ``i1``, 1 up to
``i2``, 2 above) with the ternary values shifted by ``+delta`` or ``-delta`` (IQ1_M: each half
of the block shifted on its own), scoring each candidate from prefix sums of ``w*x`` and ``w``;
the first strictly better one wins. Groups of 8 levels off IQ1's lattice then take the
neighbour ``iq1_find_best_neighbour2`` picks. :class:`dynq.kernels.iq_lowbit.IQ1_S` and
``IQ1_M`` hold the torch version (the specification); :mod:`dynq.kernels.triton_iq1` the same
as Triton kernels, one lane per block. Here each function is that lane's loop over the blocks,
with the float32 operations of the torch code in its order:

* the prefix sums ``s[0] = 0; s[j+1] = s[j] + v[j]`` left to right (``_prefix``);
* the pairs in ggml's order (``for i1 in 0..N: for i2 in i1..N``, ``_pairs``), the shifts in
  the order the torch code stacks them, each sum associated as the torch expression is;
* the scan ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { best = sc*sumqx; ... }`` with
  ``sc = sumqx/sumq2`` (``record_scan``), ``best`` starting at ``-FLT_MAX``; ``sc`` is only
  needed where a candidate is taken (and for candidate 0, what the torch code's ``gather`` at
  the clamped index reads where none is), so only there is it divided out. The candidates of
  one ``i1`` are computed first, then screened against the best so far (a row where none
  passes leaves the scan as it was); only rows with a hit are scanned in order.

``iq1_s_blocks`` and ``iq1_m_blocks`` run a block's whole work in one pass (the skip test, the
stable sort, the search, the levels, the lattice with its neighbours, the refit: what
``IQ1_S._quantize`` and ``IQ1_M._quantize`` do before the super-block scales), ``iq1_m_fit``
IQ1_M's final fit over the super-block; ``iq1_s_search``, ``iq1_m_search`` and
``iq1_neighbours`` are the pieces on their own (for the tests).

Every float is a ``float32`` and every constant too (a Python float or an int meeting a float32
would make numba compute in float64); numba compiles without fast-math (no fused multiply-add);
``error_model="numpy"``: a division by zero gives inf/NaN as in C. The functions release the
GIL (``nogil``) and are cached beside this file.
"""

import numpy as np
from numba import njit

ZERO = np.float32(0.0)
FLT_MAX = np.float32(3.4028234663852886e38)
NEG_FLT_MAX = np.float32(-3.4028234663852886e38)

# x_p = {-1 + 1/8, 1/8, 1 + 1/8}, x_m = {-1 - 1/8, -1/8, 1 - 1/8} (all exact in float32)
P0 = np.float32(-0.875)
P1 = np.float32(0.125)
P2 = np.float32(1.125)
M0 = np.float32(-1.125)
M1 = np.float32(-0.125)
M2 = np.float32(0.875)
# IQ1_M: cp1 = p0^2 - p1^2, cp2 = p1^2 - p2^2, cm1 = m0^2 - m1^2, cm2 = m1^2 - m2^2 (exact)
CP1 = np.float32(0.75)
CP2 = np.float32(-1.25)
CM1 = np.float32(1.25)
CM2 = np.float32(-0.75)


@njit(inline="always")
def _s_search(wxs, ws, px, pw, cx, cw):
    # iq_lowbit._iq1_s_search (triton_iq1.iq1_s_kernel) for one block of the sorted w*x, w [N]:
    # candidates (i1, i2) then x_p, x_m (index 2*pair + shift). Returns (pick, -1: none; sc;
    # the pick's i1, i2, (0, 0) where none).
    # Per i1 the candidates' sumqx (cx) and sumq2 (cw) are computed for every i2 first (a loop
    # LLVM vectorises), then screened against the best so far: a row none of whose candidates
    # passes `sumq2 > 0 && sumqx*sumqx > best*sumq2` leaves the scan as it was (best does not
    # move within it); only rows with a hit are scanned in order.
    N = wxs.shape[0]
    sx = ZERO
    sw = ZERO
    px[0] = sx
    pw[0] = sw
    for j in range(N):
        sx = sx + wxs[j]
        sw = sw + ws[j]
        px[j + 1] = sx
        pw[j + 1] = sw
    sx0 = px[0]
    sw0 = pw[0]
    sxn = sx
    swn = sw
    best = NEG_FLT_MAX
    pick = -1
    bsc = ZERO
    b1 = 0
    b2 = 0
    for i1 in range(N + 1):
        sx1 = px[i1]
        sw1 = pw[i1]
        # the terms of level 0 (below i1), the same for every i2
        dx0 = sx1 - sx0
        dw0 = sw1 - sw0
        xp0 = dx0 * P0
        xm0 = dx0 * M0
        wp0 = (dw0 * P0) * P0
        wm0 = (dw0 * M0) * M0
        nk = N + 1 - i1
        for k in range(nk):
            sx2 = px[i1 + k]
            sw2 = pw[i1 + k]
            dx1 = sx2 - sx1
            dx2 = sxn - sx2
            dw1 = sw2 - sw1
            dw2 = swn - sw2
            cx[2 * k] = (xp0 + dx1 * P1) + dx2 * P2  # x_p
            cw[2 * k] = (wp0 + (dw1 * P1) * P1) + (dw2 * P2) * P2
            cx[2 * k + 1] = (xm0 + dx1 * M1) + dx2 * M2  # x_m
            cw[2 * k + 1] = (wm0 + (dw1 * M1) * M1) + (dw2 * M2) * M2
        if i1 == 0:  # candidate 0's sc: what the torch code reads where none is taken
            bsc = cx[0] / cw[0]
        hit = 0
        for k in range(2 * nk):
            hit |= (cw[k] > ZERO) & (cx[k] * cx[k] > best * cw[k])
        if hit:
            c0 = i1 * (2 * N + 3 - i1)  # 2 * (pairs before i1)
            for k in range(2 * nk):
                qx = cx[k]
                q2 = cw[k]
                if q2 > ZERO and qx * qx > best * q2:
                    sc = qx / q2
                    bsc = sc
                    best = sc * qx
                    pick = c0 + k
                    b1 = i1
                    b2 = i1 + k // 2
    return pick, bsc, b1, b2


@njit(inline="always")
def _m_search(wxs, ws, order, px0, px1, pw0, pw1, cx, cw):
    # iq_lowbit._iq1_m_search (triton_iq1.iq1_m_kernel) for one block of the sorted w*x, w [N]:
    # prefix sums per half of the block (the sorted value's original position, `order`, below
    # or above N/2); candidates (i1, i2) then the shifts of the two halves (p,p), (p,m), (m,p),
    # (m,m) (index 4*pair + k), computed and screened a row (i1) at a time as in _s_search.
    # Returns what _s_search does
    N = wxs.shape[0]
    h = N // 2
    sx0 = ZERO
    sx1 = ZERO
    sw0 = ZERO
    sw1 = ZERO
    px0[0] = sx0
    px1[0] = sx1
    pw0[0] = sw0
    pw1[0] = sw1
    for j in range(N):
        vx = wxs[j]
        vw = ws[j]
        if order[j] >= h:  # the torch code adds +0.0 for the other half
            sx0 = sx0 + ZERO
            sx1 = sx1 + vx
            sw0 = sw0 + ZERO
            sw1 = sw1 + vw
        else:
            sx0 = sx0 + vx
            sx1 = sx1 + ZERO
            sw0 = sw0 + vw
            sw1 = sw1 + ZERO
        px0[j + 1] = sx0
        px1[j + 1] = sx1
        pw0[j + 1] = sw0
        pw1[j + 1] = sw1
    # txs*p2, tws*p2*p2 (and m2) per half
    tp0 = sx0 * P2
    tm0 = sx0 * M2
    tp1 = sx1 * P2
    tm1 = sx1 * M2
    wp0 = (sw0 * P2) * P2
    wm0 = (sw0 * M2) * M2
    wp1 = (sw1 * P2) * P2
    wm1 = (sw1 * M2) * M2
    best = NEG_FLT_MAX
    pick = -1
    bsc = ZERO
    b1 = 0
    b2 = 0
    for i1 in range(N + 1):
        ax0 = px0[i1]
        ax1 = px1[i1]
        aw0 = pw0[i1]
        aw1 = pw1[i1]
        ap0 = wp0 + aw0 * CP1
        am0 = wm0 + aw0 * CM1
        ap1 = wp1 + aw1 * CP1
        am1 = wm1 + aw1 * CM1
        nk = N + 1 - i1
        for k in range(nk):
            i2 = i1 + k
            s0 = ax0 + px0[i2]
            s1 = ax1 + px1[i2]
            bw0 = pw0[i2]
            bw1 = pw1[i2]
            qp0 = tp0 - s0
            qm0 = tm0 - s0
            qp1 = tp1 - s1
            qm1 = tm1 - s1
            rp0 = ap0 + bw0 * CP2
            rm0 = am0 + bw0 * CM2
            rp1 = ap1 + bw1 * CP2
            rm1 = am1 + bw1 * CM2
            cx[4 * k] = qp0 + qp1
            cw[4 * k] = rp0 + rp1
            cx[4 * k + 1] = qp0 + qm1
            cw[4 * k + 1] = rp0 + rm1
            cx[4 * k + 2] = qm0 + qp1
            cw[4 * k + 2] = rm0 + rp1
            cx[4 * k + 3] = qm0 + qm1
            cw[4 * k + 3] = rm0 + rm1
        if i1 == 0:  # candidate 0's sc: what the torch code reads where none is taken
            bsc = cx[0] / cw[0]
        hit = 0
        for k in range(4 * nk):
            hit |= (cw[k] > ZERO) & (cx[k] * cx[k] > best * cw[k])
        if hit:
            c0 = 2 * i1 * (2 * N + 3 - i1)  # 4 * (pairs before i1)
            for k in range(4 * nk):
                qx = cx[k]
                q2 = cw[k]
                if q2 > ZERO and qx * qx > best * q2:
                    sc = qx / q2
                    bsc = sc
                    best = sc * qx
                    pick = c0 + k
                    b1 = i1
                    b2 = i1 + k // 4
    return pick, bsc, b1, b2


@njit(inline="always")
def _neighbour(x, w, o, sc, xx, u, tt, nb_count, nb_start, nb_list, lvpack):
    # iq1_find_best_neighbour2 (iq_lowbit.best_neighbours with the levels' values xx,
    # triton_iq1.iq1_neighbour_kernel) for the group of 8 x[o:o+8], w[o:o+8] with packed levels
    # u, off the lattice: the terms w*(scale*q - x)^2 tabulated once per element and level
    # (tt [8*3]), each neighbour's d2 summed from them left to right (lvpack[j]: grid point j's
    # levels, 2 bits each); the first d2 < best from best = FLT_MAX wins (NaN and >= FLT_MAX
    # are never taken; none: the first neighbour)
    for i in range(8):
        xi = x[o + i]
        wi = w[o + i]
        for lv in range(3):
            diff = sc * xx[lv] - xi
            tt[3 * i + lv] = (wi * diff) * diff
    start = nb_start[u]
    best = FLT_MAX
    gj = nb_list[start]
    for k in range(nb_count[u]):
        j = nb_list[start + k]
        pk = lvpack[j]
        d2 = tt[pk & 3]
        for i in range(1, 8):
            d2 = d2 + tt[3 * i + ((pk >> (2 * i)) & 3)]
        if d2 < best:
            best = d2
            gj = j
    return gj


@njit(inline="always")
def _sort(x, key, order):
    # iq_lowbit._sorted_split's order: x ascending, stably (-0.0 equal to +0.0): each value's
    # bits made an integer in the floats' order (negatives' magnitude bits flipped; -0.0 as
    # +0.0), times 64 plus the element's index (unique keys: ties keep their order); element i
    # goes to its rank, the number of keys below its own (a compare loop LLVM vectorises)
    N = x.shape[0]
    xi = x.view(np.int32)
    for i in range(N):
        b = np.int64(xi[i])
        if b == -2147483648:  # -0.0
            b = 0
        elif b < 0:
            b = b ^ 0x7FFFFFFF
        key[i] = b * 64 + i
    for i in range(N):
        v = key[i]
        r = 0
        for j in range(N):
            r += key[j] < v
        order[r] = i


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_s_search(wxs, ws, pick_out, sc_out):
    # iq_lowbit._iq1_s_search over the blocks [B, N]
    B, N = wxs.shape
    px = np.empty(N + 1, np.float32)
    pw = np.empty(N + 1, np.float32)
    cx = np.empty(2 * (N + 1), np.float32)
    cw = np.empty(2 * (N + 1), np.float32)
    for b in range(B):
        pick, sc, _, _ = _s_search(wxs[b], ws[b], px, pw, cx, cw)
        pick_out[b] = pick
        sc_out[b] = sc


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_m_search(wxs, ws, order, pick_out, sc_out):
    # iq_lowbit._iq1_m_search over the blocks [B, N]
    B, N = wxs.shape
    px0 = np.empty(N + 1, np.float32)
    px1 = np.empty(N + 1, np.float32)
    pw0 = np.empty(N + 1, np.float32)
    pw1 = np.empty(N + 1, np.float32)
    cx = np.empty(4 * (N + 1), np.float32)
    cw = np.empty(4 * (N + 1), np.float32)
    for b in range(B):
        pick, sc, _, _ = _m_search(wxs[b], ws[b], order[b], px0, px1, pw0, pw1, cx, cw)
        pick_out[b] = pick
        sc_out[b] = sc


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_neighbours(u, xv, wv, scale, xx, nb_count, nb_start, nb_list, lvpack, gi_out):
    # iq_lowbit.best_neighbours with the levels' values xx [M, 3] over M groups of 8
    tt = np.empty(24, np.float32)
    for m in range(xv.shape[0]):
        gi_out[m] = _neighbour(
            xv[m], wv[m], 0, scale[m], xx[m], u[m], tt, nb_count, nb_start, nb_list, lvpack
        )


@njit(inline="always")
def _grid(x, w, L, scale, xx, gmap, nb_count, nb_start, nb_list, lvpack, tt, gi):
    # iq_lowbit._iq1_grid for one block: each group of 8 levels L looked up on IQ1's lattice,
    # one off it replaced by its best neighbour at `scale` with the level values xx[g]
    # (into gi[g]). Returns whether some group was off the lattice
    anyoff = False
    for g in range(gi.shape[0]):
        u = 0
        for i in range(8):
            u |= L[8 * g + i] << (2 * i)
        j = gmap[u]
        if j < 0:
            anyoff = True
            j = _neighbour(x, w, 8 * g, scale, xx[g], u, tt, nb_count, nb_start, nb_list, lvpack)
        gi[g] = j
    return anyoff


@njit(inline="always")
def _refit(x, w, gi, xx, lvpack, scale):
    # iq_lowbit._iq1_refit for one block with a group off the lattice: sumqx += w*q*x;
    # sumq2 += w*q*q with the chosen grid points, then sumqx/sumq2 if both are positive
    sumqx = ZERO
    sumq2 = ZERO
    for j in range(x.shape[0]):
        g = j // 8
        q = xx[g, (lvpack[gi[g]] >> (2 * (j % 8))) & 3]
        wq = w[j] * q
        sumqx = sumqx + wq * x[j]
        sumq2 = sumq2 + wq * q
    if sumqx > ZERO and sumq2 > ZERO:
        return sumqx / sumq2
    return scale


@njit(inline="always")
def _sorted_block(x, w, eps, key, order, wxs, ws):
    # a block's start in IQ1_S and IQ1_M: False where it is skipped (max |x| < eps; NaN is never
    # skipped); else its sort order and the sorted w*x and w
    skip = True
    for j in range(x.shape[0]):
        if not abs(x[j]) < eps:
            skip = False
    if skip:
        return False
    _sort(x, key, order)
    for j in range(x.shape[0]):
        o = order[j]
        ws[j] = w[o]
        wxs[j] = w[o] * x[o]
    return True


@njit(inline="always")
def _split_levels(order, i1, i2, neg, L):
    # iq_lowbit._split_levels: 0 below the first split, 1 up to the second, 2 above, in the
    # block's own order; flipped (2 - l) with a negative scale
    for j in range(order.shape[0]):
        lv = (1 if j >= i1 else 0) + (1 if j >= i2 else 0)
        L[order[j]] = 2 - lv if neg else lv


@njit(inline="always")
def _set_values(xx, g, p):
    # group g's level values: x_p (p) or x_m
    if p:
        xx[g, 0] = P0
        xx[g, 1] = P1
        xx[g, 2] = P2
    else:
        xx[g, 0] = M0
        xx[g, 1] = M1
        xx[g, 2] = M2


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_s_blocks(
    xb, wb, eps, gmap, nb_count, nb_start, nb_list, lvpack, scale_out, shift_out, gi_out
):
    # iq_lowbit.IQ1_S._quantize's work per block of N = 32 (quantize_row_iq1_s_impl up to the
    # super-block scale): skip (max |x| < eps), the sort, the split search (_s_search), the
    # levels (flipped with a negative scale), the lattice and its neighbours (_grid), the refit.
    # Out: the block's scale (0 skipped), shift (+1/-1; +1 skipped), grid indices ([B, N/8], 0
    # skipped)
    B, N = xb.shape
    ng = N // 8
    order = np.empty(N, np.int64)
    key = np.empty(N, np.int64)
    wxs = np.empty(N, np.float32)
    ws = np.empty(N, np.float32)
    px = np.empty(N + 1, np.float32)
    pw = np.empty(N + 1, np.float32)
    cx = np.empty(2 * (N + 1), np.float32)
    cw = np.empty(2 * (N + 1), np.float32)
    L = np.empty(N, np.int64)
    tt = np.empty(24, np.float32)
    xx = np.empty((ng, 3), np.float32)
    for b in range(B):
        x = xb[b]
        w = wb[b]
        pick = -1
        if _sorted_block(x, w, eps, key, order, wxs, ws):
            pick, scale, i1, i2 = _s_search(wxs, ws, px, pw, cx, cw)
        if pick < 0:
            scale_out[b] = ZERO
            shift_out[b] = 1
            for g in range(ng):
                gi_out[b, g] = 0
            continue
        shift = 1 if pick % 2 == 0 else -1
        neg = scale < ZERO
        _split_levels(order, i1, i2, neg, L)
        if neg:
            scale = -scale
            shift = -shift
        for g in range(ng):
            _set_values(xx, g, shift == 1)
        gi = gi_out[b]
        if _grid(x, w, L, scale, xx, gmap, nb_count, nb_start, nb_list, lvpack, tt, gi):
            scale = _refit(x, w, gi, xx, lvpack, scale)
        scale_out[b] = scale
        shift_out[b] = shift


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_m_blocks(xb, wb, eps, gmap, nb_count, nb_start, nb_list, lvpack, scale_out, k_out, gi_out):
    # iq_lowbit.IQ1_M._quantize's work per block of N = 16 (quantize_row_iq1_m_impl up to the
    # super-block scales): skip (max |x| < eps), the sort, the split search (_m_search), the
    # levels and shifts (flipped with a negative scale), the lattice and its neighbours
    # (_grid), the refit. Out: the block's scale (0 skipped), best_k (the shifts of its two
    # halves, 0 skipped), grid indices ([B, N/8], 0 skipped)
    B, N = xb.shape
    ng = N // 8
    order = np.empty(N, np.int64)
    key = np.empty(N, np.int64)
    wxs = np.empty(N, np.float32)
    ws = np.empty(N, np.float32)
    px0 = np.empty(N + 1, np.float32)
    px1 = np.empty(N + 1, np.float32)
    pw0 = np.empty(N + 1, np.float32)
    pw1 = np.empty(N + 1, np.float32)
    cx = np.empty(4 * (N + 1), np.float32)
    cw = np.empty(4 * (N + 1), np.float32)
    L = np.empty(N, np.int64)
    tt = np.empty(24, np.float32)
    xx = np.empty((ng, 3), np.float32)
    for b in range(B):
        x = xb[b]
        w = wb[b]
        pick = -1
        if _sorted_block(x, w, eps, key, order, wxs, ws):
            pick, scale, i1, i2 = _m_search(wxs, ws, order, px0, px1, pw0, pw1, cx, cw)
        if pick < 0:
            scale_out[b] = ZERO
            k_out[b] = 0
            for g in range(ng):
                gi_out[b, g] = 0
            continue
        best_k = pick % 4
        neg = scale < ZERO
        _split_levels(order, i1, i2, neg, L)
        if neg:
            scale = -scale
            best_k = 3 - best_k
        # the first group takes x_p where best_k < 2, the second where best_k is even
        for g in range(ng):
            _set_values(xx, g, best_k < 2 if g == 0 else best_k % 2 == 0)
        gi = gi_out[b]
        if _grid(x, w, L, scale, xx, gmap, nb_count, nb_start, nb_list, lvpack, tt, gi):
            scale = _refit(x, w, gi, xx, lvpack, scale)
        scale_out[b] = scale
        k_out[b] = best_k


@njit(inline="always")
def _level(p, lv):
    # x_p[lv] (p) or x_m[lv]
    if p:
        return P0 if lv == 0 else (P1 if lv == 1 else P2)
    return M0 if lv == 0 else (M1 if lv == 1 else M2)


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_m_fit(x, weight, gi, best_k, l3, lvpack, sumqx_out, sumq2_out):
    # iq_lowbit.IQ1_M._quantize's final fit per super-block x, weight [S, 256] (16 blocks of
    # 16, each two groups of 8 with grid indices gi [S*16, 2], shifts best_k [S*16], block
    # scales l3 [S, 16]): q = xx[level] * (2*l3 + 1); sumqx += w*q*x; sumq2 += w*q*q, left to
    # right over the super-block
    S, n = x.shape
    nb = l3.shape[1]
    bs = n // nb
    for s in range(S):
        sx = ZERO
        s2 = ZERO
        for blk in range(nb):
            m = np.float32(2 * l3[s, blk] + 1)
            r = s * nb + blk
            bk = best_k[r]
            for g in range(bs // 8):
                p = bk < 2 if g == 0 else bk % 2 == 0  # the first group, the second
                pk = lvpack[gi[r, g]]
                for i in range(8):
                    j = blk * bs + 8 * g + i
                    q = _level(p, (pk >> (2 * i)) & 3) * m
                    wq = weight[s, j] * q
                    sx = sx + wq * x[s, j]
                    s2 = s2 + wq * q
        sumqx_out[s] = sx
        sumq2_out[s] = s2
