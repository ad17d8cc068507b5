"""Small checks of the engine's pieces: RoPE modes, masks, activation rounding, weight cache."""

from __future__ import annotations

import torch

from dynq.engine.common import apply_rope, causal_mask, ggml_activation_round, rope_cos_sin


def test_rope_modes():
    x = torch.randn(1, 1, 5, 8)
    cos, sin = rope_cos_sin(torch.arange(5), 8, 10000.0)
    # position 0 is the identity; rotations keep norms
    for neox in (False, True):
        y = apply_rope(x, cos, sin, neox)
        torch.testing.assert_close(y[..., 0, :], x[..., 0, :])
        torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # normal mode rotates adjacent pairs, NeoX pairs i and i + n/2
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    y_norm = apply_rope(x, cos, sin, neox=False)
    y_neox = apply_rope(x[..., perm], cos, sin, neox=True)
    torch.testing.assert_close(y_norm[..., perm], y_neox)


def test_sliding_window_mask():
    m = causal_mask(6, 3, torch.device("cpu"))
    assert m[5].tolist() == [False, False, False, True, True, True]
    assert causal_mask(6, None, torch.device("cpu"))[5].all()


def test_activation_rounding():
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    for t in ("Q8_0", "Q8_1", "Q8_K"):
        y = ggml_activation_round(x, t)
        block = 256 if t == "Q8_K" else 32
        amax = x.reshape(3, -1, block).abs().amax(-1, keepdim=True)
        err = (y - x).reshape(3, -1, block).abs()
        assert (err <= amax / 127 * 0.6).all()  # half a step, plus the fp16 scale
    assert torch.equal(ggml_activation_round(x, None), x)


def test_weight_cache_same_logits_as_streaming(smollm2_path, monkeypatch):
    """A small model keeps its dequantized weights; streaming layer by layer gives the same
    logits (DYNQ_WEIGHT_CACHE_MB=0 forces streaming)."""
    import torch

    from dynq.engine.model import load_model
    from dynq.gguf_io import read_gguf

    tokens = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    cached = load_model(read_gguf(smollm2_path), "cpu")
    a = cached.logits(tokens)
    assert cached.w._cache and "blk.0.attn_q.weight" in cached.w._cache
    monkeypatch.setenv("DYNQ_WEIGHT_CACHE_MB", "0")
    streamed = load_model(read_gguf(smollm2_path), "cpu")
    assert streamed.w._cache is None
    torch.testing.assert_close(streamed.logits(tokens), a, rtol=0, atol=0)
