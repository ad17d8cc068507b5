"""The i-quants. For now the non-linear 4-bit ones: IQ4_NL and IQ4_XS.

(The 1–3 bit grid types — IQ1_S, IQ1_M, IQ2_*, IQ3_* — need ggml's lattice tables and
neighbour searches; they are meant to be added here as further :class:`BlockKernel` classes.)
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from dynq.kernels.base import (
    F32,
    I32,
    U8,
    BlockKernel,
    first_abs_max,
    fp16_bytes,
    fp16_from_bytes,
    nearest_int,
    pack_nibbles,
    seq_sum,
    sqrtf,
)
from dynq.kernels.search import GROUP_MAX_EPS, f32, in_slices, sequential_best

__all__ = ["IQ4_NL", "IQ4_XS", "KVALUES_IQ4NL"]

#: ggml's ``kvalues_iq4nl``
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)

_NTRY = 7  # quantize_iq4_nl / quantize_iq4_xs pass ntry = 7, with or without an imatrix


def _kv(like: Tensor) -> Tensor:
    return torch.tensor(KVALUES_IQ4NL, dtype=F32, device=like.device)


@cache
def _tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For ``floor(v)`` in ``[-130, 130]`` (offset by 130): ``mu`` = the index of the first value
    above it (clamped to ``1..15``), and the values ``kv[mu-1]``, ``kv[mu]`` around it.

    The values are integers, so ``kv[k] <= v`` exactly when ``kv[k] <= floor(v)``.
    """
    f = torch.arange(-130, 131, dtype=torch.float64)
    kv = torch.tensor(KVALUES_IQ4NL, dtype=torch.float64)
    mu = (kv.view(1, -1) <= f.view(-1, 1)).sum(dim=1).clamp(1, 15)
    return mu.to(device), kv[mu - 1].to(F32).to(device), kv[mu].to(F32).to(device)


def best_index_iq4(v: Tensor) -> tuple[Tensor, Tensor]:
    """ggml's ``best_index_int8(16, kvalues_iq4nl, v)`` → ``(index int64, value float32)``.

    The binary search brackets ``v`` between neighbouring values ``lo < v < hi`` and takes
    ``lo`` if ``v - lo < hi - v`` (ties go up); below the first or above the last value the
    bracket is the first or last pair, which gives the same answer.
    """
    mu_t, lo_t, hi_t = _tables(v.device)
    k = torch.nan_to_num(v, nan=1000.0).floor_().clamp_(-130, 130).add_(130).long().view(-1)
    lo = lo_t.index_select(0, k).view(v.shape)
    hi = hi_t.index_select(0, k).view(v.shape)
    c = (v - lo) < (hi - v)
    idx = mu_t.index_select(0, k).view(v.shape) - c.long()
    q = hi - c.to(F32) * (hi - lo)  # the value at idx, exactly (small integers)
    return idx, q


def _block_scales(x: Tensor, w: Tensor) -> Tensor:
    """The per-32-block scale search of ``quantize_row_iq4_nl_impl`` (ntry = 7).

    ``x``, ``w``: ``[B, 32]`` → ``scales [B]`` (0 for an all-zero block).
    """
    return in_slices(_block_scales_1, 32 * (2 * _NTRY + 2), x, w, elems=1 << 17)


def _block_scales_1(x: Tensor, w: Tensor) -> Tensor:
    b = x.shape[0]
    kv = _kv(x)
    amax, mx = first_abs_max(x)  # [B, 1]
    zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
    mx = torch.where(zero.unsqueeze(1), torch.ones_like(mx), mx)  # answered below
    d0 = (-mx) / kv[0]
    id0 = 1 / d0  # [B, 1]
    # the first candidate, then itry = -7..7: id = (itry + values[0])/max
    num = torch.tensor(
        [float(i + KVALUES_IQ4NL[0]) for i in range(-_NTRY, _NTRY + 1)], dtype=F32, device=x.device
    )
    ids = torch.cat([id0.view(1, -1), torch.div(num.view(-1, 1), mx.view(1, -1))])  # [T, B]
    nt = ids.shape[0]
    xt = x.t().contiguous()  # [32, B]
    wt = w.t().contiguous()
    _, q = best_index_iq4(ids.unsqueeze(0) * xt.unsqueeze(1))  # [32, T, B]
    buf = torch.empty((32, 2, nt, b), dtype=F32, device=x.device)
    wq = torch.mul(wt.unsqueeze(1), q, out=buf[:, 1])
    torch.mul(wq, xt.unsqueeze(1), out=buf[:, 0])
    wq.mul_(q)
    del q
    sums = seq_sum(buf)
    d, _ = sequential_best(sums[0], sums[1], first_gt=True)  # sumqx, sumq2: [T, B]
    return torch.where(zero, torch.zeros_like(d), d)


def _weights(x: Tensor, w: Tensor | None) -> Tensor:
    """``qw*sqrtf(sigma2 + x²)`` (sigma2 = 2/size · Σx² over the super-block ``x`` ``[S, size]``)
    with an imatrix, ``x²`` without."""
    if w is None:
        return x * x
    xt = x.t()
    sigma2 = seq_sum(xt * xt).unsqueeze(1) * (2.0 / x.shape[1])
    return w * sqrtf(sigma2 + x * x)


class IQ4_NL(BlockKernel, qtype="iq4_nl"):
    """Bytes of ggml's ``quantize_iq4_nl`` (``quantize_row_iq4_nl_impl`` with one 32-block per
    super-block, ntry = 7, with or without an imatrix)."""

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        d = _block_scales(x, _weights(x, w))  # [B]
        dh = fp16_bytes(d)
        idv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
        L, _ = best_index_iq4(idv.unsqueeze(1) * x)
        return torch.cat([dh, pack_nibbles(L[:, :16], L[:, 16:])], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        kv = _kv(blocks)
        d = fp16_from_bytes(blocks[:, :2])
        q = blocks[:, 2:].to(torch.int64)
        idx = torch.cat([q & 0xF, q >> 4], dim=1)
        return d * kv[idx]


class IQ4_XS(BlockKernel, qtype="iq4_xs"):
    """Bytes of ggml's ``quantize_iq4_xs`` (``quantize_row_iq4_nl_impl`` with 256-element
    super-blocks of eight 32-blocks and 6-bit block scales, ntry = 7)."""

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        weight = _weights(x, w)
        scales = _block_scales(x.reshape(s * 8, 32), weight.reshape(s * 8, 32)).view(s, 8)
        _, max_scale = first_abs_max(scales)  # [S, 1]
        d = -max_scale / 32
        idv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
        l6 = nearest_int(idv * scales).clamp_(-32, 31)  # [S, 8]
        dl = d * l6.to(F32)
        idl = torch.where(dl != 0, 1 / dl, torch.zeros_like(dl))
        L, _ = best_index_iq4(idl.unsqueeze(2) * x.view(s, 8, 32))  # [S, 8, 32]
        l6 = l6 + 32
        scales_l = pack_nibbles(l6[:, 0::2], l6[:, 1::2])  # [S, 4]
        shifts = (2 * torch.arange(8, dtype=I32, device=x.device)).view(1, 8)
        sh = ((l6 >> 4) << shifts).sum(dim=1, keepdim=True)  # uint16, little-endian
        scales_h = torch.cat([sh & 0xFF, sh >> 8], dim=1).to(U8)
        qs = pack_nibbles(L[:, :, :16], L[:, :, 16:]).reshape(s, 128)
        return torch.cat([fp16_bytes(d), scales_h, scales_l, qs], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        kv = _kv(blocks)
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, :2])
        sh = blocks[:, 2:4].to(I32)
        sh = sh[:, 0] | (sh[:, 1] << 8)
        sl = blocks[:, 4:8].to(I32)
        lo = torch.stack([sl & 0xF, sl >> 4], dim=2).reshape(s, 8)
        shifts = (2 * torch.arange(8, dtype=I32, device=blocks.device)).view(1, 8)
        hi = (sh.view(s, 1) >> shifts) & 3
        dl = (d * ((lo | (hi << 4)) - 32).to(F32)).reshape(s, 8, 1)
        q = blocks[:, 8:].to(torch.int64).reshape(s, 8, 16)
        idx = torch.cat([q & 0xF, q >> 4], dim=2)
        return (dl * kv[idx]).reshape(s, 256)
