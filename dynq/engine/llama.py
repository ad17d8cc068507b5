"""The llama architecture (llama.cpp's ``llm_build_llama``): RMSNorm, RoPE in normal mode
(adjacent pairs; the converter permutes Q/K for it), GQA attention, SwiGLU feed-forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dynq.engine.common import apply_rope, attention, causal_mask, rms_norm, rope_cos_sin
from dynq.engine.model import Model, UnsupportedArchitectureError, register
from dynq.engine.weights import LayerWeights


@register
class LlamaModel(Model):
    arch = "llama"

    def setup(self) -> None:
        gf = self.gf
        scaling = gf.arch_key("rope.scaling.type", "none")
        factor = float(gf.arch_key("rope.scaling.factor", 1.0) or 1.0)
        if scaling not in ("none", "linear"):
            raise UnsupportedArchitectureError(
                f"{gf.path}: llama.rope.scaling.type: {scaling!r} is not supported (none, linear)"
            )
        self.freq_scale = 1.0 / factor if scaling == "linear" else 1.0
        if gf.arch_key("expert_count"):
            raise UnsupportedArchitectureError(f"{gf.path}: llama with experts (MoE) not supported")
        self.freq_factors = (
            self.w.tensor("rope_freqs.weight") if self.w.has("rope_freqs.weight") else None
        )
        self._rope: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def rope(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope is None or self._rope[0] != t:
            pos = torch.arange(t, device=self.device)
            cos, sin = rope_cos_sin(
                pos, self.n_rot, self.rope_base, self.freq_scale, self.freq_factors
            )
            self._rope = (t, cos, sin)
        return self._rope[1], self._rope[2]

    def layer(self, il: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        b, t, _ = x.shape
        hd = self.head_dim
        h = rms_norm(x, w["attn_norm"], self.eps)
        q = self.linear(h, w, "attn_q").view(b, t, self.n_head, hd).transpose(1, 2)
        k = self.linear(h, w, "attn_k").view(b, t, self.n_head_kv, hd).transpose(1, 2)
        v = self.linear(h, w, "attn_v").view(b, t, self.n_head_kv, self.head_dim_v).transpose(1, 2)
        cos, sin = self.rope(t)
        q = apply_rope(q, cos, sin, neox=False)
        k = apply_rope(k, cos, sin, neox=False)
        a = attention(q, k, v, causal_mask(t, None, x.device), scale=hd**-0.5)
        a = a.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim_v)
        x = x + self.linear(a, w, "attn_output")
        h = rms_norm(x, w["ffn_norm"], self.eps)
        f = F.silu(self.linear(h, w, "ffn_gate")) * self.linear(h, w, "ffn_up")
        return x + self.linear(f, w, "ffn_down")

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.w.tensor("output_norm.weight"), self.eps)
