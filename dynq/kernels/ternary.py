"""The ternary types of BitNet b1.58 / TriLMs: TQ1_0 (1.6875 bpw) and TQ2_0 (2.0625 bpw)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels.base import (
    F32,
    I32,
    U8,
    BlockKernel,
    fp16_bytes,
    fp16_from_bytes,
    roundf,
    trunc_i32,
)

__all__ = ["TQ1_0", "TQ2_0"]


def _trits(x: Tensor) -> tuple[Tensor, Tensor]:
    """``d = amax``, ``lroundf(x/d) + 1`` in {0, 1, 2} (int32) for ``x`` ``[S, 256]``."""
    d = x.abs().max(dim=1, keepdim=True).values
    idv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
    return d, trunc_i32(roundf(x * idv)) + 1


def _ceil_div_243(q: Tensor) -> Tensor:
    """``((uint16_t)q * 256 + (243 - 1)) / 243`` stored in a uint8."""
    return ((q * 256 + 242) // 243) & 0xFF


class TQ1_0(BlockKernel, qtype="tq1_0"):
    """Bytes of ggml's ``quantize_tq1_0`` (= ``quantize_row_tq1_0_ref``; the imatrix is unused)."""

    uses_imatrix = False

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        d, q = _trits(x)
        dev = x.device
        p5 = torch.tensor([81, 27, 9, 3, 1], dtype=I32, device=dev)
        # 5 trits per byte along 32 bytes (elements m + 32n), then along 16 (160 + m + 16n)
        q0 = (q[:, :160].reshape(s, 5, 32) * p5.view(1, 5, 1)).sum(dim=1)
        q1 = (q[:, 160:240].reshape(s, 5, 16) * p5.view(1, 5, 1)).sum(dim=1)
        # 4 trits per byte (elements 240 + j + 4m), the first in the most significant trit
        p4 = torch.tensor([81, 27, 9, 3], dtype=I32, device=dev)
        qh = (q[:, 240:].reshape(s, 4, 4) * p4.view(1, 4, 1)).sum(dim=1)
        qs = _ceil_div_243(torch.cat([q0, q1, qh], dim=1)).to(U8)
        return torch.cat([qs, fp16_bytes(d)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        dev = blocks.device
        d = fp16_from_bytes(blocks[:, 52:54])
        p5 = torch.tensor([1, 3, 9, 27, 81], dtype=I32, device=dev).view(1, 5, 1)
        q0 = (blocks[:, :32].to(I32).view(s, 1, 32) * p5).reshape(s, 160)
        q1 = (blocks[:, 32:48].to(I32).view(s, 1, 16) * p5).reshape(s, 80)
        p4 = torch.tensor([1, 3, 9, 27], dtype=I32, device=dev).view(1, 4, 1)
        qh = (blocks[:, 48:52].to(I32).view(s, 1, 4) * p4).reshape(s, 16)
        q = torch.cat([q0, q1, qh], dim=1) & 0xFF  # uint8 products wrap
        return d * (((q * 3) >> 8) - 1).to(F32)


class TQ2_0(BlockKernel, qtype="tq2_0"):
    """Bytes of ggml's ``quantize_tq2_0`` (= ``quantize_row_tq2_0_ref``; the imatrix is unused)."""

    uses_imatrix = False

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        s = x.shape[0]
        d, q = _trits(x)
        q = (q & 3).reshape(s, 2, 4, 32)
        qs = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
        return torch.cat([qs.reshape(s, 64).to(U8), fp16_bytes(d)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        s = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 64:66])
        shifts = torch.tensor([0, 2, 4, 6], dtype=I32, device=blocks.device).view(1, 1, 4, 1)
        q = (blocks[:, :64].to(I32).view(s, 2, 1, 32) >> shifts) & 3
        return d * (q.reshape(s, 256) - 1).to(F32)
