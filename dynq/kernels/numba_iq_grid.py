"""The numba-compiled grid search behind :func:`dynq.kernels.compiled.iq_grid_search` (imported
only when it runs).

:func:`iq2_grid` / :func:`iq3_grid` are the whole trial search of ggml's IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS and IQ3_S quantizers (``quantize_row_iq2_*_impl`` / ``quantize_row_iq3_*_impl``),
block by block: every trial scale, the rounding to levels, the lattice lookup, the neighbour
search of the groups off the lattice, the sums and ggml's sequential choice of the trial, then
(optionally) the pass after the trials. It is the Triton kernel
:func:`dynq.kernels.triton_iq_grid.iq_grid_kernel` with one block per loop step instead of one
per lane; the specification is the torch path, :func:`dynq.kernels.iq_lowbit._search` (with
:func:`grid_round`, :func:`best_neighbours` and :func:`record_scan`) followed by
:func:`_requantize`.

Every float is a ``float32`` and every constant too (a Python float would make numba compute
in float64); numba compiles without fast-math (no fused multiply-add); every sum runs left to
right from ``0.f`` as the torch path's; ``error_model="numpy"``: a division by zero gives
inf/NaN as in C. ggml's ``nearest_int`` reads the bits of a float: an LLVM bitcast
(:func:`~dynq.kernels.numba_kernels.f32_bits`), never a trip through memory (an array store in
the hot loop would keep LLVM from holding the block in registers).
"""

# ruff: noqa: E741

import numpy as np
from numba import njit

from dynq.kernels.numba_kernels import f32_bits

MAGIC = np.float32(12582912.0)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
HALF = np.float32(0.5)
#: |v| up to here: ggml's nearest_int is round-half-even, done in registers
LIM = np.float32(4194304.0)
FLT_MAX = np.float32(3.4028234663852886e38)


@njit(inline="always")
def level(v, top):
    # MIN(MAX(nearest_int(v), 0), top) with ggml's nearest_int (the low 23 bits of
    # v + 1.5*2**23, minus 2**22; beyond 2**22 it wraps as the C does, NaN and inf give their
    # bits' value, as the torch path's)
    if v <= LIM and v >= -LIM:
        l = np.int32((v + MAGIC) - MAGIC)
    else:
        l = (f32_bits(v + MAGIC) & 0x7FFFFF) - 0x400000
    if l < 0:
        l = 0
    if l > top:
        l = top
    return l


@njit(inline="always")
def round_group(
    x, a, k, G, bits, top, nlev, tab, idv, sc, mp, nb_start, nb_count, nb_ent, nb_q, terms, pair
):
    # grid_round for group k of the block x [n] (a: the neighbour search's weights, waux):
    # l = clamp(nearest_int(0.5f*(id*x - 1)), 0, kMaxQ-1) per element, the packed levels
    # looked up on the lattice; a group off it takes its best neighbour as
    # iq2_find_best_neighbour / iq3_find_best_neighbour (best_neighbours): for each neighbour
    # in list order d2 = Σ w*(scale*q - x)² (left to right over the group), the first
    # d2 < best from best = FLT_MAX (NaN never), the first neighbour where none is.
    # Returns (grid index, off the lattice). `terms`, `pair`: scratch for the tables (tab).
    u = 0
    base = k * G
    for i in range(G):
        l = level((idv * x[base + i] - ONE) * HALF, top)
        u |= l << (bits * i)
    gi = mp[u]
    if gi >= 0:
        return gi, False
    lmask = (1 << bits) - 1
    st = nb_start[u]
    cnt = nb_count[u]
    best = FLT_MAX
    bj = nb_ent[st] & 1023
    if not tab:  # short lists (IQ3): each term computed where it is needed, q = 2l + 1 from
        # nb_q [entries, G] (float32)
        bp = st
        for p in range(st, st + cnt):
            d = sc * nb_q[p, 0] - x[base]
            d2 = (a[base] * d) * d
            for i in range(1, G):
                d = sc * nb_q[p, i] - x[base + i]
                d2 += (a[base + i] * d) * d
            if d2 < best:
                best = d2
                bp = p
        return nb_ent[bp] & 1023, True
    # long lists (IQ2): each term w*(scale*q - x)² depends only on the element and its level:
    # tabulated once (row i of the table at i << bits: an entry's packed levels index it)
    for i in range(G):
        xi = x[base + i]
        wi = a[base + i]
        for l in range(nlev):
            d = sc * np.float32(2 * l + 1) - xi
            terms[(i << bits) + l] = (wi * d) * d
    # the first sum of each distance, t0[l0] + t1[l1], tabulated too (at l0 | l1 << bits)
    for l1 in range(nlev):
        for l0 in range(nlev):
            pair[l0 | (l1 << bits)] = terms[l0] + terms[(1 << bits) + l1]
    pmask = (1 << (2 * bits)) - 1
    for p in range(st, st + cnt):
        e = nb_ent[p]
        lv = e >> 10
        d2 = pair[lv & pmask]
        for i in range(2, G):
            d2 += terms[(i << bits) + ((lv >> (bits * i)) & lmask)]
        if d2 < best:
            best = d2
            bj = e & 1023
    return bj, True


@njit(inline="always")
def search(
    x, w, a, ids, scale0, L0, ongrid0, redo, G, bits, kmaxq, nlev, tab,
    mp, gridu, nb_start, nb_count, nb_ent, nb_q, scale_out, L_out, off_out,
):  # fmt: skip
    # The trial loop of _search then, for redo > 0, _requantize, for each block b of x [B, n]
    # (magnitudes), w (weights), a (the neighbour search's weights, waux); ids [B, T] the
    # trial inverse scales; scale0 [B], L0 [B, n] what is kept where no trial is taken.
    # Lattice tables (int32): mp (map), gridu (each grid point's packed levels
    # Σ l_i << bits*i), nb_start, nb_count, nb_ent (each neighbour-list entry j as
    # j | gridu[j] << 10), nb_q (float32 [entries, G]: each entry's q = 2l + 1). G levels of
    # `bits` bits per group, in [0, nlev); tab: the neighbour distances from a table of terms.
    #
    # Each trial t: id = ids[t], scale = 1/id; each group rounded (round_group); sumqx +=
    # (w*x)*q, sumq2 += (w*q)*q over the n values (q = 2l + 1); ggml's
    # if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { scale = sumqx/sumq2; best = scale*sumqx; }
    # from best = 0 (record_scan).
    #
    # redo (the pass after the trials, blocks with scale > 0): 0 none; 1 every block, every
    # group (IQ2_XXS); 2 blocks with a group off the lattice, those groups (IQ2_XS, IQ2_S,
    # IQ3_XXS); 3 blocks with a group off the lattice, every group (IQ3_S): rounded again at
    # id = 1/scale, then scale = sumqx/sumq2 where sumq2 > 0.
    #
    # Outputs: scale_out [B], L_out [B, n] levels, off_out [B]: bit k set where group k of the
    # trial taken was off the lattice (all or none by ongrid0 where none was taken).
    B, n = x.shape
    T = ids.shape[1]
    NG = n // G
    top = kmaxq - 1
    lmask = (1 << bits) - 1
    terms = np.empty(G << bits, np.float32)
    pair = np.empty(1 << (2 * bits), np.float32)
    cur = np.empty(NG, np.int32)
    bgi = np.empty(NG, np.int32)
    allff = (1 << NG) - 1
    xb = np.empty(n, np.float32)  # the block's x, w, waux and w*x
    wb = np.empty(n, np.float32)
    ab = np.empty(n, np.float32)
    wxb = np.empty(n, np.float32)
    for b in range(B):
        for j in range(n):
            xb[j] = x[b, j]
            wb[j] = w[b, j]
            ab[j] = a[b, j]
            wxb[j] = w[b, j] * x[b, j]
        best = ZERO
        bscale = ZERO
        boff = 0
        took = False
        for t in range(T):
            idv = ids[b, t]
            sc = ONE / idv
            sumqx = ZERO
            sumq2 = ZERO
            offm = 0
            for k in range(NG):
                gi, off = round_group(
                    xb, ab, k, G, bits, top, nlev, tab, idv, sc, mp, nb_start, nb_count, nb_ent,
                    nb_q, terms, pair,
                )  # fmt: skip
                cur[k] = gi
                if off:
                    offm |= 1 << k
                gu = gridu[gi]
                for i in range(G):
                    q = np.float32(2 * ((gu >> (bits * i)) & lmask) + 1)
                    sumqx += wxb[k * G + i] * q
                    sumq2 += (wb[k * G + i] * q) * q
            this_scale = sumqx / sumq2
            if sumq2 > ZERO and sumqx * sumqx > best * sumq2:
                best = this_scale * sumqx
                bscale = this_scale
                for k in range(NG):
                    bgi[k] = cur[k]
                boff = offm
                took = True
        if took:
            scale = bscale
        else:
            scale = scale0[b]
            if not ongrid0:
                boff = allff
        off_out[b] = boff
        # the levels of the trial taken (L0 where none was)
        if took:
            for k in range(NG):
                gu = gridu[bgi[k]]
                for i in range(G):
                    L_out[b, k * G + i] = (gu >> (bits * i)) & lmask
        else:
            for j in range(n):
                L_out[b, j] = L0[b, j]
        # the pass after the trials
        if redo == 0 or not scale > ZERO:
            scale_out[b] = scale
            continue
        if redo > 1 and boff == 0:
            scale_out[b] = scale
            continue
        idr = ONE / scale
        sumqx = ZERO
        sumq2 = ZERO
        for k in range(NG):
            if redo != 2 or (boff >> k) & 1:
                gi, _ = round_group(
                    xb, ab, k, G, bits, top, nlev, tab, idr, scale, mp, nb_start, nb_count, nb_ent,
                    nb_q, terms, pair,
                )  # fmt: skip
                gu = gridu[gi]
                for i in range(G):
                    L_out[b, k * G + i] = (gu >> (bits * i)) & lmask
            for i in range(G):
                q = np.float32(2 * L_out[b, k * G + i] + 1)
                sumqx += wxb[k * G + i] * q
                sumq2 += (wb[k * G + i] * q) * q
        if sumq2 > ZERO:
            scale = sumqx / sumq2
        scale_out[b] = scale


@njit(nogil=True, cache=True, error_model="numpy")
def iq2_grid(
    x, w, a, ids, scale0, L0, ongrid0, redo,
    mp, gridu, nb_start, nb_count, nb_ent, nb_q, scale_out, L_out, off_out,
):  # fmt: skip
    # search() for the IQ2 lattices (groups of 8 levels in 0..2, 2 bits each; long neighbour
    # lists: a table of terms): constants LLVM unrolls the group loops over
    search(
        x, w, a, ids, scale0, L0, ongrid0, redo, 8, 2, 3, 3, True, mp, gridu, nb_start, nb_count,
        nb_ent, nb_q, scale_out, L_out, off_out,
    )  # fmt: skip


@njit(nogil=True, cache=True, error_model="numpy")
def iq3_grid(
    x, w, a, ids, scale0, L0, ongrid0, redo,
    mp, gridu, nb_start, nb_count, nb_ent, nb_q, scale_out, L_out, off_out,
):  # fmt: skip
    # search() for the IQ3 lattices (groups of 4 levels in 0..7, 3 bits each; short neighbour
    # lists: the terms computed directly)
    search(
        x, w, a, ids, scale0, L0, ongrid0, redo, 4, 3, 8, 8, False, mp, gridu, nb_start, nb_count,
        nb_ent, nb_q, scale_out, L_out, off_out,
    )  # fmt: skip
