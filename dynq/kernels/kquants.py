"""The k-quants: 256-element super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K."""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels import compiled
from dynq.kernels.base import (
    F32,
    I32,
    U8,
    BlockKernel,
    divc,
    first_abs_max,
    fp16_bytes,
    fp16_from_bytes,
    fp16_round,
    nearest_int,
    pack_nibbles,
    rdiv,
    seq_sum,
    sqrtf,
)
from dynq.kernels.search import (
    f32,
    make_q3_quants,
    make_qkx_quants,
    make_qp_quants,
    make_qx_quants,
)

__all__ = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]

QK_K = 256
GROUP_MAX_EPS = 1e-15


def _sum_x2(x: Tensor) -> Tensor:
    """``for (j) sumx2 += x[j]*x[j]`` over each row of ``x`` ``[B, n]`` → ``[B, 1]``."""
    xt = x.t()
    return seq_sum(xt * xt).unsqueeze(1)


def _max0(t: Tensor) -> Tensor:
    """``m = 0; for (j) if (t[j] > m) m = t[j];`` over the last dim (+0.0 unless some t > 0)."""
    m = t.max(dim=1, keepdim=True).values
    return torch.where(m > 0, m, torch.zeros_like(m))


def _imatrix_weights(x: Tensor, w: Tensor, sigma2: Tensor) -> Tensor:
    """``qw[l] * sqrtf(sigma2 + x[l]*x[l])`` for super-blocks ``x`` ``[S, 256]``."""
    return w * sqrtf(sigma2 + x * x)


def _requant(x: Tensor, d: Tensor, dm: Tensor | None, L: Tensor, lo: int, hi: int) -> Tensor:
    """The final pass of every k-quant: ``l = nearest_int((x + dm)/d)`` clamped to ``[lo, hi]``
    where ``d != 0`` (ggml's ``if (!d) continue;`` keeps the search's ``L`` elsewhere).

    ``x``, ``L``: ``[S, nsub, sub]``; ``d``, ``dm``: ``[S, nsub]``.
    """
    if compiled.used_for(x):
        return compiled.requant(x, d, dm, L, lo, hi)
    d3 = d.unsqueeze(2)
    num = x if dm is None else x + dm.unsqueeze(2)
    lq = nearest_int(num / d3).clamp_(lo, hi)
    keep = (d3 == 0).to(I32)  # an integer blend: torch.where is slow on big CPU tensors
    return lq.sub_(lq * keep).add_(L * keep)


def _pack_2bit(L: Tensor) -> Tensor:
    """``[S, 256]`` values 0..3 → 64 bytes; ``qs[32h + l]`` bit 2s is ``L[128h + 32s + l]``."""
    q = L.reshape(-1, 2, 4, 32)
    out = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return out.reshape(-1, 64).to(U8)


def _unpack_2bit(qs: Tensor) -> Tensor:
    """64 bytes → ``[S, 256]`` int32 values 0..3."""
    q = qs.to(I32).reshape(-1, 2, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=I32, device=qs.device).view(1, 1, 4, 1)
    return ((q >> shifts) & 3).reshape(-1, QK_K)


def _pack_scale_min_k4(ls: Tensor, lm: Tensor) -> Tensor:
    """Eight 6-bit scales and mins (``[S, 8]`` ints, taken as uint8) → the 12 ``scales`` bytes."""
    ls = ls & 0xFF
    lm = lm & 0xFF
    b0 = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    b1 = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    b2 = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return (torch.cat([b0, b1, b2], dim=1) & 0xFF).to(U8)


def _unpack_scale_min_k4(scales: Tensor) -> tuple[Tensor, Tensor]:
    """ggml's ``get_scale_min_k4`` for j = 0..7 → ``(sc, m)`` ``[S, 8]`` int32."""
    q = scales.to(I32).reshape(-1, 3, 4)
    d, m, md = q[:, 0], q[:, 1], q[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 6) << 4)], dim=1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 6) << 4)], dim=1)
    return sc, mn


def _pack_scales_q3(l6: Tensor) -> Tensor:
    """Sixteen 6-bit values (``[S, 16]`` ints 0..63) → Q3_K's 12 ``scales`` bytes."""
    lo = (l6[:, :8] & 0xF) | ((l6[:, 8:] & 0xF) << 4)
    h = ((l6 >> 4) & 3).reshape(-1, 4, 4)  # [S, group g = j/4, k = j%4]
    hi = h[:, 0] | (h[:, 1] << 2) | (h[:, 2] << 4) | (h[:, 3] << 6)
    return (torch.cat([lo, hi], dim=1) & 0xFF).to(U8)


def _unpack_scales_q3(scales: Tensor) -> Tensor:
    """Q3_K's 12 ``scales`` bytes → the 16 signed scales (``[S, 16]`` int32, ``-32..31``)."""
    q = scales.to(I32)
    lo = torch.cat([q[:, :8] & 0xF, q[:, :8] >> 4], dim=1)
    shifts = torch.tensor([0, 2, 4, 6], dtype=I32, device=q.device).view(1, 4, 1)
    hi = ((q[:, 8:12].unsqueeze(1) >> shifts) & 3).reshape(-1, 16)
    return (lo | (hi << 4)) - 32


def _q6_pack(L: Tensor) -> tuple[Tensor, Tensor]:
    """``[S, 256]`` values 0..63 → (ql 128 bytes, qh 64 bytes) of block_q6_K."""
    q = L.reshape(-1, 2, 4, 32)
    ql = pack_nibbles(q[:, :, 0:2].reshape(-1, 2, 64), q[:, :, 2:4].reshape(-1, 2, 64))
    h = q >> 4
    qh = h[:, :, 0] | (h[:, :, 1] << 2) | (h[:, :, 2] << 4) | (h[:, :, 3] << 6)
    return ql.reshape(-1, 128), qh.reshape(-1, 64).to(U8)


class Q6_K(BlockKernel, qtype="q6_k"):
    """Bytes of ggml's ``quantize_q6_K``: ``quantize_row_q6_K_ref`` without an imatrix,
    ``quantize_row_q6_K_impl`` (``make_qx_quants(16, 32, …, qw)``) with one."""

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        xs = x.reshape(s * 16, 16)
        ws = None if w is None else w.reshape(s * 16, 16)
        scales, L = make_qx_quants(xs, 32, ws)
        scales = scales.view(s, 16)
        L = L.view(s, 16, 16)
        amax, mx = first_abs_max(scales)  # [S, 1]
        zero = (amax < f32(GROUP_MAX_EPS, x)).squeeze(1)
        iscale = rdiv(-128, mx)
        d = 1 / iscale  # [S, 1]
        sc = nearest_int(iscale * scales).clamp_(max=127).to(torch.int8).to(I32)  # [S, 16]
        dq = fp16_round(d) * sc.to(F32)
        L = _requant(x.view(s, 16, 16), dq, None, L - 32, -32, 31) + 32
        L = L.reshape(s, QK_K)
        ql, qh = _q6_pack(L)
        out = torch.cat([ql, qh, (sc & 0xFF).to(U8), fp16_bytes(d)], dim=1)
        return out * (~zero).to(U8).unsqueeze(1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        ql = blocks[:, :128].to(I32).reshape(s, 2, 1, 64)
        qh = blocks[:, 128:192].to(I32).reshape(s, 2, 1, 32)
        sc = blocks[:, 192:208].contiguous().view(torch.int8).to(F32)
        d = fp16_from_bytes(blocks[:, 208:210])
        d = (d * sc).reshape(s, 16, 1)
        sh4 = torch.tensor([0, 4], dtype=I32, device=blocks.device).view(1, 1, 2, 1)
        lo = ((ql >> sh4) & 0xF).reshape(s, 2, 4, 32)  # [half, (nibble, l64) → q index]
        sh2 = torch.tensor([0, 2, 4, 6], dtype=I32, device=blocks.device).view(1, 1, 4, 1)
        hi = ((qh >> sh2) & 3).reshape(s, 2, 4, 32)
        q = ((lo | (hi << 4)) - 32).reshape(s, 16, 16).to(F32)
        return (d * q).reshape(s, QK_K)


class _Q45K(BlockKernel):
    """Shared by Q4_K and Q5_K (they differ in nmax, search parameters and the bit packing)."""

    nmax: int
    ref_search: tuple[float, float, int]

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        xs = x.reshape(s * 8, 32)
        if w is None:
            av_x = sqrtf(_sum_x2(xs) / 32)
            weights = av_x + xs.abs()
            rmin, rdelta, nstep = cls.ref_search
            scales, mins, L = make_qkx_quants(xs, weights, cls.nmax, rmin, rdelta, nstep, False)
            scales, mins = scales.view(s, 8), mins.view(s, 8)
            max_scale = _max0(scales)
            max_min = _max0(mins)
            inv_scale = torch.where(max_scale > 0, rdiv(63, max_scale), torch.zeros_like(max_scale))
            inv_min = torch.where(max_min > 0, rdiv(63, max_min), torch.zeros_like(max_min))
            ls = (nearest_int(inv_scale * scales) & 0xFF).clamp_(max=63)
            lm = (nearest_int(inv_min * mins) & 0xFF).clamp_(max=63)
            d = divc(max_scale, 63)
            dmin = divc(max_min, 63)
        else:
            sigma2 = 2 * _sum_x2(x) / QK_K  # [S, 1]
            weights = _imatrix_weights(x, w, sigma2).reshape(s * 8, 32)
            sw = seq_sum(weights.t()).view(s, 8)
            scales, mins, L = make_qkx_quants(xs, weights, cls.nmax, -0.9, 0.05, 36, False)
            scales, mins = scales.view(s, 8), mins.view(s, 8)
            d, ls = make_qp_quants(scales, 63, sw)
            dmin, lm = make_qp_quants(mins, 63, sw)
            if cls.nmax == 31:  # quantize_row_q5_K_impl has MIN(63, ls); q4_K's has not
                ls = ls.clamp(max=63)
                lm = lm.clamp(max=63)
            d, dmin = d.view(s, 1), dmin.view(s, 1)
        packed = _pack_scale_min_k4(ls, lm)
        sc, m = _unpack_scale_min_k4(packed)
        dq = fp16_round(d) * sc.to(F32)
        dmq = fp16_round(dmin) * m.to(F32)
        L = _requant(x.view(s, 8, 32), dq, dmq, L.view(s, 8, 32), 0, cls.nmax)
        return torch.cat([fp16_bytes(d), fp16_bytes(dmin), packed, cls._pack_q(L)], dim=1)

    @classmethod
    def _pack_q(cls, L: Tensor) -> Tensor:
        raise NotImplementedError


class Q4_K(_Q45K, qtype="q4_k"):
    """Bytes of ggml's ``quantize_q4_K``: ``quantize_row_q4_K_ref`` (``make_qkx2_quants(32, 15,
    …, -1, 0.1, 20)``) without an imatrix, ``quantize_row_q4_K_impl`` (``make_qkx3_quants`` and
    ``make_qp_quants``) with one."""

    nmax = 15
    ref_search = (-1.0, 0.1, 20)

    @classmethod
    def _pack_q(cls, L: Tensor) -> Tensor:
        q = L.reshape(-1, 4, 2, 32)
        return pack_nibbles(q[:, :, 0], q[:, :, 1]).reshape(-1, 128)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 0:2])
        dmin = fp16_from_bytes(blocks[:, 2:4])
        sc, m = _unpack_scale_min_k4(blocks[:, 4:16])
        d = (d * sc.to(F32)).reshape(s, 8, 1)
        dm = (dmin * m.to(F32)).reshape(s, 8, 1)
        q = blocks[:, 16:].to(I32).reshape(s, 4, 1, 32)
        sh = torch.tensor([0, 4], dtype=I32, device=blocks.device).view(1, 1, 2, 1)
        q = ((q >> sh) & 0xF).reshape(s, 8, 32).to(F32)
        return (d * q - dm).reshape(s, QK_K)


class Q5_K(_Q45K, qtype="q5_k"):
    """Bytes of ggml's ``quantize_q5_K``: ``quantize_row_q5_K_ref`` (``make_qkx2_quants(32, 31,
    …, -0.5, 0.1, 15)``) without an imatrix, ``quantize_row_q5_K_impl`` with one."""

    nmax = 31
    ref_search = (-0.5, 0.1, 15)

    @classmethod
    def _pack_q(cls, L: Tensor) -> Tensor:
        q = L.reshape(-1, 4, 2, 32)  # [S, k, (l1|l2), j]
        hb = (q >> 4) & 1
        shifts = (2 * torch.arange(4, dtype=I32, device=L.device)).view(1, 4, 1)
        qh = ((hb[:, :, 0] << shifts) | (hb[:, :, 1] << (shifts + 1))).sum(dim=1)  # [S, 32]
        ql = pack_nibbles(q[:, :, 0], q[:, :, 1]).reshape(-1, 128)
        return torch.cat([qh.to(U8), ql], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 0:2])
        dmin = fp16_from_bytes(blocks[:, 2:4])
        sc, m = _unpack_scale_min_k4(blocks[:, 4:16])
        d = (d * sc.to(F32)).reshape(s, 8, 1)
        dm = (dmin * m.to(F32)).reshape(s, 8, 1)
        qh = blocks[:, 16:48].to(I32).reshape(s, 1, 32)
        ql = blocks[:, 48:].to(I32).reshape(s, 4, 1, 32)
        sh = torch.tensor([0, 4], dtype=I32, device=blocks.device).view(1, 1, 2, 1)
        ql = ((ql >> sh) & 0xF).reshape(s, 8, 32)
        hs = torch.arange(8, dtype=I32, device=blocks.device).view(1, 8, 1)
        qh = (qh >> hs) & 1
        q = (ql | (qh << 4)).to(F32)
        return (d * q - dm).reshape(s, QK_K)


class Q3_K(BlockKernel, qtype="q3_k"):
    """Bytes of ggml's ``quantize_q3_K``: ``quantize_row_q3_K_ref`` (``make_q3_quants``) without an
    imatrix, ``quantize_row_q3_K_impl`` (``make_qx_quants`` for values and scales) with one."""

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        xs = x.reshape(s * 16, 16)
        if w is None:
            scales, L = make_q3_quants(xs, 4)
            scales = scales.view(s, 16)
            _, mx = first_abs_max(scales)
            nz = mx != 0
            iscale = rdiv(-32, mx)
            l6 = (nearest_int(iscale * scales).to(torch.int8).to(I32)).clamp_(-32, 31) + 32
            l6 = torch.where(nz, l6, torch.zeros_like(l6))
            d = torch.where(nz, 1 / iscale, torch.zeros_like(iscale))
        else:
            sigma2 = 2 * _sum_x2(x) / QK_K
            weights = _imatrix_weights(x, w, sigma2).reshape(s * 16, 16)
            sw = seq_sum(weights.t()).view(s, 16)
            scales, L = make_qx_quants(xs, 4, weights)
            d, l6 = make_qx_quants(scales.view(s, 16), 32, sw)
            d = d.view(s, 1)
        packed = _pack_scales_q3(l6)
        sc = _unpack_scales_q3(packed)
        dq = fp16_round(d) * sc.to(F32)
        L = _requant(x.view(s, 16, 16), dq, None, L.view(s, 16, 16) - 4, -4, 3) + 4
        L = L.reshape(s, QK_K)
        hbits = (L > 3).to(I32)
        shifts = torch.arange(8, dtype=I32, device=x.device).view(1, 8, 1)
        hmask = (hbits.view(s, 8, 32) << shifts).sum(dim=1).to(U8)
        L = L - 4 * hbits
        return torch.cat([hmask, _pack_2bit(L), packed, fp16_bytes(d)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        hmask = blocks[:, :32].to(I32).reshape(s, 1, 32)
        ql = _unpack_2bit(blocks[:, 32:96]).reshape(s, 16, 16)
        sc = _unpack_scales_q3(blocks[:, 96:108]).to(F32)
        d = fp16_from_bytes(blocks[:, 108:110])
        dl = (d * sc).reshape(s, 16, 1)
        hs = torch.arange(8, dtype=I32, device=blocks.device).view(1, 8, 1)
        qh = ((hmask >> hs) & 1).reshape(s, 16, 16) ^ 1
        q = (ql - (qh << 2)).to(F32)
        return (dl * q).reshape(s, QK_K)


class Q2_K(BlockKernel, qtype="q2_k"):
    """Bytes of ggml's ``quantize_q2_K``: ``quantize_row_q2_K_ref`` (``make_qkx2_quants(16, 3,
    …, -0.5, 0.1, 15, use_mad)``) without an imatrix, ``quantize_row_q2_K_impl``
    (``make_qkx3_quants`` and ``make_qp_quants``) with one."""

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        xs = x.reshape(s * 16, 16)
        if w is None:
            scales, mins, L = make_qkx_quants(xs, xs.abs(), 3, -0.5, 0.1, 15, True)
            scales, mins = scales.view(s, 16), mins.view(s, 16)
            max_scale = _max0(scales)
            max_min = _max0(mins)
            has_s = max_scale > 0
            has_m = max_min > 0
            ls = nearest_int(rdiv(15, max_scale) * scales)
            lm = nearest_int(rdiv(15, max_min) * mins)
            ls = torch.where(has_s, ls, torch.zeros_like(ls))
            byte = torch.where(has_m, ls | (lm << 4), ls) & 0xFF
            d = torch.where(has_s, divc(max_scale, 15), torch.zeros_like(max_scale))
            dmin = torch.where(has_m, divc(max_min, 15), torch.zeros_like(max_min))
        else:
            sigma2 = _sum_x2(x) / QK_K
            weights = _imatrix_weights(x, w, sigma2).reshape(s * 16, 16)
            sw = seq_sum(weights.t()).view(s, 16)
            scales, mins, L = make_qkx_quants(xs, weights, 3, -0.9, 0.05, 36, False)
            d, ls = make_qp_quants(scales.view(s, 16), 15, sw)
            dmin, lm = make_qp_quants(mins.view(s, 16), 15, sw)
            byte = (ls | (lm << 4)) & 0xFF
            d, dmin = d.view(s, 1), dmin.view(s, 1)
        dq = fp16_round(d) * (byte & 0xF).to(F32)
        dmq = fp16_round(dmin) * (byte >> 4).to(F32)
        L = _requant(x.view(s, 16, 16), dq, dmq, L.view(s, 16, 16), 0, 3)
        return torch.cat([byte.to(U8), _pack_2bit(L), fp16_bytes(d), fp16_bytes(dmin)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        sc = blocks[:, :16].to(I32)
        q = _unpack_2bit(blocks[:, 16:80]).reshape(s, 16, 16).to(F32)
        d = fp16_from_bytes(blocks[:, 80:82])
        dmin = fp16_from_bytes(blocks[:, 82:84])
        dl = (d * (sc & 0xF).to(F32)).reshape(s, 16, 1)
        ml = (dmin * (sc >> 4).to(F32)).reshape(s, 16, 1)
        return (dl * q - ml).reshape(s, QK_K)
