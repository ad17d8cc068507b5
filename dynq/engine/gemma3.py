"""The gemma3 architecture (llama.cpp's ``llama_model_gemma3``): embeddings scaled by
sqrt(n_embd); per layer RMSNorm (the converter has folded Gemma's 1+w into the weights),
Q/K RMSNorm, NeoX RoPE with base ``rope.freq_base_swa`` (default 10000) on sliding-window
layers and ``rope.freq_base`` on global ones, Q scaled by 1/sqrt(head_dim), post-attention and
post-feed-forward norms, GELU(tanh)-gated feed-forward, tied output, optional final logit
softcapping. Sliding-window layers: ``attention.sliding_window_pattern`` if present, else 5
of every 6 (layer il is local when il % 6 < 5)."""

from __future__ import annotations

import math

import torch

from dynq.engine.common import apply_rope, attention, causal_mask, gelu_tanh, rms_norm, rope_cos_sin
from dynq.engine.model import Model, register
from dynq.engine.weights import LayerWeights


@register
class Gemma3Model(Model):
    arch = "gemma3"

    def setup(self) -> None:
        gf = self.gf
        self.n_swa = int(gf.arch_key("attention.sliding_window", 0) or 0)
        pattern = gf.arch_key("attention.sliding_window_pattern")
        if self.n_swa <= 0:
            self.is_swa = [False] * self.n_layer
        elif isinstance(pattern, list):
            self.is_swa = [bool(p) for p in pattern][: self.n_layer]
        else:
            n = int(pattern) if pattern is not None else 6
            self.is_swa = [n == 0 or (il % n < n - 1) for il in range(self.n_layer)]
        self.rope_base_swa = float(gf.arch_key("rope.freq_base_swa", 10000.0))
        self.softcap_value = float(gf.arch_key("final_logit_softcapping", 0.0) or 0.0)
        if self.n_layer == 62:  # 27B: query scaled by n_embd / n_head (gemma_pytorch config)
            self.q_scale = 1.0 / math.sqrt(self.n_embd / self.n_head)
        else:
            self.q_scale = 1.0 / math.sqrt(self.head_dim)
        self._rope: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def rope(self, t: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
        key = (t, base)
        if key not in self._rope:
            pos = torch.arange(t, device=self.device)
            self._rope[key] = rope_cos_sin(pos, self.n_rot, base)
        return self._rope[key]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().embed(tokens) * math.sqrt(self.n_embd)

    def layer(self, il: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        b, t, _ = x.shape
        hd, hdv = self.head_dim, self.head_dim_v
        swa = self.is_swa[il]
        h = rms_norm(x, w["attn_norm"], self.eps)
        q = self.linear(h, w, "attn_q").view(b, t, self.n_head, hd)
        k = self.linear(h, w, "attn_k").view(b, t, self.n_head_kv, hd)
        v = self.linear(h, w, "attn_v").view(b, t, self.n_head_kv, hdv)
        q = rms_norm(q, w["attn_q_norm"], self.eps).transpose(1, 2)
        k = rms_norm(k, w["attn_k_norm"], self.eps).transpose(1, 2)
        v = v.transpose(1, 2)
        cos, sin = self.rope(t, self.rope_base_swa if swa else self.rope_base)
        q = apply_rope(q, cos, sin, neox=True) * self.q_scale
        k = apply_rope(k, cos, sin, neox=True)
        mask = causal_mask(t, self.n_swa if swa else None, x.device)
        a = attention(q, k, v, mask, scale=1.0)
        a = a.transpose(1, 2).reshape(b, t, self.n_head * hdv)
        a = rms_norm(self.linear(a, w, "attn_output"), w["post_attention_norm"], self.eps)
        sa = a + x
        h = rms_norm(sa, w["ffn_norm"], self.eps)
        f = gelu_tanh(self.linear(h, w, "ffn_gate")) * self.linear(h, w, "ffn_up")
        f = rms_norm(self.linear(f, w, "ffn_down"), w["post_ffw_norm"], self.eps)
        return f + sa

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.w.tensor("output_norm.weight"), self.eps)

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.softcap_value
        return torch.tanh(logits / c) * c if c else logits
