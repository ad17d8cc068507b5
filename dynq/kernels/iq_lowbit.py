"""The 1–3 bit i-quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.

Each kernel is ggml's ``quantize_row_iq*_impl`` (ggml-quants.c) vectorised over blocks, with the
float32 operations in ggml's order (see :mod:`dynq.kernels.base`):

* IQ2_*/IQ3_*: per block of 16 or 32 magnitudes (signs stored apart), a few dozen trial
  scales; at each, the magnitudes are rounded to lattice levels group by group (8 or 4 values);
  a group that lands off the lattice takes its best neighbour from the lattice's neighbour list
  (:mod:`dynq.kernels.iq_grids`). The trials all run at once (an extra tensor dimension), the
  neighbour searches as one flat batch of (group, candidate) pairs;
* IQ1_S/IQ1_M: the exhaustive search over the two split points of the sorted block (ternary
  values shifted by ±1/8), then the same neighbour search for groups off the lattice.

ggml's "first strictly better candidate wins" scans, whose comparison ``a*a > best*b`` is not a
plain order, are replayed exactly by :func:`record_scan`.

ggml refuses to quantize IQ2_XXS, IQ2_XS and IQ1_S without an importance matrix
(``ggml_quantize_requires_imatrix``); so do these kernels (KernelError). The others use ggml's
own fallback weights without one.

Where ggml aborts (a group whose every neighbour scores NaN or infinity: weights that overflow,
or a negative importance), these kernels take the first neighbour instead. Dequantization is
gguf-py's ``dequantize``, bit for bit.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dynq.errors import KernelError
from dynq.kernels import base, compiled, fused
from dynq.kernels.base import (
    F32,
    I32,
    U8,
    BlockKernel,
    bits_to_bytes,
    bytes_to_bits,
    divc,
    fp16_bytes,
    fp16_from_bytes,
    nearest_int,
    seq_sum,
    sqrtf,
)
from dynq.kernels.iq_grids import KSIGNS, Lattice, lattice
from dynq.kernels.search import f32, make_qp_quants

__all__ = ["IQ1_M", "IQ1_S", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ3_S", "IQ3_XXS", "record_scan"]

QK_K = 256
I64 = torch.int64
FLT_MAX = 3.4028234663852886e38

GROUP_MAX_EPS = 1e-15
GROUP_MAX_EPS_IQ3_XXS = 1e-8
GROUP_MAX_EPS_IQ2_S = 1e-8
GROUP_MAX_EPS_IQ1_M = 1e-7
GROUP_MAX_EPS_IQ1_S = 1e-12
IQ1_DELTA = 0.125


# ----------------------------------------------------------------------------------------------
# shared pieces


def record_scan(num: Tensor, den: Tensor, val: Tensor, best: Tensor) -> tuple[Tensor, Tensor]:
    """ggml's ``if (den > 0 && num > best*den) { best = val; pick = c; }`` over candidates ``c``.

    ``num``, ``den``, ``val``: ``[B, C]`` in candidate order; ``best``: ``[B]`` the initial
    best. Returns ``(pick [B] int64, -1 where nothing was taken; best [B])``.

    The scan is guessed in one pass: the candidates taken are the strict running maxima of
    ``val``, each compared against the best before it. Up to the first candidate where ggml's
    own test (``num > best*den`` with the guessed best) disagrees with the guess, the guess is
    exact (by induction over the candidates: the sequential scan makes the same decisions from
    the same state). At that candidate ggml's test decides; the guess restarts after it. Blocks
    whose guess holds to the end are done; rounding rarely makes more than a round or two.
    Blocks still unresolved after a few rounds (ties everywhere: constant blocks) finish with
    the plain sequential loop.
    """
    b, c = num.shape
    dev = num.device
    ok = den > 0
    pick = torch.full((b,), -1, dtype=I64, device=dev)
    best = best.clone()
    start = torch.zeros(b, dtype=I64, device=dev)
    rows = torch.arange(b, device=dev)
    if c <= _LOOP_MAX:  # a few dozen candidates (the trial scales): the loop is cheaper
        _record_loop(num, den, val, ok, rows, start, pick, best)
        return pick, best
    v = torch.where(ok & ~torch.isnan(val), val, torch.full_like(val, float("-inf")))
    ar1 = torch.arange(1, c + 1, device=dev, dtype=I32).view(1, -1)  # candidate index + 1
    rounds = 0
    while rows.numel():
        if rounds == _GUESS_ROUNDS:
            _record_loop(num, den, val, ok, rows, start, pick, best)
            break
        everything = rounds == 0
        rounds += 1
        if everything:
            vr, nr, dr, okr, br = v, num, den, ok, best
            live = None
        else:
            st = start[rows].view(-1, 1)
            live = ar1 > st
            vr = v[rows].masked_fill_(~live, float("-inf"))
            nr, dr, okr, br = num[rows], den[rows], ok[rows], best[rows]
        # the best before each candidate under the guess: the running max of val before it
        before = _running_max_before(vr)
        torch.maximum(before, br.view(-1, 1), out=before)
        guess = vr > before
        taken = okr & (nr > before * dr)
        if live is not None:
            taken &= live
        bad = guess != taken
        anybad = bad.any(dim=1)
        end = torch.where(anybad, bad.to(U8).argmax(dim=1), c)
        # decisions before `end` are the guess's; at `end` (if any) ggml's test decides
        upto = ar1 <= end.view(-1, 1)
        last = ((guess & upto).to(I32) * ar1).max(dim=1).values.to(I64) - 1
        e = end.clamp(max=c - 1).view(-1, 1)
        take_e = anybad & torch.gather(taken, 1, e).squeeze(1)
        last = torch.where(take_e, end, last)
        got = last >= 0
        pr = torch.where(got, last, pick if everything else pick[rows])
        bnew = torch.where(got, torch.gather(vr, 1, last.clamp(min=0).view(-1, 1)).squeeze(1), br)
        if everything:
            pick, best, start = pr, bnew, end + 1
        else:
            pick[rows] = pr
            best[rows] = bnew
            start[rows] = end + 1
        rows = rows[anybad]
    return pick, best


def _running_max_before(v: Tensor) -> Tensor:
    """``out[:, c] = max(v[:, :c])`` (``-inf`` for ``c = 0``), by doubling (max is exact)."""
    n, c = v.shape
    r = torch.empty((n, c), dtype=v.dtype, device=v.device)
    r[:, 0] = float("-inf")
    r[:, 1:] = v[:, :-1]
    other = torch.empty_like(r)
    s = 1
    while s < c:
        other[:, :s] = r[:, :s]
        torch.maximum(r[:, s:], r[:, :-s], out=other[:, s:])
        r, other = other, r
        s *= 2
    return r


_GUESS_ROUNDS = 16
_LOOP_MAX = 48


def _record_loop(
    num: Tensor,
    den: Tensor,
    val: Tensor,
    ok: Tensor,
    rows: Tensor,
    start: Tensor,
    pick: Tensor,
    best: Tensor,
) -> None:
    """The sequential scan for blocks ``rows`` from their candidates ``start`` on (in place)."""
    everything = rows.numel() == num.shape[0]
    st = start if everything else start[rows]
    c0 = int(st.min())
    if everything:
        nr, dr, vr, okr, bst, pk = num, den, val, ok, best.clone(), pick.clone()
    else:
        nr, dr, vr, okr = num[rows], den[rows], val[rows], ok[rows]
        bst, pk = best[rows], pick[rows]
    nt, dt, vt, okt = nr.t().contiguous(), dr.t().contiguous(), vr.t().contiguous(), okr.t()
    for c in range(c0, num.shape[1]):
        take = okt[c] & (nt[c] > bst * dt[c])
        if c0 != 0 or not everything:
            take &= st <= c
        bst = torch.where(take, vt[c], bst)
        pk = torch.where(take, c, pk)
    best[rows] = bst
    pick[rows] = pk


def _sigma2(x: Tensor, two: bool) -> Tensor:
    """``sumx2/QK_K`` or ``2*sumx2/QK_K`` for super-blocks ``x`` ``[S, 256]`` → ``[S, 1]``."""
    xt = x.t()
    s = seq_sum(xt * xt)
    if two:
        s = s * 2
    return divc(s, QK_K).unsqueeze(1)


def _imatrix_weights(x: Tensor, w: Tensor, sigma2: Tensor) -> Tensor:
    """``qw[i] * sqrtf(sigma2 + x[i]*x[i])``."""
    return w * sqrtf(sigma2 + x * x)


def _seq_dot(a: Tensor, b: Tensor) -> Tensor:
    """``s = 0; for (i) s += a[i]*b[i]`` over the last dim of ``[..., n]`` tensors."""
    p = a * b
    return seq_sum(p.movedim(-1, 0).contiguous())


def _group_sums(wx: Tensor, w: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """``sumqx += w*x*q; sumq2 += w*q*q`` over the last dim (``wx`` = ``w*x``)."""
    return _seq_dot(wx, q), _seq_dot(w * q, q)


def _signs(xb: Tensor, weight: Tensor, parity: bool) -> tuple[Tensor, Tensor]:
    """The sign handling of the IQ2/IQ3 quantizers, per group of 8.

    Returns ``(xval [B, n], signs [B, n/8] int32)``: the magnitudes, and the sign bits. With
    ``parity`` (IQ2_XXS, IQ2_XS, IQ3_XXS: only 7 sign bits are stored, the 8th makes the count
    even), a group with an odd number of negatives flips the sign of its least important
    element (smallest ``w*x*x``, the first of equals) and keeps 7 bits.
    """
    b, n = xb.shape
    pos = xb >= 0
    xval = torch.where(pos, xb, -xb)
    neg = (~pos).view(b, n // 8, 8)
    if parity:
        odd = (neg.sum(dim=2) % 2) == 1
        ax = ((weight * xb) * xb).view(b, n // 8, 8)
        imin = ax.argmin(dim=2, keepdim=True)
        ar = torch.arange(8, device=xb.device).view(1, 1, 8)
        flip = odd.unsqueeze(2) & (ar == imin)
        xval = torch.where(flip.view(b, n), -xval, xval)
        neg = neg ^ flip
    s = bits_to_bytes(neg.reshape(b, n).to(I32)).to(I32)  # [B, n/8]
    if parity:
        s = s & 127
    return xval, s


def _max0(t: Tensor) -> Tensor:
    """``max = t[0]; for (i) max = MAX(max, t[i])`` over the last dim."""
    return t.max(dim=-1).values


def _first_min_segments(d2: Tensor, seg: Tensor, m: int) -> Tensor:
    """For pairs ``d2`` ``[P]`` in segments ``seg`` (sorted, ``m`` segments): the position of
    the first pair with ``d2 < best`` scanning from ``best = FLT_MAX`` (-1: none)."""
    p = d2.shape[0]
    dev = d2.device
    inf = torch.tensor(float("inf"), dtype=F32, device=dev)
    d2 = torch.where(d2 < FLT_MAX, d2, inf)  # NaN and >= FLT_MAX are never taken
    mn = torch.full((m,), float("inf"), dtype=F32, device=dev)
    mn = mn.scatter_reduce(0, seg, d2, "amin", include_self=True)
    hit = (d2 == mn[seg]) & (d2 < inf)
    ar = torch.arange(p, device=dev)
    cand = torch.where(hit, ar, torch.full_like(ar, p))
    first = torch.full((m,), p, dtype=I64, device=dev)
    first = first.scatter_reduce(0, seg, cand, "amin", include_self=True)
    return torch.where(first < p, first, torch.full_like(first, -1))


def best_neighbours(
    tab: dict[str, Tensor],
    u: Tensor,
    xv: Tensor,
    wv: Tensor,
    scale: Tensor,
    xx: Tensor | None = None,
) -> Tensor:
    """``iq2_find_best_neighbour`` / ``iq3_find_best_neighbour`` (``xx`` None) and
    ``iq1_find_best_neighbour2`` (``xx`` ``[M, 3]``: the values of the levels) for ``M`` groups.

    ``u`` ``[M]``: the groups' packed level vectors (all off the lattice); ``xv``, ``wv``
    ``[M, g]``: values and weights; ``scale`` ``[M]``. For each neighbour in list order,
    ``d2 = Σ w*(scale*q - x)²`` summed left to right; the first smallest wins. Returns the grid
    indices ``[M]`` (int64). (Where every distance is infinite or NaN ggml aborts; the first
    neighbour is returned.)

    The (group, neighbour) pairs form one flat batch. Each term ``w*(scale*q - x)²`` depends
    only on the group, the element and the level, so the terms are tabulated per group
    (``[M, g, levels]``) and each pair's distance sums ``g`` entries of its group's table.
    """
    m, g = xv.shape
    dev = xv.device
    cnt = tab["nb_count32"].index_select(0, u)
    start = tab["nb_start32"].index_select(0, u)
    seg = torch.repeat_interleave(torch.arange(m, device=dev, dtype=I32), cnt)  # [P]
    first_of = torch.cumsum(cnt, 0, dtype=I32) - cnt
    k = torch.arange(seg.shape[0], device=dev, dtype=I32) - first_of.index_select(0, seg)
    pos = start.index_select(0, seg) + k  # [P]: positions in the neighbour lists
    j = tab["nb_list32"].index_select(0, pos)  # [P] grid indices
    nlev = tab["lvals"].shape[0]
    qv = tab["lvals"].view(1, 1, nlev) if xx is None else xx.view(m, 1, nlev)
    diff = scale.view(m, 1, 1) * qv - xv.view(m, g, 1)
    terms = ((wv.view(m, g, 1) * diff) * diff).reshape(-1)  # [M * g * nlev]
    base = seg * (g * nlev)
    toff = tab["nb_toff32"]  # [g, total]
    d2 = terms.index_select(0, toff[0].index_select(0, pos) + base)
    for i in range(1, g):
        d2.add_(terms.index_select(0, toff[i].index_select(0, pos) + base))
    first = _first_min_segments(d2, seg.to(I64), m)
    first = torch.where(first >= 0, first, first_of.to(I64))
    return j.index_select(0, first).to(I64)


def grid_round(
    lat: Lattice,
    xval: Tensor,
    waux: Tensor,
    idv: Tensor,
    scale: Tensor,
    kmaxq: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """One trial scale of the IQ2/IQ3 searches for rows ``xval``, ``waux`` ``[N, n]``.

    ``l = clamp(nearest_int(0.5f*(id*x - 1)), 0, kMaxQ-1)`` per element; each group of
    ``lat.group`` levels is looked up on the lattice, and a group off it replaced by its best
    neighbour at ``scale`` (weights ``waux``). Returns ``(L [N, n] levels int64, grid index
    [N, G] int64, off [N, G] bool: the group was off the lattice)``.
    """
    tab = lat.on(xval.device)
    n_rows, n = xval.shape
    g = lat.group
    ng = n // g
    lv = nearest_int((idv.unsqueeze(1) * xval - 1) * 0.5).clamp_(0, kmaxq - 1).to(I64)
    shifts = lat.bits * torch.arange(g, device=xval.device, dtype=I64)
    u = (lv.view(n_rows, ng, g) << shifts).sum(dim=2)  # [N, G]
    gi = tab["map"][u]
    off = gi < 0
    if bool(off.any()):
        fi = off.view(-1).nonzero().squeeze(1)  # flat (row, group) of the groups off the grid
        xv = xval.reshape(-1, g).index_select(0, fi)
        wv = waux.reshape(-1, g).index_select(0, fi)
        sc = scale.index_select(0, fi // ng)
        gi = gi.clone()
        gi.view(-1)[fi] = best_neighbours(tab, u.view(-1).index_select(0, fi), xv, wv, sc)
    L = tab["levels"].index_select(0, gi.view(-1)).view(n_rows, n)
    return L, gi, off


def _lv_sums(wx: Tensor, w: Tensor, L: Tensor) -> tuple[Tensor, Tensor]:
    """``q = 2*L + 1; sumqx += w*xval*q; sumq2 += w*q*q`` over the last dim."""
    q = (2 * L + 1).to(F32)
    return _group_sums(wx, w, q)


def _trial_ids(c0: float, step: float, lo: int, hi: int, denom: Tensor) -> Tensor:
    """``(c0 + is*step)/denom`` for ``is`` in ``[lo, hi]`` (float32, C order) → ``[B, T]``."""
    steps = torch.arange(lo, hi + 1, dtype=F32, device=denom.device)
    num = f32(c0, denom) + f32(step, denom) * steps
    return num.view(1, -1) / denom.view(-1, 1)


def _search(
    lat: Lattice,
    xval: Tensor,
    weight: Tensor,
    waux: Tensor,
    ids: Tensor,
    kmaxq: int,
    scale0: Tensor,
    L0: Tensor,
    ongrid0: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The trial loop of the IQ2/IQ3 quantizers over blocks ``xval`` ``[B, n]``, trial inverse
    scales ``ids`` ``[B, T]``. Returns ``(scale [B], L [B, n], on-grid [B, G])``: the last
    trial taken, or ``(scale0, L0, ongrid0)`` where none was.

    Compiled (:func:`dynq.kernels.base.compiled_impl`: one Triton kernel on a GPU, one numba
    loop on the CPU), ``iq_grid_search`` gives the same results.
    """
    impl = base.compiled_impl(xval)
    if impl is not None:
        return impl.iq_grid_search(lat, xval, weight, waux, ids, kmaxq, scale0, L0, ongrid0)
    b, n = xval.shape
    t = ids.shape[1]
    this_scale = 1 / ids
    xr = xval.unsqueeze(1).expand(b, t, n).reshape(b * t, n)
    wr = waux.unsqueeze(1).expand(b, t, n).reshape(b * t, n)
    Lt, _, off = grid_round(lat, xr, wr, ids.reshape(-1), this_scale.reshape(-1), kmaxq)
    Lt = Lt.view(b, t, n)
    wx = (weight * xval).unsqueeze(1)
    sumqx, sumq2 = _lv_sums(wx, weight.unsqueeze(1), Lt)  # [B, T]
    sc_t = sumqx / sumq2
    pick, _ = record_scan(sumqx * sumqx, sumq2, sc_t * sumqx, torch.zeros_like(scale0))
    took = pick >= 0
    pk = pick.clamp(min=0)
    scale = torch.where(took, torch.gather(sc_t, 1, pk.unsqueeze(1)).squeeze(1), scale0)
    Lp = Lt[torch.arange(b, device=xval.device), pk]
    L = torch.where(took.unsqueeze(1), Lp, L0)
    offp = off.view(b, t, -1)[torch.arange(b, device=xval.device), pk]
    ongrid = torch.where(took.unsqueeze(1), ~offp, torch.full_like(offp, ongrid0))
    return scale, L, ongrid


def _requantize(
    lat: Lattice,
    xval: Tensor,
    weight: Tensor,
    waux: Tensor,
    scale: Tensor,
    L: Tensor,
    redo: Tensor,
    groups: Tensor | None,
    kmaxq: int,
) -> tuple[Tensor, Tensor]:
    """The pass after the trials: for blocks ``redo``, round at ``scale`` again (groups
    ``groups`` ``[B, G]`` only, or all when None), and ``scale = sumqx/sumq2`` if ``sumq2 > 0``.
    """
    rows = redo.nonzero(as_tuple=True)[0]
    if not rows.numel():
        return scale, L
    xs, ws, was, ss = xval[rows], weight[rows], waux[rows], scale[rows]
    L2, _, _ = grid_round(lat, xs, was, 1 / ss, ss, kmaxq)
    Lr = L[rows]
    if groups is not None:
        gm = groups[rows].repeat_interleave(lat.group, dim=1)
        L2 = torch.where(gm, L2, Lr)
    sumqx, sumq2 = _lv_sums(ws * xs, ws, L2)
    ss = torch.where(sumq2 > 0, sumqx / sumq2, ss)
    scale = scale.clone()
    L = L.clone()
    scale[rows] = ss
    L[rows] = L2
    return scale, L


def _search_requantize(
    lat: Lattice,
    xval: Tensor,
    weight: Tensor,
    waux: Tensor,
    ids: Tensor,
    kmaxq: int,
    scale0: Tensor,
    L0: Tensor,
    ongrid0: bool,
    redo: str,
) -> tuple[Tensor, Tensor]:
    """:func:`_search`, then :func:`_requantize` for the blocks with ``scale > 0``: ``redo``
    ``"all"`` every block, every group (IQ2_XXS); ``"off"`` the blocks with a group off the
    lattice, those groups; ``"off_all"`` those blocks, every group. Returns ``(scale, L)``.

    Compiled (:func:`dynq.kernels.base.compiled_impl`), both run in its ``iq_grid_search``.
    """
    impl = base.compiled_impl(xval)
    if impl is not None:
        scale, L, _ = impl.iq_grid_search(
            lat, xval, weight, waux, ids, kmaxq, scale0, L0, ongrid0, redo=redo
        )
        return scale, L
    scale, L, ongrid = _search(lat, xval, weight, waux, ids, kmaxq, scale0, L0, ongrid0)
    if redo == "all":
        return _requantize(lat, xval, weight, waux, scale, L, scale > 0, None, kmaxq)
    offg = ~ongrid
    rq = offg.any(dim=1) & (scale > 0)
    groups = None if redo == "off_all" else offg
    return _requantize(lat, xval, weight, waux, scale, L, rq, groups, kmaxq)


def _grid_index(lat: Lattice, L: Tensor) -> Tensor:
    """Grid index of each group of levels ``L`` ``[B, n]`` (all on the lattice) → ``[B, G]``."""
    tab = lat.on(L.device)
    b, n = L.shape
    g = lat.group
    shifts = lat.bits * torch.arange(g, device=L.device, dtype=I64)
    u = (L.view(b, n // g, g).clamp(0, (1 << lat.bits) - 1) << shifts).sum(dim=2)
    return tab["map"][u].clamp(min=0)


def _scale_nibbles(scales: Tensor, max_scale: Tensor, lmax: int) -> tuple[Tensor, Tensor]:
    """``d = max_scale/31 (or 15); id = 1/d; l = clamp(nearest_int(0.5f*(id*s - 1)), 0, lmax)``.

    ``scales`` ``[S, nb]``, ``max_scale`` ``[S, 1]``. Returns ``(d [S, 1], l [S, nb] int32)``.
    """
    d = divc(max_scale, 31 if lmax == 15 else 15)
    idd = 1 / d
    l6 = nearest_int((idd * scales - 1) * 0.5).clamp_(0, lmax)
    return d, l6


def _need_imatrix(name: str, w: Tensor | None) -> None:
    if w is None:
        raise KernelError(
            f"{name} needs an importance matrix: ggml refuses to quantize it without one"
        )


def _le_bytes(v: Tensor, nbytes: int) -> Tensor:
    """Little-endian bytes of int64 ``v`` ``[..., k]`` → uint8 ``[..., k*nbytes]``."""
    sh = 8 * torch.arange(nbytes, device=v.device, dtype=I64)
    b = (v.unsqueeze(-1) >> sh) & 0xFF
    return b.reshape(*v.shape[:-1], v.shape[-1] * nbytes).to(U8)


def _from_le(b: Tensor, nbytes: int) -> Tensor:
    """Inverse of :func:`_le_bytes`: uint8 ``[..., k*nbytes]`` → int64 ``[..., k]``."""
    v = b.to(I64).reshape(*b.shape[:-1], b.shape[-1] // nbytes, nbytes)
    sh = 8 * torch.arange(nbytes, device=b.device, dtype=I64)
    return (v << sh).sum(dim=-1)


def _ksigns(like: Tensor) -> Tensor:
    return torch.from_numpy(KSIGNS.astype("int64")).to(like.device)


def _grid_values(name: str, like: Tensor) -> Tensor:
    """The dequantization grid ``[grid_size, group]`` float32 (gguf's ``grid_map`` values)."""
    from gguf import quants as gq

    cls = {
        "iq2_xxs": gq.IQ2_XXS,
        "iq2_xs": gq.IQ2_XS,
        "iq2_s": gq.IQ2_S,
        "iq3_xxs": gq.IQ3_XXS,
        "iq3_s": gq.IQ3_S,
        "iq1_s": gq.IQ1_S,
        "iq1_m": gq.IQ1_M,
    }[name]
    lat = lattice(name)
    vals = torch.tensor(cls.grid_map, dtype=F32, device=like.device)
    return vals[lat.on(like.device)["levels"]]


def _sign_mult(bits: Tensor) -> Tensor:
    """0/1 sign bits → float32 ``1``/``-1``."""
    return torch.where(
        bits == 0, torch.ones_like(bits, dtype=F32), -torch.ones_like(bits, dtype=F32)
    )


class _LowBit(BlockKernel):
    """Shared by the seven kernels: chunking. The torch searches' intermediates are ~100x the
    input, so where they run on the CPU (``DYNQ_COMPILED=0``) a chunk is worked in slices of
    ``cpu_slice`` super-blocks, which stay in cache. The compiled searches (numba on the CPU,
    Triton on a GPU) need a few times the input's memory: the whole chunk goes at once
    (``chunk_elems``, times dynq's CUDA factor on a GPU: 16 M values). (Where the torch
    searches run on a GPU, ``quantize`` halves a chunk that does not fit.)"""

    chunk_elems = 1 << 16
    cpu_slice: ClassVar[int] = 16

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        k = cls.cpu_slice
        if x.device.type != "cpu" or s <= k or base.compiled_impl(x) is not None:
            return cls._quantize(x, w)
        parts = [
            cls._quantize(x[i : i + k], None if w is None else w[i : i + k]) for i in range(0, s, k)
        ]
        return torch.cat(parts)

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S


class _GridKernel(_LowBit):
    """Shared by the IQ2/IQ3 kernels: the per-block search, parameterised per type."""

    name: ClassVar[str]
    sub: ClassVar[int]  # block size of one scale (16 or 32)
    kmaxq: ClassVar[int]
    parity: ClassVar[bool]
    eps: ClassVar[float]

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        raise NotImplementedError

    #: trial inverse scales ``(2*kMaxQ - 1 + is*step)/max`` for ``is`` in ``[-ntry, ntry]``
    step: ClassVar[float]
    ntry: ClassVar[int]
    #: ``is_on_grid`` before the trials (what counts when no trial is taken)
    ongrid0: ClassVar[bool] = True
    #: the pass after the trials rounds every group again (else only those off the lattice)
    redo_all: ClassVar[bool] = False

    @classmethod
    def _block_search(
        cls, xval: Tensor, weight: Tensor, waux: Tensor, mx: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(scale [B], L [B, sub], more blocks to skip or None)`` for IQ2_XS, IQ2_S,
        IQ3_XXS and IQ3_S (IQ2_XXS starts from ``make_qp_quants`` instead)."""
        lat = lattice(cls.name)
        q = 2 * cls.kmaxq - 1
        scale0 = divc(mx, q)
        ids = _trial_ids(q, cls.step, -cls.ntry, cls.ntry, mx)
        L0 = torch.zeros(xval.shape, dtype=I64, device=xval.device)
        redo = "off_all" if cls.redo_all else "off"
        scale, L = _search_requantize(
            lat, xval, weight, waux, ids, cls.kmaxq, scale0, L0, cls.ongrid0, redo
        )
        return scale, L, None

    @classmethod
    def _blocks(cls, x: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the search over the blocks of super-blocks ``x`` ``[S, 256]``.

        Returns ``(scales [S, nb], grid index [S, nb, G], signs [S, nb, sub/8], skipped
        [S, nb])``.
        """
        s = x.shape[0]
        nb = QK_K // cls.sub
        weight = cls._weights(x, w)
        xb = x.reshape(s * nb, cls.sub)
        wb = weight.reshape(s * nb, cls.sub)
        waux = sqrtf(wb)
        xval, signs = _signs(xb, wb, cls.parity)
        mx = _max0(xval)
        skip = mx < f32(cls.eps, x) if cls.eps else mx == 0
        scale, L, skip2 = cls._block_search(xval, wb, waux, mx)
        if skip2 is not None:
            skip = skip | skip2
        neg = scale < 0
        scale = torch.where(neg, -scale, scale)
        flip = 127 if cls.parity else 255
        signs = torch.where(neg.unsqueeze(1), (~signs) & flip, signs)
        gi = _grid_index(lattice(cls.name), L)
        scale = torch.where(skip, torch.zeros_like(scale), scale)
        gi = torch.where(skip.unsqueeze(1), torch.zeros_like(gi), gi)
        signs = torch.where(skip.unsqueeze(1), torch.zeros_like(signs), signs)
        return (
            scale.view(s, nb),
            gi.view(s, nb, -1),
            signs.view(s, nb, -1),
            skip.view(s, nb),
        )


class IQ2_XXS(_GridKernel, qtype="iq2_xxs"):
    """Bytes of ggml's ``quantize_iq2_xxs`` (imatrix required)."""

    cpu_slice = 64  # measured best on a 2-core VM

    name = "iq2_xxs"
    sub = 32
    kmaxq = 3
    parity = True
    eps = GROUP_MAX_EPS

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        _need_imatrix("IQ2_XXS", w)
        return _imatrix_weights(x, w, _sigma2(x, two=False))

    @classmethod
    def _block_search(
        cls, xval: Tensor, weight: Tensor, waux: Tensor, mx: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        lat = lattice(cls.name)
        scale0, Lqp = make_qp_quants(xval, cls.kmaxq + 1, weight)
        eff_max = scale0 * cls.kmaxq
        bad = eff_max <= 0
        ids = _trial_ids(2 * cls.kmaxq - 1, 0.1, -6, 6, eff_max)
        scale, L = _search_requantize(
            lat, xval, weight, waux, ids, cls.kmaxq, scale0, Lqp.to(I64), True, "all"
        )
        return scale, L, bad

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        scales, gi, signs, _ = cls._blocks(x, w)  # [S, 8], [S, 8, 4], [S, 8, 4]
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        d, l4 = _scale_nibbles(scales, max_scale, 15)
        zero = max_scale == 0
        sh7 = 7 * torch.arange(4, device=x.device, dtype=I64)
        hi = (signs.to(I64) << sh7).sum(dim=2) | (l4.to(I64) << 28)  # [S, 8]
        lo = (gi << (8 * torch.arange(4, device=x.device, dtype=I64))).sum(dim=2)
        q2 = torch.stack([lo, hi], dim=2).view(s, 16)
        q2 = torch.where(zero, torch.zeros_like(q2), q2)
        dd = torch.where(zero, torch.zeros_like(d), d)
        return torch.cat([fp16_bytes(dd), _le_bytes(q2, 4)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, :2])  # [S, 1]
        qs = _from_le(blocks[:, 2:], 4).view(s, 8, 2)
        sc = (qs[:, :, 1] >> 28).to(F32)
        db = (d * (0.5 + sc)) * 0.25  # [S, 8]
        sgn = (qs[:, :, 1:2] >> (7 * torch.arange(4, device=blocks.device))) & 0x7F
        sbits = (_ksigns(blocks)[sgn].unsqueeze(-1) >> torch.arange(8, device=blocks.device)) & 1
        idx = (qs[:, :, 0:1] >> (8 * torch.arange(4, device=blocks.device))) & 0xFF
        grid = _grid_values(cls.name, blocks)[idx]  # [S, 8, 4, 8]
        y = (db.view(s, 8, 1, 1) * grid) * _sign_mult(sbits)
        return y.reshape(s, QK_K)


class IQ2_XS(_GridKernel, qtype="iq2_xs"):
    """Bytes of ggml's ``quantize_iq2_xs`` (imatrix required)."""

    name = "iq2_xs"
    sub = 16
    kmaxq = 3
    parity = True
    eps = GROUP_MAX_EPS
    step = 0.1
    ntry = 9

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        _need_imatrix("IQ2_XS", w)
        return _imatrix_weights(x, w, _sigma2(x, two=False))

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        scales, gi, signs, _ = cls._blocks(x, w)  # [S, 16], [S, 16, 2], [S, 16, 2]
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        d, l4 = _scale_nibbles(scales, max_scale, 15)
        zero = max_scale == 0
        qs = (gi | (signs.to(I64) << 9)).reshape(-1, 32)
        qs = torch.where(zero, torch.zeros_like(qs), qs)
        l4 = torch.where(zero, torch.zeros_like(l4), l4)
        sc = (l4[:, 0::2] | (l4[:, 1::2] << 4)).to(U8)
        dd = torch.where(zero, torch.zeros_like(d), d)
        return torch.cat([fp16_bytes(dd), _le_bytes(qs, 2), sc], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        d = fp16_from_bytes(blocks[:, :2])
        qs = _from_le(blocks[:, 2:66], 2)  # [S, 32]
        sc = blocks[:, 66:74].to(I64)
        sc = torch.stack([sc & 0xF, sc >> 4], dim=2).reshape(s, 16).to(F32)
        db = (d * (0.5 + sc)) * 0.25
        sbits = (_ksigns(blocks)[qs >> 9].unsqueeze(-1) >> torch.arange(8, device=dev)) & 1
        grid = _grid_values(cls.name, blocks)[qs & 511]  # [S, 32, 8]
        y = (db.view(s, 16, 1, 1) * grid.view(s, 16, 2, 8)) * _sign_mult(sbits).view(s, 16, 2, 8)
        return y.reshape(s, QK_K)


class IQ2_S(_GridKernel, qtype="iq2_s"):
    """Bytes of ggml's ``quantize_iq2_s`` (weights ``0.25*sigma2 + x*x`` without an imatrix)."""

    cpu_slice = 32  # measured best on a 2-core VM

    name = "iq2_s"
    sub = 16
    kmaxq = 3
    parity = False
    eps = GROUP_MAX_EPS_IQ2_S
    step = 0.1
    ntry = 9

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        sigma2 = _sigma2(x, two=True)
        if w is None:
            return sigma2 * 0.25 + x * x
        return _imatrix_weights(x, w, sigma2)

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        scales, gi, signs, _ = cls._blocks(x, w)  # [S, 16], [S, 16, 2], [S, 16, 2]
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        d, l4 = _scale_nibbles(scales, max_scale, 15)
        zero = max_scale == 0
        gi = gi.reshape(s, 32)
        qs = (gi & 0xFF).to(U8)
        qh4 = (gi >> 8).view(s, 8, 4) << (2 * torch.arange(4, device=x.device, dtype=I64))
        qh = qh4.sum(dim=2).to(U8)
        sg = signs.reshape(s, 32).to(U8)
        l4 = torch.where(zero, torch.zeros_like(l4), l4)
        sc = (l4[:, 0::2] | (l4[:, 1::2] << 4)).to(U8)
        dd = torch.where(zero, torch.zeros_like(d), d * f32(0.9875, d))
        return torch.cat([fp16_bytes(dd), qs, sg, qh, sc], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        d = fp16_from_bytes(blocks[:, :2])
        qs = blocks[:, 2:34].to(I64)
        sg = blocks[:, 34:66]
        qh = blocks[:, 66:74].to(I64)
        sc = blocks[:, 74:82].to(I64)
        sc = torch.stack([sc & 0xF, sc >> 4], dim=2).reshape(s, 16).to(F32)
        db = (d * (0.5 + sc)) * 0.25
        sbits = bytes_to_bits(sg)  # [S, 256]
        qh = (qh.unsqueeze(2) >> (2 * torch.arange(4, device=dev))) & 3
        idx = qs | (qh.reshape(s, 32) << 8)
        grid = _grid_values(cls.name, blocks)[idx]  # [S, 32, 8]
        y = (db.view(s, 16, 1, 1) * grid.view(s, 16, 2, 8)) * _sign_mult(sbits).view(s, 16, 2, 8)
        return y.reshape(s, QK_K)


class IQ3_XXS(_GridKernel, qtype="iq3_xxs"):
    """Bytes of ggml's ``quantize_iq3_xxs`` (weights ``x*x`` without an imatrix)."""

    name = "iq3_xxs"
    sub = 32
    kmaxq = 8
    parity = True
    eps = GROUP_MAX_EPS_IQ3_XXS
    step = 0.2
    ntry = 15

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        if w is None:
            return x * x
        return _imatrix_weights(x, w, _sigma2(x, two=True))

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        scales, gi, signs, _ = cls._blocks(x, w)  # [S, 8], [S, 8, 8], [S, 8, 4]
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        d, l4 = _scale_nibbles(scales, max_scale, 15)
        zero = max_scale == 0
        sh7 = 7 * torch.arange(4, device=x.device, dtype=I64)
        ss = (signs.to(I64) << sh7).sum(dim=2) | (l4.to(I64) << 28)  # [S, 8]
        qs = gi.reshape(s, 64)
        qs = torch.where(zero, torch.zeros_like(qs), qs).to(U8)
        ss = torch.where(zero, torch.zeros_like(ss), ss)
        dd = torch.where(zero, torch.zeros_like(d), d * f32(1.0125, d))
        return torch.cat([fp16_bytes(dd), qs, _le_bytes(ss, 4)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        d = fp16_from_bytes(blocks[:, :2])
        qs = blocks[:, 2:66].to(I64)
        ss = _from_le(blocks[:, 66:98], 4)  # [S, 8]
        db = (d * (0.5 + (ss >> 28).to(F32))) * 0.5
        sgn = (ss.unsqueeze(2) >> (7 * torch.arange(4, device=dev))) & 0x7F
        sbits = (_ksigns(blocks)[sgn].unsqueeze(-1) >> torch.arange(8, device=dev)) & 1
        grid = _grid_values(cls.name, blocks)[qs]  # [S, 64, 4]
        y = (db.view(s, 8, 1, 1) * grid.view(s, 8, 4, 8)) * _sign_mult(sbits)
        return y.reshape(s, QK_K)


class IQ3_S(_GridKernel, qtype="iq3_s"):
    """Bytes of ggml's ``quantize_iq3_s`` (weights ``x*x`` without an imatrix)."""

    cpu_slice = 32  # measured best on a 2-core VM

    name = "iq3_s"
    sub = 32
    kmaxq = 8
    parity = False
    eps = 0.0  # ggml: if (!max)
    step = 0.2
    ntry = 9
    ongrid0 = False
    redo_all = True

    @classmethod
    def _weights(cls, x: Tensor, w: Tensor | None) -> Tensor:
        if w is None:
            return x * x
        return _imatrix_weights(x, w, _sigma2(x, two=True))

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        scales, gi, signs, skip = cls._blocks(x, w)  # [S, 8], [S, 8, 8], [S, 8, 4], [S, 8]
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        d, l4 = _scale_nibbles(scales, max_scale, 15)
        zero = max_scale == 0
        qh = ((gi >> 8) << torch.arange(8, device=x.device, dtype=I64)).sum(dim=2).to(U8)
        # ggml advances its qs and signs pointers at the end of the block loop, which a skipped
        # (all-zero) block jumps over: the next block's codes land in its place, and the
        # super-block's last slots stay zero
        keep = ~skip
        slot = torch.cumsum(keep.to(I64), dim=1) - 1  # [S, 8]: where each kept block goes
        slot = torch.where(keep, slot, torch.full_like(slot, 8))  # skipped ones: a spare slot
        qs9 = torch.zeros((s, 9, 8), dtype=I64, device=x.device)
        qs9.scatter_(1, slot.unsqueeze(2).expand(s, 8, 8), gi & 0xFF)
        sg9 = torch.zeros((s, 9, 4), dtype=I64, device=x.device)
        sg9.scatter_(1, slot.unsqueeze(2).expand(s, 8, 4), signs.to(I64))
        qs = qs9[:, :8].reshape(s, 64).to(U8)
        sg = sg9[:, :8].reshape(s, 32).to(U8)
        l4 = torch.where(zero, torch.zeros_like(l4), l4)
        sc = (l4[:, 0::2] | (l4[:, 1::2] << 4)).to(U8)
        dd = torch.where(zero, torch.zeros_like(d), d * f32(1.033, d))
        return torch.cat([fp16_bytes(dd), qs, qh, sg, sc], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, :2])
        qs = blocks[:, 2:66].to(I64)
        qh = blocks[:, 66:74]
        sg = blocks[:, 74:106]
        sc = blocks[:, 106:110].to(I64)
        sc = torch.stack([sc & 0xF, sc >> 4], dim=2).reshape(s, 8)
        db = d * (1 + 2 * sc).to(F32)
        sbits = bytes_to_bits(sg)
        idx = qs | (bytes_to_bits(qh).to(I64) << 8)
        grid = _grid_values(cls.name, blocks)[idx]  # [S, 64, 4]
        y = (db.view(s, 8, 1, 1) * grid.view(s, 8, 4, 8)) * _sign_mult(sbits).view(s, 8, 4, 8)
        return y.reshape(s, QK_K)


# ----------------------------------------------------------------------------------------------
# IQ1_S, IQ1_M


def _pairs(n: int, dev: torch.device) -> tuple[Tensor, Tensor]:
    """``for (i1 = 0; i1 <= n; ++i1) for (i2 = i1; i2 <= n; ++i2)`` as two index vectors."""
    i1, i2 = torch.triu_indices(n + 1, n + 1, device=dev)
    return i1, i2


def _xpm(like: Tensor) -> tuple[Tensor, Tensor]:
    """``x_p = {-1 + delta, delta, 1 + delta}``, ``x_m = {-1 - delta, -delta, 1 - delta}``."""
    xp = torch.tensor([-1 + IQ1_DELTA, IQ1_DELTA, 1 + IQ1_DELTA], dtype=F32, device=like.device)
    xm = torch.tensor([-1 - IQ1_DELTA, -IQ1_DELTA, 1 - IQ1_DELTA], dtype=F32, device=like.device)
    return xp, xm


def _sorted_split(xb: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The blocks ``xb`` ``[B, n]`` sorted ascending (stably, like glibc's merge-sorting
    ``qsort``; ``-0.0`` equal to ``+0.0``): ``(order [B, n], sorted w*x, sorted w)``."""
    _, order = torch.sort(xb + 0.0, dim=1, stable=True)
    xs = torch.gather(xb, 1, order)
    ws = torch.gather(weight, 1, order)
    return order, ws * xs, ws


def _prefix(v: Tensor) -> Tensor:
    """``s[0] = 0; s[j+1] = s[j] + v[j]`` in float32, left to right: ``[B, n]`` → ``[n+1, B]``."""
    n, b = v.shape[1], v.shape[0]
    out = torch.zeros((n + 1, b), dtype=F32, device=v.device)
    vt = v.t()
    for j in range(n):
        torch.add(out[j], vt[j], out=out[j + 1])
    return out


def _split_levels(order: Tensor, i1: Tensor, i2: Tensor) -> Tensor:
    """L = 0 below the first split, 1 up to the second, 2 above, in the blocks' own order."""
    n = order.shape[1]
    j = torch.arange(n, device=order.device).view(1, n)
    ls = (j >= i1.view(-1, 1)).to(I64) + (j >= i2.view(-1, 1)).to(I64)
    L = torch.empty_like(ls)
    L.scatter_(1, order, ls)
    return L


def _iq1_grid(
    xb: Tensor, weight: Tensor, L: Tensor, scale: Tensor, xx: Tensor
) -> tuple[Tensor, Tensor]:
    """Look the groups of 8 levels up on IQ1's lattice; a group off it takes the neighbour
    ``iq1_find_best_neighbour2`` picks. ``xx`` ``[B, G, 3]``: the level values of each group.
    Returns ``(grid indices [B, G], some group of the block was off the lattice [B])``."""
    lat = lattice("iq1_s")
    tab = lat.on(xb.device)
    b, n = xb.shape
    ng = n // 8
    shifts = 2 * torch.arange(8, device=xb.device, dtype=I64)
    u = (L.view(b, ng, 8) << shifts).sum(dim=2)
    gi = tab["map"][u]
    off = gi < 0
    if bool(off.any()):
        ri, ki = off.nonzero(as_tuple=True)
        xv = xb.view(b, ng, 8)[ri, ki]
        wv = weight.view(b, ng, 8)[ri, ki]
        gi = gi.clone()
        # on a GPU, the same search as one Triton kernel
        find = fused.iq1_best_neighbours if fused.used_for(xb) else best_neighbours
        gi[ri, ki] = find(tab, u[ri, ki], xv, wv, scale[ri], xx[ri, ki])
    return gi, off.any(dim=1)


def _iq1_refit(
    xb: Tensor, weight: Tensor, gi: Tensor, xx: Tensor, scale: Tensor, redo: Tensor
) -> Tensor:
    """``if (!all_on_grid)``: ``sumqx += w*q*x; sumq2 += w*q*q`` over the block with the
    chosen grid points, then ``scale = sumqx/sumq2`` if both are positive."""
    tab = lattice("iq1_s").on(xb.device)
    b, n = xb.shape
    lv = tab["levels"][gi]  # [B, G, 8]
    q = torch.gather(xx, 2, lv).view(b, n)
    wq = weight * q
    sumqx, sumq2 = _seq_dot(wq, xb), _seq_dot(wq, q)
    ok = redo & (sumqx > 0) & (sumq2 > 0)
    return torch.where(ok, sumqx / sumq2, scale)


def _iq1_s_search(
    wxs: Tensor, ws: Tensor, xp: Tensor, xm: Tensor, i1: Tensor, i2: Tensor
) -> tuple[Tensor, Tensor]:
    """IQ1_S's split search: for every pair ``(i1, i2)`` (:func:`_pairs`), then ``x_p``,
    ``x_m``: ``sumqx = sum_l sumx_l*v[l]``, ``sumq2 = sum_l sumw_l*v[l]*v[l]`` from the prefix
    sums of the sorted ``w*x`` and ``w`` ``[B, 32]``; the first strictly better ``sumqx^2/sumq2``
    wins (:func:`record_scan`). Returns ``(pick [B], -1 where none; sc = sumqx/sumq2 [B] at
    the pick, at candidate 0 where none)``. :func:`dynq.kernels.fused.iq1_s_search` is the
    same as one Triton kernel."""
    b, n = wxs.shape
    sumx, sumw = _prefix(wxs), _prefix(ws)  # [33, B]
    sx1, sx2, sxn, sx0 = sumx[i1].t(), sumx[i2].t(), sumx[n].view(-1, 1), sumx[0].view(-1, 1)
    sw1, sw2, swn, sw0 = sumw[i1].t(), sumw[i2].t(), sumw[n].view(-1, 1), sumw[0].view(-1, 1)
    qx, q2 = [], []
    for v in (xp, xm):
        qx.append((sx1 - sx0) * v[0] + (sx2 - sx1) * v[1] + (sxn - sx2) * v[2])
        q2.append((sw1 - sw0) * v[0] * v[0] + (sw2 - sw1) * v[1] * v[1] + (swn - sw2) * v[2] * v[2])
    sumqx = torch.stack(qx, dim=2).view(b, -1)  # candidates: (i1, i2), then +/- shift
    sumq2 = torch.stack(q2, dim=2).view(b, -1)
    sc = sumqx / sumq2
    best0 = torch.full((b,), -FLT_MAX, dtype=F32, device=wxs.device)
    pick, _ = record_scan(sumqx * sumqx, sumq2, sc * sumqx, best0)
    scale = torch.gather(sc, 1, pick.clamp(min=0).unsqueeze(1)).squeeze(1)
    return pick, scale


def _iq1_m_search(
    wxs: Tensor, ws: Tensor, order: Tensor, xp: Tensor, xm: Tensor, i1: Tensor, i2: Tensor
) -> tuple[Tensor, Tensor]:
    """IQ1_M's split search: as :func:`_iq1_s_search` on blocks ``[B, 16]`` whose two halves
    (told apart by the sort's ``order``) take ``x_p`` or ``x_m`` each: prefix sums per half,
    candidates ``(i1, i2)`` then ``(p, p), (p, m), (m, p), (m, m)``.
    :func:`dynq.kernels.fused.iq1_m_search` is the same as one Triton kernel."""
    b, n = wxs.shape
    # prefix sums per half of the block
    half = (order >= n // 2).to(F32)  # [B, n]: the sorted element is in the second half
    zero = torch.zeros_like(wxs)
    px = [_prefix(torch.where(half == h, wxs, zero)) for h in (0, 1)]  # [17, B]
    pw = [_prefix(torch.where(half == h, ws, zero)) for h in (0, 1)]
    p2, m2 = xp[2], xm[2]
    cp1 = xp[0] * xp[0] - xp[1] * xp[1]
    cp2 = xp[1] * xp[1] - xp[2] * xp[2]
    cm1 = xm[0] * xm[0] - xm[1] * xm[1]
    cm2 = xm[1] * xm[1] - xm[2] * xm[2]
    qx_p, qx_m, q2_p, q2_m = [], [], [], []
    for h in (0, 1):
        txs, tws = px[h][n].view(-1, 1), pw[h][n].view(-1, 1)
        sx = px[h][i1].t() + px[h][i2].t()  # [B, P]
        w1, w2 = pw[h][i1].t(), pw[h][i2].t()
        qx_p.append(txs * p2 - sx)
        qx_m.append(txs * m2 - sx)
        q2_p.append(tws * p2 * p2 + w1 * cp1 + w2 * cp2)
        q2_m.append(tws * m2 * m2 + w1 * cm1 + w2 * cm2)
    sumqx = torch.stack(
        [qx_p[0] + qx_p[1], qx_p[0] + qx_m[1], qx_m[0] + qx_p[1], qx_m[0] + qx_m[1]], dim=2
    ).view(b, -1)
    sumq2 = torch.stack(
        [q2_p[0] + q2_p[1], q2_p[0] + q2_m[1], q2_m[0] + q2_p[1], q2_m[0] + q2_m[1]], dim=2
    ).view(b, -1)
    sc = sumqx / sumq2
    best0 = torch.full((b,), -FLT_MAX, dtype=F32, device=wxs.device)
    pick, _ = record_scan(sumqx * sumqx, sumq2, sc * sumqx, best0)
    scale = torch.gather(sc, 1, pick.clamp(min=0).unsqueeze(1)).squeeze(1)
    return pick, scale


class IQ1_S(_LowBit, qtype="iq1_s"):
    """Bytes of ggml's ``quantize_iq1_s`` (imatrix required)."""

    cpu_slice = 64  # measured best on a 2-core VM (the torch path)

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        _need_imatrix("IQ1_S", w)
        s = x.shape[0]
        dev = x.device
        nb, n = 8, 32
        weight = _imatrix_weights(x, w, _sigma2(x, two=True))
        xb = x.reshape(s * nb, n)
        wb = weight.reshape(s * nb, n)
        if base.compiled_impl(x) is compiled:
            # the blocks' work below (sort, search, lattice, refit) as one numba loop
            scale, shift, gi = compiled.iq1_s_blocks(xb, wb, GROUP_MAX_EPS_IQ1_S)
        else:
            b = xb.shape[0]
            mx = xb.abs().max(dim=1).values
            skip = mx < f32(GROUP_MAX_EPS_IQ1_S, x)
            order, wxs, ws = _sorted_split(xb, wb)
            xp, xm = _xpm(x)
            i1, i2 = _pairs(n, dev)
            if fused.used_for(x):  # the same search as one Triton kernel
                pick, scale = fused.iq1_s_search(wxs, ws)
            else:
                pick, scale = _iq1_s_search(wxs, ws, xp, xm, i1, i2)
            skip = skip | (pick < 0)
            pk = pick.clamp(min=0)
            shift = torch.where(pk % 2 == 0, 1, -1)
            L = _split_levels(order, i1[pk // 2], i2[pk // 2])
            neg = scale < 0
            L = torch.where(neg.unsqueeze(1), 2 - L, L)
            scale = torch.where(neg, -scale, scale)
            shift = torch.where(neg, -shift, shift)
            xx = torch.where((shift == 1).view(-1, 1), xp.view(1, 3), xm.view(1, 3))
            xx = xx.unsqueeze(1).expand(b, n // 8, 3)
            gi, offg = _iq1_grid(xb, wb, L, scale, xx)
            scale = _iq1_refit(xb, wb, gi, xx, scale, offg)
            scale = torch.where(skip, torch.zeros_like(scale), scale)
            shift = torch.where(skip, torch.ones_like(shift), shift)
            gi = torch.where(skip.unsqueeze(1), torch.zeros_like(gi), gi)
        # per super-block
        scales = scale.view(s, nb)
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        zero = max_scale == 0
        d = divc(max_scale, 15)
        dh = d * f32(1.125, d)
        idd = 1 / d
        l3 = nearest_int((idd * scales - 1) * 0.5).clamp_(0, 7).to(I64)
        l3 = l3 | torch.where(shift.view(s, nb) == -1, 8, 0)
        gi = gi.view(s, nb, 4)
        qs = (gi & 0xFF).reshape(s, 32).to(U8)
        qh = ((gi >> 8) << (3 * torch.arange(4, device=dev, dtype=I64))).sum(dim=2)
        qh = qh | torch.where(zero, torch.zeros_like(l3), l3 << 12)
        dh = torch.where(zero, torch.zeros_like(dh), dh)
        return torch.cat([fp16_bytes(dh), qs, _le_bytes(qh, 2)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        d = fp16_from_bytes(blocks[:, :2])
        qs = blocks[:, 2:34].to(I64)
        qh = _from_le(blocks[:, 34:50], 2)  # [S, 8]
        dl = d * (2 * ((qh >> 12) & 7) + 1).to(F32)  # [S, 8]
        delta = torch.where((qh & 0x8000) == 0, IQ1_DELTA, -IQ1_DELTA).to(F32)
        hi = (qh.unsqueeze(2) >> (3 * torch.arange(4, device=dev))) & 7
        idx = qs | (hi.reshape(s, 32) << 8)
        grid = _grid_values("iq1_s", blocks)[idx].view(s, 8, 4, 8)
        y = dl.view(s, 8, 1, 1) * (grid + delta.view(s, 8, 1, 1))
        return y.reshape(s, QK_K)


class IQ1_M(_LowBit, qtype="iq1_m"):
    """Bytes of ggml's ``quantize_iq1_m`` (weights ``x*x`` without an imatrix)."""

    cpu_slice = 64  # measured best on a 2-core VM (the torch path)

    @classmethod
    def _quantize(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        dev = x.device
        nb, n = 16, 16
        if w is None:
            weight = x * x
        else:
            weight = _imatrix_weights(x, w, _sigma2(x, two=True))
        xb = x.reshape(s * nb, n)
        wb = weight.reshape(s * nb, n)
        if base.compiled_impl(x) is compiled:
            # the blocks' work below (sort, search, lattice, refit) as one numba loop
            scale, best_k, gi = compiled.iq1_m_blocks(xb, wb, GROUP_MAX_EPS_IQ1_M)
            xx: Tensor | None = None
        else:
            mx = xb.abs().max(dim=1).values
            skip = mx < f32(GROUP_MAX_EPS_IQ1_M, x)
            order, wxs, ws = _sorted_split(xb, wb)
            xp, xm = _xpm(x)
            i1, i2 = _pairs(n, dev)
            if fused.used_for(x):  # the same search as one Triton kernel
                pick, scale = fused.iq1_m_search(wxs, ws, order)
            else:
                pick, scale = _iq1_m_search(wxs, ws, order, xp, xm, i1, i2)
            skip = skip | (pick < 0)
            pk = pick.clamp(min=0)
            best_k = pk % 4
            L = _split_levels(order, i1[pk // 4], i2[pk // 4])
            neg = scale < 0
            L = torch.where(neg.unsqueeze(1), 2 - L, L)
            scale = torch.where(neg, -scale, scale)
            best_k = torch.where(neg, 3 - best_k, best_k)
            best_k = torch.where(skip, torch.zeros_like(best_k), best_k)
            xx = _iq1m_xx(best_k, xp, xm)  # [B, 2, 3]
            gi, offg = _iq1_grid(xb, wb, L, scale, xx)
            scale = _iq1_refit(xb, wb, gi, xx, scale, offg)
            scale = torch.where(skip, torch.zeros_like(scale), scale)
            gi = torch.where(skip.unsqueeze(1), torch.zeros_like(gi), gi)
        # per super-block
        scales = scale.view(s, nb)
        max_scale = scales.max(dim=1, keepdim=True).values.clamp(min=0)
        zero_sb = max_scale == 0
        d = divc(max_scale, 15)
        idd = 1 / d
        l3 = nearest_int((idd * scales - 1) * 0.5).clamp_(0, 7).to(I64)  # [S, 16]
        masks = torch.tensor([0x00, 0x80, 0x08, 0x88], dtype=I64, device=dev)
        qh = (gi >> 8).view(s, nb, 2)
        qh = qh[:, :, 0] | (qh[:, :, 1] << 4)
        qh = qh | torch.where(zero_sb, 0, masks[best_k.view(s, nb)])
        # the final scale: a fit over the whole super-block with the block scales
        if xx is None:  # the same sums compiled with numba
            sumqx_f, sumq2_f = compiled.iq1_m_fit(x, weight, gi, best_k, l3)
        else:
            lv = lattice("iq1_s").on(dev)["levels"][gi.view(s, nb, 2)]  # [S, 16, 2, 8]
            q = torch.gather(xx.view(s, nb, 2, 3), 3, lv)
            q = (q * (2 * l3 + 1).to(F32).view(s, nb, 1, 1)).reshape(s, QK_K)
            wq = weight * q
            sumqx_f, sumq2_f = _seq_dot(wq, x), _seq_dot(wq, q)
        dfit = torch.where(sumq2_f > 0, sumqx_f / sumq2_f, d.view(-1))
        dfit = dfit * f32(1.1125, dfit)
        u16 = fp16_bytes(dfit).to(I64)
        u16 = u16[:, 0] | (u16[:, 1] << 8)  # [S]
        l3 = torch.where(zero_sb, torch.zeros_like(l3), l3)
        sc = (l3.view(s, 4, 4) << (3 * torch.arange(4, device=dev, dtype=I64))).sum(dim=2)
        top = torch.stack(
            [(u16 & 0x000F) << 12, (u16 & 0x00F0) << 8, (u16 & 0x0F00) << 4, u16 & 0xF000], dim=1
        )
        sc = sc | torch.where(zero_sb, torch.zeros_like(top), top)
        qs = (gi & 0xFF).reshape(s, 32).to(U8)
        return torch.cat([qs, qh.to(U8), _le_bytes(sc, 2)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        qs = blocks[:, :32].to(I64)
        qh = blocks[:, 32:48].to(I64)
        sc = _from_le(blocks[:, 48:56], 2)  # [S, 4]
        dbits = ((sc & 0xF000) >> torch.tensor([12, 8, 4, 0], device=dev)).sum(dim=1)
        d = fp16_from_bytes(_le_bytes(dbits.view(s, 1), 2))  # [S, 1]
        s3 = ((sc.unsqueeze(2) >> (3 * torch.arange(4, device=dev))) & 7).reshape(s, 16)
        dl = d * (2 * s3 + 1).to(F32)  # [S, 16]
        qh2 = (qh.unsqueeze(2) >> torch.tensor([0, 4], device=dev)).reshape(s, 32)
        idx = qs | ((qh2 & 7) << 8)
        delta = torch.where((qh2 & 0x08) == 0, IQ1_DELTA, -IQ1_DELTA).to(F32)
        grid = _grid_values("iq1_m", blocks)[idx]  # [S, 32, 8]
        y = dl.view(s, 16, 1, 1) * (grid.view(s, 16, 2, 8) + delta.view(s, 16, 2, 1))
        return y.reshape(s, QK_K)


def _iq1m_xx(best_k: Tensor, xp: Tensor, xm: Tensor) -> Tensor:
    """The level values of IQ1_M's two groups: ``x_p`` or ``x_m`` by ``best_k``'s bits
    (first group: ``best_k < 2``, second: ``best_k % 2 == 0`` take ``x_p``) → ``[B, 2, 3]``."""
    first = (best_k < 2).view(-1, 1)
    second = (best_k % 2 == 0).view(-1, 1)
    g0 = torch.where(first, xp.view(1, 3), xm.view(1, 3))
    g1 = torch.where(second, xp.view(1, 3), xm.view(1, 3))
    return torch.stack([g0, g1], dim=1)
