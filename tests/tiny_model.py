"""A tiny llama-architecture GGUF with real structure and seeded random F32 weights.

Small enough that a build takes well under a second; the real bundled models are used by the
slower end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD = 256
N_FF = 512
N_LAYERS = 2
N_VOCAB = 320


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """numpy-shaped (rows, ne0) arrays in GGUF tensor order."""
    rng = np.random.default_rng(seed)

    def w(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    out = {"token_embd.weight": w(N_VOCAB, N_EMBD)}
    for i in range(N_LAYERS):
        out[f"blk.{i}.attn_norm.weight"] = np.ones(N_EMBD, np.float32)
        out[f"blk.{i}.attn_q.weight"] = w(N_EMBD, N_EMBD)
        out[f"blk.{i}.attn_k.weight"] = w(64, N_EMBD)
        out[f"blk.{i}.attn_v.weight"] = w(64, N_EMBD)
        out[f"blk.{i}.attn_output.weight"] = w(N_EMBD, N_EMBD)
        out[f"blk.{i}.ffn_norm.weight"] = np.ones(N_EMBD, np.float32)
        out[f"blk.{i}.ffn_gate.weight"] = w(N_FF, N_EMBD)
        out[f"blk.{i}.ffn_up.weight"] = w(N_FF, N_EMBD)
        out[f"blk.{i}.ffn_down.weight"] = w(N_EMBD, N_FF)
    out["output_norm.weight"] = np.ones(N_EMBD, np.float32)
    return out


#: the chat template tiny files carry unless a test passes ``chat_template=None``
CHAT_TEMPLATE = "{{ messages[0]['content'] }}"


def write(
    path: Path, seed: int = 0, *, chat_template: str | None = CHAT_TEMPLATE, **keys: object
) -> Path:
    """The tiny llama GGUF. ``keys`` are more header values, each set with ``GGUFWriter.add_KEY``
    (``license="MIT"``, ``tokenizer_pre="gpt2"``, ...); a ``token_list`` replaces the default
    vocabulary of ``t0`` ... ``tN``."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_block_count(N_LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(4)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model("gpt2")
    keys.setdefault("token_list", [f"t{i}" for i in range(N_VOCAB)])
    for key, value in keys.items():
        getattr(w, f"add_{key}")(value)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    for name, arr in tensors(seed).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
