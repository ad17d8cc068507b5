"""The Triton kernels behind :mod:`dynq.kernels.fused` (imported only when they run).

Each ``*_kernel`` is one of ggml's searches for ``BLOCK`` groups at once, one group per lane;
the C it follows is named in :mod:`dynq.kernels.search`, which holds the torch version of each.
Launch with ``enable_fp_fusion=False``.
"""

# ruff: noqa: E741

import triton
import triton.language as tl


@triton.jit
def nearest_int(v):
    # ggml's nearest_int: the low 23 bits of v + 1.5*2**23, minus 2**22 (int32)
    return ((v + 12582912.0).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000


@triton.jit
def levels(iscale, x, mn, NMAX: tl.constexpr):
    # MAX(0, MIN(nmax, nearest_int(iscale*(x - min)))) as float; clamping first is the
    # same for integer bounds and keeps nearest_int's argument in its exact range
    v = (x - mn) * iscale
    v = tl.minimum(tl.maximum(v, 0.0), NMAX * 1.0)
    return nearest_int(v).to(tl.float32)


@triton.jit
def finite_or_zero(v):
    return tl.where(tl.abs(v) < float("inf"), v, 0.0)


# make_qkx2_quants / make_qkx3_quants: search.make_qkx_quants (cand: rmin + rdelta*is + nmax)
@triton.jit
def qkx_kernel(
    xt, wt, cand, scale_out, min_out, L_out, B,
    NCAND: tl.constexpr, N: tl.constexpr, NMAX: tl.constexpr, USE_MAD: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    x0 = tl.load(xt + offs, mask=m, other=0.0)
    w0 = tl.load(wt + offs, mask=m, other=0.0)
    mn = x0
    mx = x0
    sum_w = w0
    sum_x = w0 * x0
    for j in range(1, N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
        mn = tl.where(xj < mn, xj, mn)
        mx = tl.where(xj > mx, xj, mx)
        sum_w = sum_w + wj
        sum_x = sum_x + wj * xj
    mn = tl.where(mn > 0, 0.0, mn)
    mn0 = mn
    flat = mx <= mn
    iscale = tl.math.div_rn(tl.full([BLOCK], NMAX, tl.float32), mx - mn)
    scale = tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32), iscale)
    best_is = finite_or_zero(iscale)
    best = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
        la = levels(best_is, xj, mn, NMAX)
        diff = scale * la + mn - xj
        diff = tl.abs(diff) if USE_MAD else diff * diff
        best = best + diff * wj
    best_mn = mn
    for c in range(NCAND):
        ci = tl.load(cand + c)
        isc = finite_or_zero(tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32) * ci, mx - mn))
        sum_l = tl.zeros([BLOCK], tl.float32)
        sum_l2 = tl.zeros([BLOCK], tl.float32)
        sum_xl = tl.zeros([BLOCK], tl.float32)
        for j in range(N):
            xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
            wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
            la = levels(isc, xj, mn, NMAX)
            wl = wj * la
            sum_l = sum_l + wl
            sum_l2 = sum_l2 + wl * la
            sum_xl = sum_xl + wl * xj
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = tl.math.div_rn(sum_w * sum_xl - sum_x * sum_l, D)
        this_min = tl.math.div_rn(sum_l2 * sum_x - sum_l * sum_xl, D)
        pos = this_min > 0
        this_min = tl.where(pos, 0.0, this_min)
        this_scale = tl.where(pos, tl.math.div_rn(sum_xl, sum_l2), this_scale)
        err = tl.zeros([BLOCK], tl.float32)
        for j in range(N):
            xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
            wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
            la = levels(isc, xj, mn, NMAX)
            diff = la * this_scale + this_min - xj
            diff = tl.abs(diff) if USE_MAD else diff * diff
            err = err + diff * wj
        take = (D > 0) & (err < best)
        best_is = tl.where(take, isc, best_is)
        best_mn = tl.where(take, mn, best_mn)
        best = tl.where(take, err, best)
        scale = tl.where(take, this_scale, scale)
        mn = tl.where(take, this_min, mn)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        la = levels(best_is, xj, best_mn, NMAX).to(tl.int32)
        tl.store(L_out + j * B + offs, tl.where(flat, 0, la), mask=m)
    scale = tl.where(flat, 0.0, scale)
    mn = tl.where(flat, mn0, mn)
    tl.store(scale_out + offs, scale, mask=m)
    tl.store(min_out + offs, mn, mask=m)  # negated by the caller: Triton's -x is 0 - x


@triton.jit
def qx_sums(xt, wt, offs, m, B, iscale, N: tl.constexpr, NMAX: tl.constexpr, HAS_W: tl.constexpr):
    sumlx = tl.zeros_like(iscale)
    suml2 = tl.zeros_like(iscale)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        if HAS_W:
            wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
        else:
            wj = xj * xj
        lq = nearest_int(iscale * xj)
        l = tl.minimum(tl.maximum(lq, -NMAX), NMAX - 1).to(tl.float32)
        sumlx = sumlx + (wj * xj) * l
        suml2 = suml2 + (wj * l) * l
    return sumlx, suml2


@triton.jit
def first_abs_max(xt, offs, m, B, N: tl.constexpr, BLOCK: tl.constexpr):
    amax = tl.zeros([BLOCK], tl.float32)
    mx = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        ax = tl.abs(xj)
        upd = ax > amax
        amax = tl.where(upd, ax, amax)
        mx = tl.where(upd, xj, mx)
    return amax, mx


# make_qx_quants(rmse_type=1): search.make_qx_quants (cand: nmax, then nmax + 0.1f*is)
@triton.jit
def qx_kernel(
    xt, wt, cand, scale_out, L_out, B,
    NCAND: tl.constexpr, N: tl.constexpr, NMAX: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    amax, mx = first_abs_max(xt, offs, m, B, N, BLOCK)
    zero = amax < 1e-15
    mx = tl.where(zero, 1.0, mx)
    c0 = tl.load(cand)
    iscale = tl.math.div_rn(tl.zeros([BLOCK], tl.float32) - c0, mx)
    sumlx, suml2 = qx_sums(xt, wt, offs, m, B, iscale, N, NMAX, HAS_W)
    scale = tl.where(suml2 != 0, tl.math.div_rn(sumlx, suml2), 0.0)
    best = scale * sumlx
    best_is = iscale
    for c in range(1, NCAND):
        ci = tl.load(cand + c)
        isc = tl.math.div_rn(tl.zeros([BLOCK], tl.float32) - ci, mx)
        sumlx, suml2 = qx_sums(xt, wt, offs, m, B, isc, N, NMAX, HAS_W)
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        scale = tl.where(take, tl.math.div_rn(sumlx, suml2), scale)
        best = tl.where(take, scale * sumlx, best)
        best_is = tl.where(take, isc, best_is)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        lq = nearest_int(best_is * xj)
        l = tl.minimum(tl.maximum(lq, -NMAX), NMAX - 1) + NMAX
        tl.store(L_out + j * B + offs, tl.where(zero, 0, l), mask=m)
    tl.store(scale_out + offs, tl.where(zero, 0.0, scale), mask=m)


@triton.jit
def descend(xt, wt, offs, m, B, L, sx, s2, LO: tl.constexpr, HI: tl.constexpr,
            N: tl.constexpr, QP: tl.constexpr, HAS_W: tl.constexpr):  # fmt: skip
    # make_q3_quants' (QP False, weights x*x) and make_qp_quants' (QP True) refinement; the
    # levels live in L ([N, B] int32 in global memory, each lane reading and writing its own
    # column with the same offsets, so the same thread does both: no barrier needed)
    for _ in range(5):
        for i in range(N):
            xi = tl.load(xt + i * B + offs, mask=m, other=0.0)
            if HAS_W:
                wi = tl.load(wt + i * B + offs, mask=m, other=0.0)
            else:
                wi = xi * xi
            wxi = wi * xi
            li = tl.load(L + i * B + offs, mask=m, other=0).to(tl.float32)
            slx = sx - wxi * li
            sl2 = s2 - (wi * li) * li
            if QP:
                ok = (slx > 0) & (sl2 > 0)
            else:
                ok = slx > 0
            new_i = nearest_int(tl.math.div_rn(xi * sl2, slx))
            new_i = tl.minimum(new_i, HI)
            if not QP:
                new_i = tl.maximum(new_i, LO)
            new_l = new_i.to(tl.float32)
            ok = ok & (new_l != li)
            slx = slx + wxi * new_l
            sl2 = sl2 + (wi * new_l) * new_l
            if not QP:
                ok = ok & (sl2 > 0)
            ok = ok & ((slx * slx) * s2 > (sx * sx) * sl2)
            if QP:
                stored = new_i & 0xFF  # make_qp_quants' L[] is uint8_t
            else:
                stored = new_i
            tl.store(L + i * B + offs, stored, mask=m & ok)
            sx = tl.where(ok, slx, sx)
            s2 = tl.where(ok, sl2, s2)
    return sx, s2


# make_qp_quants: search.make_qp_quants (cand: 0.1f*is + nmax)
@triton.jit
def qp_kernel(
    xt, wt, cand, scale_out, L_out, B,
    NCAND: tl.constexpr, N: tl.constexpr, NMAX: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    mx = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        mx = tl.maximum(mx, xj)
    zero = mx < 1e-15
    iscale0 = tl.math.div_rn(tl.full([BLOCK], NMAX, tl.float32), mx)
    scale0 = tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32), iscale0)
    best = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
        l0 = (nearest_int(iscale0 * xj) & 0xFF).to(tl.float32)
        diff = xj - scale0 * l0
        best = best + (wj * diff) * diff
    best_is = iscale0
    for c in range(NCAND):
        ci = tl.load(cand + c)
        isc = tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32) * ci, mx)
        sc = tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32), isc)
        mse = tl.zeros([BLOCK], tl.float32)
        for j in range(N):
            xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
            wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
            l = tl.minimum(nearest_int(isc * xj), NMAX).to(tl.float32)
            diff = xj - sc * l
            mse = mse + (wj * diff) * diff
        take = mse < best
        best = tl.where(take, mse, best)
        best_is = tl.where(take, isc, best_is)
    sumlx = tl.zeros([BLOCK], tl.float32)
    suml2 = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        wj = tl.load(wt + j * B + offs, mask=m, other=0.0)
        li = tl.minimum(nearest_int(best_is * xj), NMAX)
        lf = li.to(tl.float32)
        sumlx = sumlx + (wj * xj) * lf
        suml2 = suml2 + (wj * lf) * lf
        tl.store(L_out + j * B + offs, li & 0xFF, mask=m)
    sumlx, suml2 = descend(xt, wt, offs, m, B, L_out, sumlx, suml2, 0, NMAX, N, True, True)
    scale = tl.where(suml2 > 0, tl.math.div_rn(sumlx, suml2), 0.0)
    tl.store(scale_out + offs, tl.where(zero, 0.0, scale), mask=m)
    for j in range(N):
        tl.store(L_out + j * B + offs, 0, mask=m & zero)


# make_q3_quants(do_rmse=true): search.make_q3_quants
@triton.jit
def q3_kernel(xt, scale_out, L_out, B, N: tl.constexpr, NMAX: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    amax, mx = first_abs_max(xt, offs, m, B, N, BLOCK)
    zero = amax < 1e-15
    iscale = tl.math.div_rn(tl.full([BLOCK], -NMAX, tl.float32), mx)
    sumlx = tl.zeros([BLOCK], tl.float32)
    suml2 = tl.zeros([BLOCK], tl.float32)
    for j in range(N):
        xj = tl.load(xt + j * B + offs, mask=m, other=0.0)
        wj = xj * xj
        li = tl.minimum(tl.maximum(nearest_int(iscale * xj), -NMAX), NMAX - 1)
        lf = li.to(tl.float32)
        sumlx = sumlx + (wj * xj) * lf
        suml2 = suml2 + (wj * lf) * lf
        tl.store(L_out + j * B + offs, li, mask=m)
    sumlx, suml2 = descend(
        xt, xt, offs, m, B, L_out, sumlx, suml2, -NMAX, NMAX - 1, N, False, False
    )
    scale = tl.where(suml2 > 0, tl.math.div_rn(sumlx, suml2), 0.0)
    tl.store(scale_out + offs, tl.where(zero, 0.0, scale), mask=m)
    for j in range(N):
        lj = tl.load(L_out + j * B + offs, mask=m, other=0) + NMAX
        tl.store(L_out + j * B + offs, tl.where(zero, 0, lj), mask=m)


# base.seq_sum: t [N, M] summed over N, left to right
@triton.jit
def seq_sum_kernel(t, out, M, N: tl.constexpr, FIRST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    if FIRST:
        s = tl.load(t + offs, mask=m, other=0.0)
    else:
        s = tl.zeros([BLOCK], tl.float32)
        s = s + tl.load(t + offs, mask=m, other=0.0)
    for j in range(1, N):
        s = s + tl.load(t + j * M + offs, mask=m, other=0.0)
    tl.store(out + offs, s, mask=m)
