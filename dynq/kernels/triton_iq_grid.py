"""The Triton kernel behind :func:`dynq.kernels.fused.iq_grid_search` (imported only when it runs).

:func:`iq_grid_kernel` is the whole trial search of ggml's IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and
IQ3_S quantizers (``quantize_row_iq2_*_impl`` / ``quantize_row_iq3_*_impl``) for ``BLOCK``
blocks at once, one block per lane: every trial scale, the rounding to levels, the lattice
lookup, the neighbour search of the groups off the lattice, the sums and ggml's sequential
choice of the trial, then (optionally) the pass after the trials. The torch version, which is
the specification, is :func:`dynq.kernels.iq_lowbit._search` (with :func:`grid_round`,
:func:`best_neighbours` and :func:`record_scan`) followed by :func:`_requantize`.

Launch with ``enable_fp_fusion=False``; every division is ``div_rn`` and every sum runs left to
right, as in :mod:`dynq.kernels.triton_kernels`.
"""

# ruff: noqa: E741

import triton
import triton.language as tl

from dynq.kernels.triton_kernels import nearest_int

FLT_MAX = tl.constexpr(3.4028234663852886e38)


@triton.jit
def round_group(
    xt, at, offs, m, need, B, k, idv, sc, map_, nb_start, nb_count, nb_ent,
    G: tl.constexpr, KMAXQ: tl.constexpr, BITS: tl.constexpr, NBC: tl.constexpr,
):  # fmt: skip
    """:func:`grid_round` for group ``k`` of each lane: its grid index (int32) and whether it
    was off the lattice.

    Lanes ``need`` search the neighbours of a group off the lattice as
    :func:`best_neighbours` does: for each neighbour in list order ``d2 = Σ w*(sc*q - x)²``
    (left to right over the group), the first smallest below FLT_MAX wins (NaN never); where
    none does, the first neighbour. The list is walked ``NBC`` neighbours at a time (a
    ``[BLOCK, NBC]`` tile): the first smallest of a chunk, taken where it is smaller than the
    best before it, is the sequential scan's answer. ``nb_ent`` packs each list entry as
    ``j | levels(j) << 10`` (grid index, packed levels).
    """
    LMASK: tl.constexpr = (1 << BITS) - 1
    u = tl.zeros_like(offs).to(tl.int32)
    for i in range(G):
        x = tl.load(xt + (k * G + i) * B + offs, mask=m, other=0.0)
        l = nearest_int((idv * x - 1.0) * 0.5)
        l = tl.minimum(tl.maximum(l, 0), KMAXQ - 1)
        u = u | (l << (BITS * i))
    gi = tl.load(map_ + u, mask=m, other=0)
    off = gi < 0
    look = need & off
    cnt = tl.load(nb_count + u, mask=look, other=0)
    st = tl.load(nb_start + u, mask=look, other=0)
    # the chunk loop works on [BLOCK, NBC] tiles only (the lanes' values broadcast along the
    # chunk, the running best kept in every column): no layout conversions inside it
    cols = tl.arange(0, NBC)[None, :]
    shape2: tl.constexpr = (idv.shape[0], NBC)
    offs2 = tl.broadcast_to(offs[:, None], shape2)
    cnt2 = tl.broadcast_to(cnt[:, None], shape2)
    st2 = tl.broadcast_to(st[:, None], shape2)
    sc2 = tl.broadcast_to(sc[:, None], shape2)
    look2 = cnt2 > 0
    best_e = tl.load(nb_ent + st2, mask=look2, other=0)
    best = tl.full(shape2, FLT_MAX, tl.float32)
    nmax = tl.max(cnt)
    p = 0
    while p < nmax:  # (a while loop: the interpreter cannot range() over a reduction)
        pc = p + cols
        valid = pc < cnt2
        ent = tl.load(nb_ent + st2 + pc, mask=valid, other=0)
        uj = ent >> 10
        x = tl.load(xt + (k * G) * B + offs2, mask=look2, other=0.0)
        w = tl.load(at + (k * G) * B + offs2, mask=look2, other=0.0)
        q = (2 * (uj & LMASK) + 1).to(tl.float32)
        diff = sc2 * q - x
        d2 = (w * diff) * diff
        for i in range(1, G):
            x = tl.load(xt + (k * G + i) * B + offs2, mask=look2, other=0.0)
            w = tl.load(at + (k * G + i) * B + offs2, mask=look2, other=0.0)
            q = (2 * ((uj >> (BITS * i)) & LMASK) + 1).to(tl.float32)
            diff = sc2 * q - x
            d2 = d2 + (w * diff) * diff
        d2 = tl.where(valid & (d2 < FLT_MAX), d2, float("inf"))
        cmin = tl.min(d2, axis=1)[:, None]
        first = tl.min(tl.where(d2 == cmin, cols, NBC), axis=1)[:, None]
        pick = tl.sum(tl.where(cols == first, ent, 0), axis=1)[:, None]
        take = cmin < best
        best = tl.where(take, cmin, best)
        best_e = tl.where(take, pick, best_e)
        p += NBC
    best_j = tl.max(best_e, axis=1) & 1023  # (every column holds the same)
    gi = tl.where(look, best_j, gi)
    return gi, off


@triton.jit
def iq_grid_kernel(
    xt, wt, at, idt, scale0, L0t, map_, gridu, nb_start, nb_count, nb_ent,
    scale_out, L_out, off_out, B,
    T: tl.constexpr, N: tl.constexpr, G: tl.constexpr, KMAXQ: tl.constexpr, BITS: tl.constexpr,
    ONGRID0: tl.constexpr, REDO: tl.constexpr, NBC: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The trial loop of :func:`_search` then, for ``REDO`` > 0, :func:`_requantize`.

    Inputs transposed, ``[n, B]``: ``xt`` the magnitudes, ``wt`` the weights, ``at`` the
    neighbour-search weights (``waux``), ``L0t`` the levels kept where no trial is taken;
    ``idt`` ``[T, B]`` the trial inverse scales; ``scale0`` ``[B]``. Lattice tables (int32):
    ``map_``, ``gridu`` (each grid point's packed levels ``Σ l_i << BITS*i``), ``nb_start``,
    ``nb_count``, ``nb_ent`` (see :func:`round_group`).

    For each trial ``t`` (in order): ``id = idt[t]``, ``scale = 1/id``; each group of ``G``
    levels is rounded and looked up (:func:`round_group`); ``sumqx += (w*x)*q``,
    ``sumq2 += (w*q)*q`` over the ``N`` values left to right (``q = 2l + 1``); ggml's
    ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { scale = sumqx/sumq2; best = scale*sumqx; }``
    from ``best = 0`` (:func:`record_scan`). The grid indices of the trial taken are kept
    packed, 16 bits per group, in two int64 words; its off-lattice groups as a bit mask.

    ``REDO`` (the pass after the trials, for blocks with ``scale > 0``): 0 none; 1 every
    block, every group (IQ2_XXS); 2 blocks with a group off the lattice, those groups
    (IQ2_XS, IQ2_S, IQ3_XXS); 3 blocks with a group off the lattice, every group (IQ3_S).
    Those groups are rounded again at ``id = 1/scale``; then ``scale = sumqx/sumq2`` where
    ``sumq2 > 0``.

    Outputs: ``scale_out`` ``[B]``, ``L_out`` ``[N, B]`` int32 levels, ``off_out`` ``[B]``
    int32: bit ``k`` set where group ``k`` of the trial taken was off the lattice (all or
    none by ``ONGRID0`` where no trial was taken).
    """
    NG: tl.constexpr = N // G
    LMASK: tl.constexpr = (1 << BITS) - 1
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < B
    zero = tl.zeros([BLOCK], tl.float32)
    best = zero
    bscale = zero
    bpk0 = tl.zeros([BLOCK], tl.int64)
    bpk1 = tl.zeros([BLOCK], tl.int64)
    boff = tl.zeros([BLOCK], tl.int32)
    took = offs < 0
    for t in range(T):
        idv = tl.load(idt + t * B + offs, mask=m, other=1.0)
        sc = tl.math.div_rn(zero + 1.0, idv)
        sumqx = zero
        sumq2 = zero
        pk0 = tl.zeros([BLOCK], tl.int64)
        pk1 = tl.zeros([BLOCK], tl.int64)
        offm = tl.zeros([BLOCK], tl.int32)
        for k in range(NG):
            gi, off = round_group(
                xt, at, offs, m, m, B, k, idv, sc, map_, nb_start, nb_count, nb_ent,
                G, KMAXQ, BITS, NBC,
            )  # fmt: skip
            offm = offm | (off.to(tl.int32) << k)
            v = gi.to(tl.int64) << ((k % 4) * 16)
            pk0 = tl.where(k < 4, pk0 | v, pk0)
            pk1 = tl.where(k < 4, pk1, pk1 | v)
            gu = tl.load(gridu + gi)
            for i in range(G):
                x = tl.load(xt + (k * G + i) * B + offs, mask=m, other=0.0)
                w = tl.load(wt + (k * G + i) * B + offs, mask=m, other=0.0)
                q = (2 * ((gu >> (BITS * i)) & LMASK) + 1).to(tl.float32)
                sumqx = sumqx + (w * x) * q
                sumq2 = sumq2 + (w * q) * q
        this_scale = tl.math.div_rn(sumqx, sumq2)
        take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        best = tl.where(take, this_scale * sumqx, best)
        bscale = tl.where(take, this_scale, bscale)
        bpk0 = tl.where(take, pk0, bpk0)
        bpk1 = tl.where(take, pk1, bpk1)
        boff = tl.where(take, offm, boff)
        took = took | take
    scale = tl.where(took, bscale, tl.load(scale0 + offs, mask=m, other=0.0))
    if not ONGRID0:
        boff = tl.where(took, boff, (1 << NG) - 1)
    tl.store(off_out + offs, boff, mask=m)
    # the pass after the trials (or, REDO 0, the levels of the trial taken)
    if REDO == 1:
        redo = m & (scale > 0)
    elif REDO > 1:
        redo = m & (boff != 0) & (scale > 0)
    else:
        redo = offs < 0
    idr = tl.math.div_rn(zero + 1.0, scale)
    sumqx = zero
    sumq2 = zero
    for k in range(NG):
        gi = (tl.where(k < 4, bpk0, bpk1) >> ((k % 4) * 16)).to(tl.int32) & 0xFFFF
        if REDO > 0:
            if REDO == 2:
                rg = redo & (((boff >> k) & 1) != 0)
            else:
                rg = redo
            gnew, _ = round_group(
                xt, at, offs, m, rg, B, k, idr, scale, map_, nb_start, nb_count, nb_ent,
                G, KMAXQ, BITS, NBC,
            )  # fmt: skip
            gi = tl.where(rg, gnew, gi)
            fromgrid = took | rg
        else:
            fromgrid = took
        gu = tl.load(gridu + gi)
        for i in range(G):
            e = (k * G + i) * B + offs
            lg = (gu >> (BITS * i)) & LMASK
            l = tl.where(fromgrid, lg, tl.load(L0t + e, mask=m, other=0))
            tl.store(L_out + e, l, mask=m)
            if REDO > 0:
                x = tl.load(xt + e, mask=m, other=0.0)
                w = tl.load(wt + e, mask=m, other=0.0)
                q = (2 * l + 1).to(tl.float32)
                sumqx = sumqx + (w * x) * q
                sumq2 = sumq2 + (w * q) * q
    if REDO > 0:
        scale = tl.where(redo & (sumq2 > 0), tl.math.div_rn(sumqx, sumq2), scale)
    tl.store(scale_out + offs, scale, mask=m)
