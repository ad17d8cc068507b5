"""The plain float storage types: F32, F16, BF16."""

from __future__ import annotations

import torch
from torch import Tensor

from dynq.kernels.base import F32, U8, Kernel

__all__ = ["BF16", "F16", "F32_"]


class _FloatKernel(Kernel):
    uses_imatrix = False
    dtype: torch.dtype = F32

    @classmethod
    def quantize_rows(cls, x: Tensor, w: Tensor | None) -> Tensor:
        return x.to(cls.dtype).contiguous().view(U8)

    @classmethod
    def dequantize_rows(cls, data: Tensor, n: int) -> Tensor:
        return data.contiguous().view(cls.dtype).to(F32)


class F32_(_FloatKernel, qtype="f32"):
    """Bytes of ggml_quantize_chunk for F32 (a copy)."""

    dtype = torch.float32


class F16(_FloatKernel, qtype="f16"):
    """Bytes of ``ggml_fp32_to_fp16_row`` (round to nearest even, as torch's ``.half()``)."""

    dtype = torch.float16


class BF16(_FloatKernel, qtype="bf16"):
    """Bytes of ``ggml_fp32_to_bf16_row_ref`` (round to nearest even; torch's conversion is the
    same ``(u + 0x7fff + ((u >> 16) & 1)) >> 16``)."""

    dtype = torch.bfloat16
