"""ggml's scale searches (``make_*_quants`` in ggml-quants.c), vectorised over blocks.

Every function takes a batch of ``B`` groups of ``n`` values (``x`` of shape ``[B, n]``) and
returns what the C function returns for each group, computed with the same float32 operations
in the same order (see :mod:`dynq.kernels.base`). The C loops over candidate scales become an
extra tensor dimension ``T``; the per-element accumulations run over ``n`` with :func:`seq_sum`
on ``[n, B, T]`` tensors (so every slice summed is contiguous).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels.base import F32, I32, first_abs_max, first_min, nearest_int, rdiv, seq_sum

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


def _gather_trial(lt: Tensor, idx: Tensor) -> Tensor:
    """``lt`` ``[n, B, T]``, ``idx`` ``[B]`` → ``[B, n]`` (the chosen trial's values)."""
    n, b, _ = lt.shape
    g = torch.gather(lt, 2, idx.view(1, b, 1).expand(n, b, 1)).squeeze(2)
    return g.t()


def make_qx_quants(x: Tensor, nmax: int, qw: Tensor | None) -> tuple[Tensor, Tensor]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)``: symmetric scale search.

    ``x``, ``qw``: ``[B, n]`` (``qw`` None → weights ``x*x``). Returns ``(scale [B], L [B, n])``
    with ``L`` in ``[0, 2*nmax)`` (int32), or all zero for an all-zero group.
    """
    b = x.shape[0]
    amax, mx = first_abs_max(x)  # [B, 1]
    zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
    w = x * x if qw is None else qw
    # candidate inverse scales: the first, then is = -9..-1, 1..9
    steps = [i for i in range(-9, 10) if i != 0]
    c = _trial_consts(0.1, steps, x)
    num = torch.cat([torch.full((1,), float(nmax), dtype=F32, device=x.device), c + nmax])
    iscale = (-num).view(1, -1) / mx  # [B, T]
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    v = iscale.unsqueeze(0) * xt.unsqueeze(2)  # [n, B, T]
    lt = nearest_int(v).clamp_(-nmax, nmax - 1)
    lf = lt.to(F32)
    wx = (wt * xt).unsqueeze(2)
    sumlx = seq_sum(wx * lf)  # [B, T]
    wl = wt.unsqueeze(2) * lf
    suml2 = seq_sum(wl * lf)
    del wl, lf, v
    # the first candidate: scale = suml2 ? sumlx/suml2 : 0; best = scale*sumlx
    s0 = torch.where(suml2[:, 0] != 0, sumlx[:, 0] / suml2[:, 0], torch.zeros_like(amax[:, 0]))
    scale = s0
    best = scale * sumlx[:, 0]
    idx = torch.zeros(b, dtype=torch.int64, device=x.device)
    for t in range(1, num.shape[0]):
        slx, sl2 = sumlx[:, t], suml2[:, t]
        take = (sl2 > 0) & (slx * slx > best * sl2)
        new_scale = slx / sl2
        scale = torch.where(take, new_scale, scale)
        best = torch.where(take, new_scale * slx, best)
        idx = torch.where(take, t, idx)
    L = _gather_trial(lt, idx) + nmax
    L = torch.where(zero.unsqueeze(1), torch.zeros_like(L), L)
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
    and every later candidate's inverse scale and rounding use the moved ``min``.
    """
    mn = first_min(x, 1).squeeze(1)
    mx = x.max(dim=1).values
    mn = torch.where(mn > 0, torch.zeros_like(mn), mn)
    mn0 = mn
    flat = mx <= mn  # qkx2: max == min; identical for finite input
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    sums = seq_sum(torch.stack([wt, wt * xt], dim=1))  # [2, B]
    sum_w, sum_x = sums[0], sums[1]
    iscale = rdiv(nmax, mx - mn)
    scale = 1 / iscale
    L = nearest_int(iscale * (xt - mn)).clamp_(0, nmax).to(F32)  # [n, B]
    diff = scale * L + mn - xt
    diff = diff.abs() if use_mad else diff * diff
    best = seq_sum(wt * diff)  # [B]
    c = f32(rmin, x) + _trial_consts(rdelta, range(nstep + 1), x)
    c = (c + nmax).tolist()
    for ci in c:
        iscale = rdiv(ci, mx - mn)
        la = nearest_int(iscale * (xt - mn)).clamp_(0, nmax).to(F32)
        wl = wt * la
        s3 = seq_sum(torch.stack([wl, wl * la, wl * xt], dim=1))
        sum_l, sum_l2, sum_xl = s3[0], s3[1], s3[2]
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        this_scale = torch.where(pos, sum_xl / sum_l2, this_scale)
        diff = this_scale * la + this_min - xt
        diff = diff.abs() if use_mad else diff * diff
        err = seq_sum(wt * diff)
        take = (D > 0) & (err < best)
        L = torch.where(take, la, L)
        best = torch.where(take, err, best)
        scale = torch.where(take, this_scale, scale)
        mn = torch.where(take, this_min, mn)
    L = L.to(I32).t()
    # a flat group: L = 0, scale 0, the_min = -min
    L = torch.where(flat.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    mn = torch.where(flat, mn0, mn)
    return scale, -mn, L


def make_qp_quants(x: Tensor, nmax: int, w: Tensor) -> tuple[Tensor, Tensor]:
    """``make_qp_quants(n, nmax, x, L, quant_weights)``: quantize non-negative scales.

    ``x``, ``w``: ``[B, n]``. Returns ``(scale [B], L [B, n] int32)``.
    """
    b, n = x.shape
    mx = x.max(dim=1).values.clamp(min=0)
    zero = mx < f32(GROUP_MAX_EPS, x)
    xt = x.t().contiguous()  # [n, B]
    wt = w.t().contiguous()
    iscale0 = rdiv(nmax, mx)  # [B]
    l0 = nearest_int(iscale0 * xt) & 0xFF  # L is uint8_t in the C
    scale0 = 1 / iscale0
    diff = xt - scale0 * l0.to(F32)
    mse0 = seq_sum(wt * diff * diff)
    steps = [i for i in range(-4, 5) if i != 0]
    c = _trial_consts(0.1, steps, x) + nmax
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
    for _ in range(5):
        changed = torch.zeros(b, dtype=torch.bool, device=x.device)
        for i in range(n):
            wi, wxi, xi, li = wt[i], wx[i], xt[i], Lf[i]
            slx = sumlx - wxi * li
            sl2 = suml2 - wi * li * li
            ok = (slx > 0) & (sl2 > 0)
            new_i = nearest_int(xi * sl2 / slx).clamp_(max=nmax)
            new_l = new_i.to(F32)
            ok &= new_l != li
            slx = slx + wxi * new_l
            sl2 = sl2 + wi * new_l * new_l
            ok &= slx * slx * suml2 > sumlx * sumlx * sl2
            Lf[i] = torch.where(ok, (new_i & 0xFF).to(F32), li)
            sumlx = torch.where(ok, slx, sumlx)
            suml2 = torch.where(ok, sl2, suml2)
            changed |= ok
        if not bool(changed.any()):
            break
    scale = torch.where(suml2 > 0, sumlx / suml2, torch.zeros_like(sumlx))
    L = Lf.to(I32).t()
    L = torch.where(zero.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L


def make_q3_quants(x: Tensor, nmax: int) -> tuple[Tensor, Tensor]:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)``: symmetric scale with weights ``x*x``.

    Returns ``(scale [B], L [B, n] int32 in [0, 2*nmax))``, L all zero for an all-zero group.
    """
    b, n = x.shape
    amax, mx = first_abs_max(x)
    zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
    iscale = rdiv(-nmax, mx)  # [B, 1]
    xt = x.t().contiguous()  # [n, B]
    Lf = nearest_int(iscale.view(1, -1) * xt).clamp_(-nmax, nmax - 1).to(F32)
    wt = xt * xt
    wx = wt * xt
    sumlx = seq_sum(wx * Lf)
    suml2 = seq_sum(wt * Lf * Lf)
    for _ in range(5):
        changed = torch.zeros(b, dtype=torch.bool, device=x.device)
        for i in range(n):
            wi, wxi, xi, li = wt[i], wx[i], xt[i], Lf[i]
            slx = sumlx - wxi * li
            ok = slx > 0
            sl2 = suml2 - wi * li * li
            new_l = nearest_int(xi * sl2 / slx).clamp_(-nmax, nmax - 1).to(F32)
            ok &= new_l != li
            slx = slx + wxi * new_l
            sl2 = sl2 + wi * new_l * new_l
            ok &= (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            Lf[i] = torch.where(ok, new_l, li)
            sumlx = torch.where(ok, slx, sumlx)
            suml2 = torch.where(ok, sl2, suml2)
            changed |= ok
        if not bool(changed.any()):
            break
    scale = torch.where(suml2 > 0, sumlx / suml2, torch.zeros_like(sumlx))
    L = Lf.to(I32).t() + nmax
    L = torch.where(zero.unsqueeze(1), torch.zeros_like(L), L)
    scale = torch.where(zero, torch.zeros_like(scale), scale)
    return scale, L
