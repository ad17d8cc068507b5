"""The 32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1."""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels.base import (
    F32,
    I32,
    U8,
    BlockKernel,
    bits_to_bytes,
    bytes_to_bits,
    divc,
    first_abs_max,
    first_min,
    fp16_bytes,
    fp16_from_bytes,
    pack_nibbles,
    roundf,
    seq_sum,
    sqrtf,
    trunc_i32,
)
from dynq.kernels.search import make_qkx_quants, make_qx_quants

__all__ = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def _inv(d: Tensor) -> Tensor:
    """``d ? 1.0f/d : 0.0f``."""
    return torch.where(d != 0, 1 / d, torch.zeros_like(d))


def _row_sigma2(x: Tensor) -> Tensor:
    """``sum_x2/n_per_row``, ``sum_x2`` accumulated left to right over the row → ``[rows, 1]``."""
    xt = x.t()
    return divc(seq_sum(xt * xt), x.shape[1]).unsqueeze(1)


def _row_weights(x: Tensor, w: Tensor) -> Tensor:
    """``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` with the row's ``sigma2`` → ``[rows, n]``."""
    sigma2 = _row_sigma2(x)
    return w.view(1, -1) * sqrtf(sigma2 + x * x)


def _nibbles(q: Tensor) -> Tensor:
    """``[N, 32]`` ints → 16 bytes ``q[j] | q[j+16] << 4``."""
    return pack_nibbles(q[:, :16], q[:, 16:])


def _unnibble(qs: Tensor) -> Tensor:
    """16 bytes → ``[N, 32]`` int32 (low nibbles first)."""
    q = qs.to(I32)
    return torch.cat([q & 0xF, q >> 4], dim=1)


def _split_q5(q: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, 32]`` 5-bit ints → (qh 4 bytes: bit j = bit 4 of q[j]; qs 16 bytes of low nibbles)."""
    return bits_to_bytes((q >> 4) & 1), _nibbles(q)


def _join_q5(qh: Tensor, qs: Tensor) -> Tensor:
    return _unnibble(qs) | (bytes_to_bits(qh) << 4)


class Q8_0(BlockKernel, qtype="q8_0"):
    """Bytes of ggml's ``quantize_q8_0`` (= ``quantize_row_q8_0_ref``; the imatrix is unused)."""

    uses_imatrix = False

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        amax = x.abs().max(dim=1, keepdim=True).values
        d = divc(amax, 127)
        q = trunc_i32(roundf(x * _inv(d))).to(torch.int8)
        return torch.cat([fp16_bytes(d), q.view(U8)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, :2])
        return blocks[:, 2:].contiguous().view(torch.int8).to(F32) * d


class Q4_0(BlockKernel, qtype="q4_0"):
    """Bytes of ggml's ``quantize_q4_0``: ``quantize_row_q4_0_ref`` without an imatrix,
    ``quantize_row_q4_0_impl`` (``make_qx_quants`` with weights ``qw*sqrt(sigma2 + x²)``) with one.
    """

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        if w is None:
            return super().quantize_rows(x, None)
        rows = x.shape[0]
        weight = _row_weights(x, w).reshape(-1, 32)
        d, L = make_qx_quants(x.reshape(-1, 32), 8, weight)
        out = torch.cat([fp16_bytes(d), _nibbles(L)], dim=1)
        return out.reshape(rows, -1)

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        _, mx = first_abs_max(x)
        d = divc(mx, -8)
        xi = trunc_i32(x * _inv(d) + 8.5).clamp_(max=15)
        return torch.cat([fp16_bytes(d), _nibbles(xi)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, :2])
        return d * (_unnibble(blocks[:, 2:]) - 8).to(F32)


class Q4_1(BlockKernel, qtype="q4_1"):
    """Bytes of ggml's ``quantize_q4_1``: ``quantize_row_q4_1_ref`` without an imatrix,
    ``quantize_row_q4_1_impl`` (``make_qkx3_quants(32, 15, …, -0.9, 0.05, 36)``) with one.
    """

    nmax = 15

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        if w is None:
            return super().quantize_rows(x, None)
        rows = x.shape[0]
        weight = _row_weights(x, w).reshape(-1, 32)
        d, the_min, L = make_qkx_quants(x.reshape(-1, 32), weight, cls.nmax, -0.9, 0.05, 36, False)
        out = cls._pack(d, -the_min, L)
        return out.reshape(rows, -1)

    @classmethod
    def _pack(cls, d: Tensor, m: Tensor, L: Tensor) -> Tensor:
        return torch.cat([fp16_bytes(d), fp16_bytes(m), _nibbles(L)], dim=1)

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        mn = first_min(x)
        mx = x.max(dim=1, keepdim=True).values
        d = divc(mx - mn, cls.nmax)
        x0 = (x - mn) * _inv(d)
        xi = trunc_i32(x0 + 0.5)
        if cls.nmax == 15:
            xi = xi.clamp_(max=15)
        return cls._pack(d, mn, xi)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, 0:2])
        m = fp16_from_bytes(blocks[:, 2:4])
        return d * _unnibble(blocks[:, 4:]).to(F32) + m


class Q5_0(BlockKernel, qtype="q5_0"):
    """Bytes of ggml's ``quantize_q5_0``: ``quantize_row_q5_0_ref`` without an imatrix,
    ``quantize_row_q5_0_impl`` (``make_qx_quants(32, 16, …)``) with one.
    """

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        if w is None:
            return super().quantize_rows(x, None)
        rows = x.shape[0]
        weight = _row_weights(x, w).reshape(-1, 32)
        d, L = make_qx_quants(x.reshape(-1, 32), 16, weight)
        return cls._pack(d, L).reshape(rows, -1)

    @classmethod
    def _pack(cls, d: Tensor, q: Tensor) -> Tensor:
        qh, qs = _split_q5(q)
        return torch.cat([fp16_bytes(d), qh, qs], dim=1)

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        _, mx = first_abs_max(x)
        d = divc(mx, -16)
        xi = trunc_i32(x * _inv(d) + 16.5).clamp_(max=31)
        return cls._pack(d, xi)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, :2])
        q = _join_q5(blocks[:, 2:6], blocks[:, 6:])
        return d * (q - 16).to(F32)


class Q5_1(Q4_1, qtype="q5_1"):
    """Bytes of ggml's ``quantize_q5_1``: ``quantize_row_q5_1_ref`` without an imatrix,
    ``quantize_row_q5_1_impl`` (``make_qkx3_quants(32, 31, …, -0.9, 0.05, 36)``) with one.
    """

    nmax = 31

    @classmethod
    def _pack(cls, d: Tensor, m: Tensor, L: Tensor) -> Tensor:
        qh, qs = _split_q5(L)
        return torch.cat([fp16_bytes(d), fp16_bytes(m), qh, qs], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, 0:2])
        m = fp16_from_bytes(blocks[:, 2:4])
        q = _join_q5(blocks[:, 4:8], blocks[:, 8:])
        return d * q.to(F32) + m
