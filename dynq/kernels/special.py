"""Special-purpose 32/128-blocks: MXFP4 (OCP microscaling FP4) and Q1_0 (1-bit signs)."""

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
    fp16_bytes,
    fp16_from_bytes,
    pack_nibbles,
    seq_sum,
    trunc_i32,
)

__all__ = ["KVALUES_MXFP4", "MXFP4", "Q1_0"]

#: ggml's ``kvalues_mxfp4`` (E2M1 values, doubled)
KVALUES_MXFP4 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


#: index among (0, 1, 2, 3, 4, 6, 8, 12) nearest to a = |x|/d, ties down, by c = ceil(2a):
#: the number of midpoints (0.5, 1.5, 2.5, 3.5, 5, 7, 10) below a, i.e. with 2*mid < c
_MAG_LUT = torch.tensor([sum(1 for m2 in (1, 3, 5, 7, 10, 14, 20) if m2 < c) for c in range(26)])


def e8m0_to_fp32_half(e: Tensor) -> Tensor:
    """ggml's ``GGML_E8M0_TO_FP32_HALF``: ``2**(e - 128)`` including the two subnormals."""
    e = e.to(I32)
    bits = torch.where(e < 2, 0x00200000 << e, (e - 1) << 23)
    return bits.view(F32)


class MXFP4(BlockKernel, qtype="mxfp4"):
    """Bytes of ggml's ``quantize_mxfp4`` (= ``quantize_row_mxfp4_ref``; the imatrix is unused).

    The shared exponent is ``floorf(log2f(amax)) - 2 + 127``; ``log2f`` is taken as the correctly
    rounded float32 log2 (computed in float64).
    """

    uses_imatrix = False

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        ax = x.abs()
        amax = ax.max(dim=1, keepdim=True).values
        lg = torch.floor(torch.log2(amax.to(torch.float64)).to(F32))
        e = torch.where(amax > 0, trunc_i32(lg - 2 + 127) & 0xFF, torch.zeros_like(lg, dtype=I32))
        d = e8m0_to_fp32_half(e)  # [B, 1], a power of two
        # best_index_mxfp4 scans the 16 values for the first smallest |kv*d - x|. Near a decision
        # boundary both differences are exact (Sterbenz), so this is nearest-value on |x|/d
        # (exact: d is a power of two) with ties to the smaller magnitude, then the sign half.
        c = torch.ceil(ax.div_(d).mul_(2)).clamp_(max=25).long()  # a in ((c-1)/2, c/2]
        m = _MAG_LUT.to(x.device).index_select(0, c.view(-1)).view(c.shape)
        idx = m + 8 * ((x < 0) & (m > 0)).long()
        return torch.cat([e.to(U8), pack_nibbles(idx[:, :16], idx[:, 16:])], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        kv = torch.tensor(KVALUES_MXFP4, dtype=F32, device=blocks.device)
        d = e8m0_to_fp32_half(blocks[:, :1])
        q = blocks[:, 1:].to(torch.int64)
        return d * kv[torch.cat([q & 0xF, q >> 4], dim=1)]


class Q1_0(BlockKernel, qtype="q1_0"):
    """Bytes of ggml's ``quantize_q1_0`` (= ``quantize_row_q1_0_ref``: ``d`` = mean of ``|x|``
    summed left to right, one sign bit per weight; the imatrix is unused)."""

    uses_imatrix = False

    @classmethod
    def quantize_blocks(cls, x: Tensor, w: Tensor | None) -> Tensor:
        d = seq_sum(x.abs().t().contiguous()) / 128
        bits = (x >= 0).to(I32)
        return torch.cat([fp16_bytes(d), bits_to_bytes(bits)], dim=1)

    @classmethod
    def dequantize_blocks(cls, blocks: Tensor) -> Tensor:
        d = fp16_from_bytes(blocks[:, :2])
        bits = bytes_to_bits(blocks[:, 2:])
        return d * (2 * bits - 1).to(F32)  # ±d exactly
