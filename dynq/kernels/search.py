"""ggml's scale searches (``make_*_quants`` in ggml-quants.c), vectorised over blocks.

Every function takes a batch of ``B`` groups of ``n`` values (``x`` of shape ``[B, n]``) and
returns what the C function returns for each group, computed with the same float32 operations
in the same order (see :mod:`dynq.kernels.base`). Groups are held transposed, ``[n, B]``, so
that the per-element accumulations (:func:`seq_sum` over ``n``) read contiguous slices.

Where the C tries candidate scales independently of each other (``make_qx_quants``,
``make_qp_quants``, IQ4's search) the candidates are an extra dimension ``T`` (``[n, T, B]``)
and only the "is it better" comparisons run in sequence; where a winning candidate changes the
next ones (``make_qkx2/3_quants`` move ``min``) they run one after the other.

This torch code is the portable reference. Each function first hands over to the compiled
version :func:`~dynq.kernels.base.compiled_impl` names for its tensor (numba on the CPU, Triton
on a GPU), which computes the same bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels.base import (
    F32,
    I32,
    compiled_impl,
    first_abs_max,
    first_min,
    nearest_int,
    rdiv,
    seq_sum,
    trunc_i32,
)

__all__ = [
    "f32",
    "first_strict_min",
    "make_q3_quants",
    "make_qkx_quants",
    "make_qp_quants",
    "make_qx_quants",
]

GROUP_MAX_EPS = 1e-15


def f32(v: float, like: Tensor) -> Tensor:
    """A float32 scalar tensor (C's ``1e-15f``, ``0.1f``, …) on ``like``'s device."""
    return torch.tensor(v, dtype=F32, device=like.device)


def _trial_consts(c: float, steps: range, like: Tensor) -> Tensor:
    """``c*is`` in float32 for ``is`` in ``steps`` (C: ``0.1f*is`` with int ``is``)."""
    s = torch.tensor(list(steps), dtype=F32, device=like.device)
    return f32(c, like) * s


def first_strict_min(err: Tensor) -> Tensor:
    """Index along the last dim that ``if (e[t] < best) best = e[t]`` ends on, from ``best = e[0]``.

    ``err[..., t]`` may be NaN or +inf for a candidate that can never be taken. A NaN first
    value is never replaced (every comparison with it is false).
    """
    e = torch.nan_to_num(err, nan=float("inf"))
    idx = e.argmin(dim=-1)
    first_nan = torch.isnan(err[..., 0])
    return torch.where(first_nan, torch.zeros_like(idx), idx)


#: elements of a ``[n, T, B]`` candidate tensor worth processing at once: big enough to amortise
#: the per-op overhead, small enough to stay in cache (measured on a 2-core AVX-512 machine)
TRIAL_ELEMS = 1 << 19
#: how many times more a slice holds on a GPU, where launches, not caches, are the cost
CUDA_TRIAL_FACTOR = 512


def in_slices(fn, per_group: int, x: Tensor, *rest: Tensor | None, elems: int = 0):  # type: ignore[no-untyped-def]
    """Run ``fn(x, *rest)`` over slices of the groups (dim 0) so that a slice's candidate
    tensor holds about ``elems`` (default :data:`TRIAL_ELEMS`) elements; concatenate the results
    (tuples too)."""
    b = x.shape[0]
    elems = elems or TRIAL_ELEMS
    if x.device.type != "cpu":
        elems *= CUDA_TRIAL_FACTOR
    step = max(64, elems // per_group)
    if b <= step:
        return fn(x, *rest)
    parts = [
        fn(x[i : i + step], *(r if r is None else r[i : i + step] for r in rest))
        for i in range(0, b, step)
    ]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))
    return torch.cat(parts)


def sequential_best(sumlx: Tensor, suml2: Tensor, first_gt: bool = False) -> tuple[Tensor, Tensor]:
    """The candidate loop shared by ``make_qx_quants`` and IQ4's search, over ``[T, B]`` sums::

        scale = suml2[0] ? sumlx[0]/suml2[0] : 0;  best = scale*sumlx[0];
        for t: if (suml2[t] > 0 && sumlx[t]*sumlx[t] > best*suml2[t])
                   { scale = sumlx[t]/suml2[t]; best = scale*sumlx[t]; }

    (IQ4's first test is ``suml2[0] > 0``: ``first_gt``.) Returns ``(scale [B], index of the
    last candidate taken [B])``. Everything that does not depend on ``best`` is computed for all
    candidates at once; only the comparisons run in order. (A ``best`` of ``0*sumlx`` is ±0;
    its sign cannot change ``best*suml2 < sumlx²``.)
    """
    ns = sumlx / suml2  # [T, B]
    nb = ns * sumlx
    sq = sumlx * sumlx
    pos = suml2 > 0
    first = pos[0] if first_gt else suml2[0] != 0
    best = torch.where(first, nb[0], torch.zeros_like(nb[0]))
    idx = torch.zeros(sumlx.shape[1], dtype=torch.int64, device=sumlx.device)
    for t in range(1, sumlx.shape[0]):
        take = sq[t] > best * suml2[t]
        take &= pos[t]
        best = torch.where(take, nb[t], best)
        idx = torch.where(take, t, idx)
    scale = ns.gather(0, idx.view(1, -1)).squeeze(0)
    # no candidate taken and suml2[0] == 0: the first scale is 0, not 0/0
    scale = torch.where((idx == 0) & ~first, torch.zeros_like(scale), scale)
    return scale, idx


def make_qx_quants(x: Tensor, nmax: int, qw: Tensor | None) -> tuple[Tensor, Tensor]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)``: symmetric scale search.

    ``x``, ``qw``: ``[B, n]`` (``qw`` None → weights ``x*x``). Returns ``(scale [B], L [B, n])``
    with ``L`` in ``[0, 2*nmax)`` (int32), or all zero for an all-zero group.

    The 19 candidate scales do not depend on each other, so they are one tensor dimension; only
    the "is it better" comparisons run in sequence. The winner's levels are recomputed at the end.
    """
    impl = compiled_impl(x)
    if impl is not None:
        return impl.make_qx_quants(x, nmax, qw, _qx_numerators(nmax, x))
    return in_slices(lambda a, b: _make_qx_quants(a, nmax, b), x.shape[1] * 19, x, qw)


def _qx_numerators(nmax: int, like: Tensor) -> Tensor:
    """``make_qx_quants``' candidate numerators: ``nmax``, then ``nmax + 0.1f*is``, is = ±1..9."""
    steps = [i for i in range(-9, 10) if i != 0]
    c = _trial_consts(0.1, steps, like)
    return torch.cat([torch.full((1,), float(nmax), dtype=F32, device=like.device), c + nmax])


def _make_qx_quants(x: Tensor, nmax: int, qw: Tensor | None) -> tuple[Tensor, Tensor]:
    b, n = x.shape
    amax, mx = first_abs_max(x)  # [B, 1]
    zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
    # an all-zero group is answered below; a finite inverse scale keeps the rounding exact
    mx = torch.where(zero.unsqueeze(1), torch.ones_like(mx), mx)
    w = x * x if qw is None else qw
    num = _qx_numerators(nmax, x)  # candidate inverse scales -num/max
    nt = num.shape[0]
    iscale = torch.div((-num).view(-1, 1), mx.view(1, -1))  # [T, B]
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    # (layout [n, T, B]: the innermost dim is contiguous in every operand, which vectorises)
    # |iscale*x| <= nmax + 1, where nearest_int is round half to even: torch.round (a -0.0 it
    # gives for small negatives where ggml has 0 only ever multiplies into zero terms)
    lf = iscale.unsqueeze(0) * xt.unsqueeze(1)  # [n, T, B]
    lf.round_().clamp_(-nmax, nmax - 1)
    buf = torch.empty((n, 2, nt, b), dtype=F32, device=x.device)
    torch.mul((wt * xt).unsqueeze(1), lf, out=buf[:, 0])
    torch.mul(wt.unsqueeze(1), lf, out=buf[:, 1]).mul_(lf)
    del lf
    sums = seq_sum(buf)
    del buf
    sumlx, suml2 = sums[0], sums[1]  # [T, B]
    scale, idx = sequential_best(sumlx, suml2)
    isc = iscale.gather(0, idx.view(1, -1)).squeeze(0)
    L = isc.view(-1, 1) * x
    L = trunc_i32(L.round_().clamp_(-nmax, nmax - 1)) + nmax
    L = L * (~zero).to(I32).unsqueeze(1)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L


def make_qkx_quants(
    x: Tensor,
    w: Tensor,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``make_qkx2_quants`` / ``make_qkx3_quants`` (weights given): scale-and-min search.

    ``x``, ``w``: ``[B, n]``. Returns ``(scale [B], the_min [B], L [B, n] int32 in [0, nmax])``
    where the group dequantizes as ``scale*L - the_min``.

    The candidates run one after the other as in the C: a candidate that wins moves ``min``,
    and every later candidate's inverse scale and rounding use the moved ``min``. The levels of
    the winning candidate are recomputed once at the end from its inverse scale and ``min``.
    """
    c = f32(rmin, x) + _trial_consts(rdelta, range(nstep + 1), x) + nmax
    impl = compiled_impl(x)
    if impl is not None:
        return impl.make_qkx_quants(x, w, nmax, c, use_mad)
    b, n = x.shape
    mn = first_min(x, 1).squeeze(1)
    mx = x.max(dim=1).values
    mn = torch.where(mn > 0, torch.zeros_like(mn), mn)
    mn0 = mn
    flat = mx <= mn  # qkx2: max == min; identical for finite input
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    buf = torch.empty((n, 3, b), dtype=F32, device=x.device)
    buf[:, 0] = wt
    torch.mul(wt, xt, out=buf[:, 1])
    sums = seq_sum(buf[:, :2], first=True)  # sum_w = weights[0]; sum_x = sum_w*x[0]; ...
    sum_w, sum_x = sums[0].clone(), sums[1].clone()
    iscale = rdiv(nmax, mx - mn)
    scale = 1 / iscale
    use_is = _finite_or_zero(iscale)
    L = _levels(use_is, xt, mn, nmax)
    diff = scale * L + mn - xt
    diff = diff.abs_() if use_mad else diff.mul_(diff)
    best = seq_sum(diff.mul_(wt))  # [B]
    best_is, best_mn = use_is, mn
    for ci in c.tolist():
        iscale = _finite_or_zero(rdiv(ci, mx - mn))
        la = _levels(iscale, xt, mn, nmax)
        wl = torch.mul(wt, la, out=buf[:, 0])
        torch.mul(wl, la, out=buf[:, 1])
        torch.mul(wl, xt, out=buf[:, 2])
        s3 = seq_sum(buf)
        sum_l, sum_l2, sum_xl = s3[0], s3[1], s3[2]
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        this_scale = torch.where(pos, sum_xl / sum_l2, this_scale)
        diff = la.mul_(this_scale).add_(this_min).sub_(xt)
        diff = diff.abs_() if use_mad else diff.mul_(diff)
        err = seq_sum(diff.mul_(wt))
        take = (D > 0) & (err < best)
        best_is = torch.where(take, iscale, best_is)
        best_mn = torch.where(take, mn, best_mn)
        best = torch.where(take, err, best)
        scale = torch.where(take, this_scale, scale)
        mn = torch.where(take, this_min, mn)
    L = trunc_i32(_levels(best_is, xt, best_mn, nmax)).t()
    # a flat group: L = 0, scale 0, the_min = -min
    L = torch.where(flat.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    mn = torch.where(flat, mn0, mn)
    return scale, -mn, L


def _finite_or_zero(iscale: Tensor) -> Tensor:
    """An infinite inverse scale (a range so small that ``nmax/range`` overflows) as 0.

    With it every level becomes 0, which is what ``nearest_int`` of ``±inf``/NaN gives in the
    C after clamping to ``[0, nmax]``; :func:`_levels` can then round with plain float ops.
    """
    return torch.where(torch.isfinite(iscale), iscale, torch.zeros_like(iscale))


def _levels(iscale: Tensor, xt: Tensor, mn: Tensor, nmax: int) -> Tensor:
    """``MAX(0, MIN(nmax, nearest_int(iscale*(x - min))))`` as float32 ``[n, B]``.

    ``nearest_int`` is round half to even (``torch.round``) for ``|v| <= 2**22``; here
    ``v <= iscale*(max - min)``, about ``nmax``, and ``iscale`` is finite.
    """
    v = (xt - mn).mul_(iscale)
    return v.round_().clamp_(0, nmax)


def make_qp_quants(x: Tensor, nmax: int, w: Tensor) -> tuple[Tensor, Tensor]:
    """``make_qp_quants(n, nmax, x, L, quant_weights)``: quantize non-negative scales.

    ``x``, ``w``: ``[B, n]``. Returns ``(scale [B], L [B, n] int32)``.
    """
    steps = [i for i in range(-4, 5) if i != 0]
    c = _trial_consts(0.1, steps, x) + nmax
    impl = compiled_impl(x)
    if impl is not None:
        return impl.make_qp_quants(x, nmax, w, c)
    mx = x.max(dim=1).values.clamp(min=0)
    zero = mx < f32(GROUP_MAX_EPS, x)
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    iscale0 = rdiv(nmax, mx)  # [B]
    l0 = nearest_int(iscale0 * xt) & 0xFF  # L is uint8_t in the C
    scale0 = 1 / iscale0
    diff = xt - scale0 * l0.to(F32)
    mse0 = seq_sum(wt * diff * diff)
    iscale = c.view(1, -1) / mx.view(-1, 1)  # [B, T]
    scale_t = 1 / iscale
    lt = nearest_int(iscale.unsqueeze(0) * xt.unsqueeze(2)).clamp_(max=nmax)
    diff = xt.unsqueeze(2) - scale_t.unsqueeze(0) * lt.to(F32)
    mse = seq_sum(wt.unsqueeze(2) * diff * diff)
    pick = first_strict_min(torch.cat([mse0.unsqueeze(1), mse], dim=1))
    ti = (pick - 1).clamp(min=0)
    isc = torch.where(pick > 0, torch.gather(iscale, 1, ti.view(-1, 1)).squeeze(1), iscale0)
    lf = nearest_int(isc * xt).clamp_(max=nmax)  # [n, B]
    Lf = (lf & 0xFF).to(F32)  # stored in uint8_t L[]; the sums use the int l
    lf = lf.to(F32)
    wx = wt * xt
    sumlx = seq_sum(wx * lf)
    suml2 = seq_sum(wt * lf * lf)
    Lf, sumlx, suml2 = _descend(xt, wt, wx, Lf, sumlx, suml2, None, nmax, qp=True)
    scale = torch.where(suml2 > 0, sumlx / suml2, torch.zeros_like(sumlx))
    L = trunc_i32(Lf).t()
    L = torch.where(zero.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L


def make_q3_quants(x: Tensor, nmax: int) -> tuple[Tensor, Tensor]:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)``: symmetric scale with weights ``x*x``.

    Returns ``(scale [B], L [B, n] int32 in [0, 2*nmax))``, L all zero for an all-zero group.
    """
    impl = compiled_impl(x)
    if impl is not None:
        return impl.make_q3_quants(x, nmax)
    amax, mx = first_abs_max(x)
    zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
    iscale = rdiv(-nmax, mx)  # [B, 1]
    xt = x.t().contiguous()  # [n, B]
    Lf = nearest_int(iscale.view(1, -1) * xt).clamp_(-nmax, nmax - 1).to(F32)
    wt = xt * xt
    wx = wt * xt
    sumlx = seq_sum(wx * Lf)
    suml2 = seq_sum(wt * Lf * Lf)
    Lf, sumlx, suml2 = _descend(xt, wt, wx, Lf, sumlx, suml2, -nmax, nmax - 1, qp=False)
    scale = torch.where(suml2 > 0, sumlx / suml2, torch.zeros_like(sumlx))
    L = trunc_i32(Lf).t() + nmax
    L = torch.where(zero.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L


def _descend(
    xt: Tensor,
    wt: Tensor,
    wx: Tensor,
    Lf: Tensor,
    sumlx: Tensor,
    suml2: Tensor,
    lo: int | None,
    hi: int,
    qp: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``for (itry < 5)`` refinement of ``make_q3_quants`` (``qp`` False) and
    ``make_qp_quants`` (``qp`` True): for each element in turn, move its level to
    ``nearest_int(x*sl2/slx)`` if that raises ``sumlx²/suml2``.

    ``[n, B]`` tensors ``xt``, ``wt``, ``wx`` (= w*x), levels ``Lf`` (float); ``[B]`` sums.
    A group whose pass changed nothing is final (the next pass would see the same state), so
    each pass runs only on the groups the previous one changed.
    """
    n = xt.shape[0]
    Lf = Lf.clone()
    idx = None  # all groups
    for _ in range(5):
        if idx is None:
            X, W, WX, L, sx, s2 = xt, wt, wx, Lf, sumlx, suml2
        else:
            X, W, WX = xt[:, idx], wt[:, idx], wx[:, idx]
            L, sx, s2 = Lf[:, idx], sumlx[idx], suml2[idx]
        changed = torch.zeros(X.shape[1], dtype=torch.bool, device=xt.device)
        for i in range(n):
            wi, wxi, xi, li = W[i], WX[i], X[i], L[i]
            slx = sx - wxi * li
            sl2 = s2 - wi * li * li
            ok = (slx > 0) & (sl2 > 0) if qp else slx > 0
            new_i = nearest_int(xi * sl2 / slx).clamp_(min=lo, max=hi)
            new_l = new_i.to(F32)
            ok &= new_l != li
            slx = slx + wxi * new_l
            sl2 = sl2 + wi * new_l * new_l
            if not qp:
                ok &= sl2 > 0
            ok &= slx * slx * s2 > sx * sx * sl2
            stored = (new_i & 0xFF).to(F32) if qp else new_l  # qp's L[] is uint8_t
            L[i] = torch.where(ok, stored, li)
            sx = torch.where(ok, slx, sx)
            s2 = torch.where(ok, sl2, s2)
            changed |= ok
        if idx is None:
            sumlx, suml2 = sx, s2
            idx = changed.nonzero().squeeze(1)
        else:
            Lf[:, idx] = L
            sumlx = sumlx.index_copy(0, idx, sx)
            suml2 = suml2.index_copy(0, idx, s2)
            idx = idx[changed]
        if idx.numel() == 0:
            break
    return Lf, sumlx, suml2
