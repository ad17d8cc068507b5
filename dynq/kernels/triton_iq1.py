"""The Triton kernels behind :mod:`dynq.kernels.fused`'s IQ1_S/IQ1_M searches (imported only
when they run).

ggml's ``quantize_row_iq1_s_impl`` and ``quantize_row_iq1_m_impl`` sort each block, then try
every pair of split points ``i1 <= i2`` of the sorted values (levels 0 below ``i1``, 1 up to
``i2``, 2 above) with the ternary values shifted by ``+delta`` or ``-delta`` (IQ1_M: each half
of the block shifted on its own), scoring each candidate from prefix sums of ``w*x`` and ``w``;
the first strictly better one wins. :class:`dynq.kernels.iq_lowbit.IQ1_S` and ``IQ1_M`` hold
the torch version (candidate tensors replayed by ``record_scan``); here one lane runs one
block's whole search, with the float32 operations of the torch code in its order:

* the prefix sums ``s[0] = 0; s[j+1] = s[j] + v[j]`` left to right (``_prefix``), kept in
  global memory (``[N+1, B]``, each lane reading back its own column: no barrier needed);
* the pairs in ggml's order (``for i1 in 0..N: for i2 in i1..N``, ``_pairs``), the shifts in
  the order the torch code stacks them;
* the scan ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { best = sc*sumqx; ... }`` with
  ``sc = sumqx/sumq2`` (``record_scan``), ``best`` starting at ``-FLT_MAX``.

Each search kernel stores the winning candidate's index (``-1`` where none was taken) and its
``sc`` (candidate 0's where none was taken: what the torch code's ``gather`` at the clamped
index reads).

``iq1_neighbour_kernel`` is ``iq1_find_best_neighbour2`` for the groups of 8 whose levels fall
off IQ1's lattice (``iq_lowbit.best_neighbours`` with the levels' values ``xx``): one lane per
group, its terms ``w*(scale*q - x)^2`` tabulated once per element and level, each neighbour's
``d2`` summed from them left to right, the first ``d2 < best`` from ``best = FLT_MAX`` taken
(none: the first neighbour).

Launch with ``enable_fp_fusion=False``; divisions are ``div_rn``.
"""

import triton
import triton.language as tl


@triton.jit
def record(qx, q2, c, best, pick, bsc):
    # record_scan, one candidate c: the first strictly better one wins
    sc = tl.math.div_rn(qx, q2)
    take = (q2 > 0) & (qx * qx > best * q2)
    best = tl.where(take, sc * qx, best)
    pick = tl.where(take, c, pick)
    bsc = tl.where(take | (c == 0), sc, bsc)
    return best, pick, bsc


# IQ1_S's search: x_p = {-1 + 1/8, 1/8, 1 + 1/8}, x_m = {-1 - 1/8, -1/8, 1 - 1/8}; candidates
# (i1, i2) then x_p, x_m (index 2*pair + shift)
@triton.jit
def iq1_s_kernel(
    wxt, wt, px, pw, pick_out, scale_out, B, N: tl.constexpr, BLOCK: tl.constexpr
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    sx = tl.zeros([BLOCK], tl.float32)
    sw = tl.zeros([BLOCK], tl.float32)
    sx0 = sx
    sw0 = sw
    tl.store(px + offs, sx, mask=m)
    tl.store(pw + offs, sw, mask=m)
    for j in range(N):
        sx = sx + tl.load(wxt + j * B + offs, mask=m, other=0.0)
        sw = sw + tl.load(wt + j * B + offs, mask=m, other=0.0)
        tl.store(px + (j + 1) * B + offs, sx, mask=m)
        tl.store(pw + (j + 1) * B + offs, sw, mask=m)
    sxn = sx
    swn = sw
    best = tl.full([BLOCK], -3.4028234663852886e38, tl.float32)
    pick = tl.full([BLOCK], -1, tl.int32)
    bsc = tl.zeros([BLOCK], tl.float32)
    c = 0
    for i1 in range(N + 1):
        sx1 = tl.load(px + i1 * B + offs, mask=m, other=0.0)
        sw1 = tl.load(pw + i1 * B + offs, mask=m, other=0.0)
        # the terms of level 0 (below i1), the same for every i2
        dx0 = sx1 - sx0
        dw0 = sw1 - sw0
        xp0 = dx0 * -0.875
        xm0 = dx0 * -1.125
        wp0 = (dw0 * -0.875) * -0.875
        wm0 = (dw0 * -1.125) * -1.125
        for i2 in range(i1, N + 1):
            sx2 = tl.load(px + i2 * B + offs, mask=m, other=0.0)
            sw2 = tl.load(pw + i2 * B + offs, mask=m, other=0.0)
            dx1 = sx2 - sx1
            dx2 = sxn - sx2
            dw1 = sw2 - sw1
            dw2 = swn - sw2
            # x_p
            qx = (xp0 + dx1 * 0.125) + dx2 * 1.125
            q2 = (wp0 + (dw1 * 0.125) * 0.125) + (dw2 * 1.125) * 1.125
            best, pick, bsc = record(qx, q2, c, best, pick, bsc)
            # x_m
            qx = (xm0 + dx1 * -0.125) + dx2 * 0.875
            q2 = (wm0 + (dw1 * -0.125) * -0.125) + (dw2 * 0.875) * 0.875
            best, pick, bsc = record(qx, q2, c + 1, best, pick, bsc)
            c += 2
    tl.store(pick_out + offs, pick, mask=m)
    tl.store(scale_out + offs, bsc, mask=m)


# IQ1_M's search: prefix sums per half of the block (the sorted value's original position
# below or above N/2); candidates (i1, i2) then the shifts of the two halves (p,p), (p,m),
# (m,p), (m,m) (index 4*pair + k)
@triton.jit
def iq1_m_kernel(
    wxt, wt, ordt, px, pw, pick_out, scale_out, B, N: tl.constexpr, BLOCK: tl.constexpr
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    H = (N + 1) * B  # px, pw: [2, N+1, B], the first half's sums then the second's
    sx0 = tl.zeros([BLOCK], tl.float32)
    sx1 = tl.zeros([BLOCK], tl.float32)
    sw0 = tl.zeros([BLOCK], tl.float32)
    sw1 = tl.zeros([BLOCK], tl.float32)
    tl.store(px + offs, sx0, mask=m)
    tl.store(px + H + offs, sx1, mask=m)
    tl.store(pw + offs, sw0, mask=m)
    tl.store(pw + H + offs, sw1, mask=m)
    for j in range(N):
        vx = tl.load(wxt + j * B + offs, mask=m, other=0.0)
        vw = tl.load(wt + j * B + offs, mask=m, other=0.0)
        second = tl.load(ordt + j * B + offs, mask=m, other=0) >= N // 2
        sx0 = sx0 + tl.where(second, 0.0, vx)
        sx1 = sx1 + tl.where(second, vx, 0.0)
        sw0 = sw0 + tl.where(second, 0.0, vw)
        sw1 = sw1 + tl.where(second, vw, 0.0)
        r = (j + 1) * B + offs
        tl.store(px + r, sx0, mask=m)
        tl.store(px + H + r, sx1, mask=m)
        tl.store(pw + r, sw0, mask=m)
        tl.store(pw + H + r, sw1, mask=m)
    # txs*p2, tws*p2*p2 (and m2) per half; p2 = 1 + 1/8, m2 = 1 - 1/8
    tp0 = sx0 * 1.125
    tm0 = sx0 * 0.875
    tp1 = sx1 * 1.125
    tm1 = sx1 * 0.875
    wp0 = (sw0 * 1.125) * 1.125
    wm0 = (sw0 * 0.875) * 0.875
    wp1 = (sw1 * 1.125) * 1.125
    wm1 = (sw1 * 0.875) * 0.875
    best = tl.full([BLOCK], -3.4028234663852886e38, tl.float32)
    pick = tl.full([BLOCK], -1, tl.int32)
    bsc = tl.zeros([BLOCK], tl.float32)
    c = 0
    for i1 in range(N + 1):
        ax0 = tl.load(px + i1 * B + offs, mask=m, other=0.0)
        ax1 = tl.load(px + H + i1 * B + offs, mask=m, other=0.0)
        aw0 = tl.load(pw + i1 * B + offs, mask=m, other=0.0)
        aw1 = tl.load(pw + H + i1 * B + offs, mask=m, other=0.0)
        # cp1 = p0^2 - p1^2 = 0.75, cp2 = p1^2 - p2^2 = -1.25; cm1 = 1.25, cm2 = -0.75
        ap0 = wp0 + aw0 * 0.75
        am0 = wm0 + aw0 * 1.25
        ap1 = wp1 + aw1 * 0.75
        am1 = wm1 + aw1 * 1.25
        for i2 in range(i1, N + 1):
            bx0 = tl.load(px + i2 * B + offs, mask=m, other=0.0)
            bx1 = tl.load(px + H + i2 * B + offs, mask=m, other=0.0)
            bw0 = tl.load(pw + i2 * B + offs, mask=m, other=0.0)
            bw1 = tl.load(pw + H + i2 * B + offs, mask=m, other=0.0)
            s0 = ax0 + bx0
            s1 = ax1 + bx1
            qp0 = tp0 - s0
            qm0 = tm0 - s0
            qp1 = tp1 - s1
            qm1 = tm1 - s1
            rp0 = ap0 + bw0 * -1.25
            rm0 = am0 + bw0 * -0.75
            rp1 = ap1 + bw1 * -1.25
            rm1 = am1 + bw1 * -0.75
            best, pick, bsc = record(qp0 + qp1, rp0 + rp1, c, best, pick, bsc)
            best, pick, bsc = record(qp0 + qm1, rp0 + rm1, c + 1, best, pick, bsc)
            best, pick, bsc = record(qm0 + qp1, rm0 + rp1, c + 2, best, pick, bsc)
            best, pick, bsc = record(qm0 + qm1, rm0 + rm1, c + 3, best, pick, bsc)
            c += 4
    tl.store(pick_out + offs, pick, mask=m)
    tl.store(scale_out + offs, bsc, mask=m)


# iq1_find_best_neighbour2: iq_lowbit.best_neighbours with the levels' values xx, for M groups
# of G values off the lattice; lvpack[j]: grid point j's levels, 2 bits each
@triton.jit
def iq1_neighbour_kernel(
    u, xt, wt, scale, xxt, nb_count, nb_start, nb_list, lvpack, tt, gi_out, M,
    G: tl.constexpr, NLEV: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    uu = tl.load(u + offs, mask=m, other=0)
    cnt = tl.load(nb_count + uu, mask=m, other=0)
    start = tl.load(nb_start + uu, mask=m, other=0)
    sc = tl.load(scale + offs, mask=m, other=0.0)
    # the terms w*(scale*q - x)^2 of every element and level ([G*NLEV, M], the lane's own)
    for i in range(G):
        xi = tl.load(xt + i * M + offs, mask=m, other=0.0)
        wi = tl.load(wt + i * M + offs, mask=m, other=0.0)
        for lv in range(NLEV):
            q = tl.load(xxt + lv * M + offs, mask=m, other=0.0)
            diff = sc * q - xi
            tl.store(tt + (i * NLEV + lv) * M + offs, (wi * diff) * diff, mask=m)
    # the first neighbour with d2 < best wins, from best = FLT_MAX; none: the first neighbour
    best = tl.full([BLOCK], 3.4028234663852886e38, tl.float32)
    gj = tl.load(nb_list + start, mask=m & (cnt > 0), other=0)
    kmax = tl.max(tl.where(m, cnt, 0))  # the program's longest list
    k = 0
    while k < kmax:
        ok = m & (k < cnt)
        j = tl.load(nb_list + start + k, mask=ok, other=0)
        pk = tl.load(lvpack + j, mask=ok, other=0)
        d2 = tl.load(tt + (pk & 3) * M + offs, mask=ok, other=0.0)
        for i in range(1, G):
            lv = (pk >> (2 * i)) & 3
            d2 = d2 + tl.load(tt + (i * NLEV + lv) * M + offs, mask=ok, other=0.0)
        take = ok & (d2 < best)
        best = tl.where(take, d2, best)
        gj = tl.where(take, j, gj)
        k += 1
    tl.store(gi_out + offs, gj, mask=m)
