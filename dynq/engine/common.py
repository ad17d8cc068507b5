"""Pieces shared by the architectures: RMSNorm, RoPE (normal and NeoX), causal attention with
GQA and an optional sliding window, activations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# GGML weight type name -> the type llama.cpp's CPU backend quantizes activations to before
# a matrix multiply with it (ggml-cpu's type_traits_cpu[...].vec_dot_type).
ACTIVATION_TYPE: dict[str, str] = {
    "Q4_0": "Q8_0",
    "Q5_0": "Q8_0",
    "Q8_0": "Q8_0",
    "IQ4_NL": "Q8_0",
    "MXFP4": "Q8_0",
    "Q4_1": "Q8_1",
    "Q5_1": "Q8_1",
    **{
        k: "Q8_K"
        for k in (
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ2_S",
            "IQ3_XXS",
            "IQ3_S",
            "IQ1_S",
            "IQ1_M",
            "IQ4_XS",
            "TQ1_0",
            "TQ2_0",
        )
    },
    "F16": "F16",
    "BF16": "BF16",
}


def ggml_activation_round(x: torch.Tensor, act_type: str | None) -> torch.Tensor:
    """x [..., K] as llama.cpp's CPU matmul sees it after converting it to ``act_type``:
    Q8_0/Q8_1 (blocks of 32, scale amax/127 stored as fp16), Q8_K (blocks of 256, scale
    -max/127 in f32, values clamped to 127), F16/BF16 (rounded). None or F32: unchanged."""
    if act_type in (None, "F32"):
        return x
    if act_type == "F16":
        return x.half().float()
    if act_type == "BF16":
        return x.bfloat16().float()
    block = 256 if act_type == "Q8_K" else 32
    k = x.shape[-1]
    if k % block:
        return x
    xb = x.reshape(*x.shape[:-1], k // block, block)
    if act_type == "Q8_K":
        idx = xb.abs().argmax(-1, keepdim=True)
        mx = torch.gather(xb, -1, idx)
        iscale = torch.where(mx != 0, -127.0 / mx, torch.zeros_like(mx))
        q = torch.round(xb * iscale).clamp(max=127)
        d = torch.where(mx != 0, 1.0 / iscale, torch.zeros_like(mx))
        return (q * d).reshape(x.shape)
    amax = xb.abs().amax(-1, keepdim=True)
    d = amax / 127.0
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(xb * inv)
    return (q * d.half().float()).reshape(x.shape)


def rms_norm(x: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * w if w is not None else y


def rope_cos_sin(
    positions: torch.Tensor,
    n_rot: int,
    base: float,
    freq_scale: float = 1.0,
    freq_factors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape [T, n_rot/2] for ``positions`` [T] (ggml's theta schedule)."""
    i = torch.arange(0, n_rot // 2, dtype=torch.float64, device=positions.device)
    inv = base ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        inv = inv / freq_factors.to(torch.float64)
    theta = positions.to(torch.float64)[:, None] * (freq_scale * inv)[None, :]
    return torch.cos(theta).float(), torch.sin(theta).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """Rotate the first ``2*cos.shape[-1]`` dims of x [..., T, D]. ``neox`` pairs (i, i+n/2)
    (GGML_ROPE_TYPE_NEOX), else adjacent pairs (2i, 2i+1) (GGML_ROPE_TYPE_NORM)."""
    n_rot = 2 * cos.shape[-1]
    xr, xp = x[..., :n_rot], x[..., n_rot:]
    if neox:
        x0, x1 = xr[..., : n_rot // 2], xr[..., n_rot // 2 :]
        out = torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    else:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return torch.cat([out, xp], dim=-1) if xp.shape[-1] else out


def causal_mask(t: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean [T, T] mask, True where attention is allowed. With ``window`` w, key p0 is
    hidden from query p1 when p1 - p0 >= w (llama.cpp's LLAMA_SWA_TYPE_STANDARD)."""
    p = torch.arange(t, device=device)
    d = p[:, None] - p[None, :]
    allowed = d >= 0
    if window:
        allowed &= d < window
    return allowed


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, T, D] (GQA: head h reads kv head h // (H/Hkv))."""
    h, hkv = q.shape[1], k.shape[1]
    if hkv != h:
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
