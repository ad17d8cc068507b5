"""Build the safetensors-derived registry inventories from public config.json values.

The checkpoints themselves (54 GB for Gemma 3 27B, 690 GB for DeepSeek-V3.1) are not needed: this
script synthesizes their safetensors *headers* (tensor names, PyTorch shapes, dtypes, data offsets;
no data) from the published config.json and the Hugging Face transformers tensor naming, writes
them as header-only stand-in files to a temporary directory, and runs dynq's converter
(``dynq.convert.inventory_from_safetensors``) on them, exactly as on a real download.

Run from the repository root:  python registry/inventories/make_inventories.py [--check]
``--check`` rebuilds in memory and compares with the saved JSON instead of writing it.
See README.md beside it for the provenance of every value.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from dynq.convert import inventory_from_safetensors, parameter_count  # noqa: E402
from dynq.inventory import Inventory, load_inventory  # noqa: E402

# Bytes per element of the safetensors dtypes used below (for realistic data offsets).
_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}

Header = dict[str, tuple[tuple[int, ...], str]]  # HF name -> (PyTorch shape, dtype)

# ------------------------------------------------------------------------------------------------
# Public configs (config.json of the Hugging Face repositories; see README.md)

# google/gemma-3-27b-it config.json (transformers 4.50.0.dev0 layout). text_config has no
# vocab_size: transformers' Gemma3TextConfig default 262208 applies (AutoConfig, as the converter
# loads it), and it is also the row count of language_model.model.embed_tokens.weight.
GEMMA3_27B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "head_dim": 128,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "model_type": "gemma3_text",
        "num_attention_heads": 32,
        "num_hidden_layers": 62,
        "num_key_value_heads": 16,
        "query_pre_attn_scalar": 168,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}
GEMMA3_TEXT_VOCAB = 262208  # Gemma3TextConfig default (see above)

# deepseek-ai/DeepSeek-V3.1 config.json (same architecture as DeepSeek-V3; the keys that shape
# the tensors are listed in full).
DEEPSEEK_V31_CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "first_k_dense_replace": 3,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "v_head_dim": 128,
    "vocab_size": 129280,
}

# HuggingFaceTB/SmolLM2-135M-Instruct config.json: used to cross-check the converter against
# the bundled SmolLM2 GGUF (same names, shapes and order).
SMOLLM2_135M_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 49152,
}

# ------------------------------------------------------------------------------------------------
# HF tensor naming (transformers modeling_*.py state dicts)


def llama_header(cfg: dict[str, Any], dtype: str = "BF16") -> Header:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // n_head
    out: Header = {"model.embed_tokens.weight": ((cfg["vocab_size"], h), dtype)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ((h,), dtype)
        out[p + "post_attention_layernorm.weight"] = ((h,), dtype)
        out[p + "self_attn.q_proj.weight"] = ((n_head * hd, h), dtype)
        out[p + "self_attn.k_proj.weight"] = ((n_kv * hd, h), dtype)
        out[p + "self_attn.v_proj.weight"] = ((n_kv * hd, h), dtype)
        out[p + "self_attn.o_proj.weight"] = ((h, n_head * hd), dtype)
        out[p + "mlp.gate_proj.weight"] = ((ff, h), dtype)
        out[p + "mlp.up_proj.weight"] = ((ff, h), dtype)
        out[p + "mlp.down_proj.weight"] = ((h, ff), dtype)
    out["model.norm.weight"] = ((h,), dtype)
    if not cfg.get("tie_word_embeddings", False):
        out["lm_head.weight"] = ((cfg["vocab_size"], h), dtype)
    return out


def gemma3_header(cfg: dict[str, Any], vocab: int) -> Header:
    """Gemma3ForConditionalGeneration as google/gemma-3-*-it store it (BF16, tied head)."""
    t, v = cfg["text_config"], cfg["vision_config"]
    h, ff, hd = t["hidden_size"], t["intermediate_size"], t["head_dim"]
    n_head, n_kv = t["num_attention_heads"], t["num_key_value_heads"]
    bf = "BF16"
    out: Header = {"language_model.model.embed_tokens.weight": ((vocab, h), bf)}
    for i in range(t["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            out[p + f"{norm}_layernorm.weight"] = ((h,), bf)
        out[p + "self_attn.q_proj.weight"] = ((n_head * hd, h), bf)
        out[p + "self_attn.k_proj.weight"] = ((n_kv * hd, h), bf)
        out[p + "self_attn.v_proj.weight"] = ((n_kv * hd, h), bf)
        out[p + "self_attn.o_proj.weight"] = ((h, n_head * hd), bf)
        out[p + "self_attn.q_norm.weight"] = ((hd,), bf)
        out[p + "self_attn.k_norm.weight"] = ((hd,), bf)
        out[p + "mlp.gate_proj.weight"] = ((ff, h), bf)
        out[p + "mlp.up_proj.weight"] = ((ff, h), bf)
        out[p + "mlp.down_proj.weight"] = ((h, ff), bf)
    out["language_model.model.norm.weight"] = ((h,), bf)
    # SigLIP vision tower and the projector: in the checkpoint, skipped by the text conversion.
    vh, vff, ps = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    n_pos = (v["image_size"] // ps) ** 2
    vp = "vision_tower.vision_model."
    out[vp + "embeddings.patch_embedding.weight"] = ((vh, 3, ps, ps), bf)
    out[vp + "embeddings.patch_embedding.bias"] = ((vh,), bf)
    out[vp + "embeddings.position_embedding.weight"] = ((n_pos, vh), bf)
    for i in range(v["num_hidden_layers"]):
        p = f"{vp}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            out[p + f"{ln}.weight"] = ((vh,), bf)
            out[p + f"{ln}.bias"] = ((vh,), bf)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[p + f"self_attn.{proj}.weight"] = ((vh, vh), bf)
            out[p + f"self_attn.{proj}.bias"] = ((vh,), bf)
        out[p + "mlp.fc1.weight"] = ((vff, vh), bf)
        out[p + "mlp.fc1.bias"] = ((vff,), bf)
        out[p + "mlp.fc2.weight"] = ((vh, vff), bf)
        out[p + "mlp.fc2.bias"] = ((vh,), bf)
    out[vp + "post_layernorm.weight"] = ((vh,), bf)
    out[vp + "post_layernorm.bias"] = ((vh,), bf)
    out["multi_modal_projector.mm_input_projection_weight"] = ((vh, h), bf)
    out["multi_modal_projector.mm_soft_emb_norm.weight"] = ((vh,), bf)
    return out


def deepseek_v3_header(cfg: dict[str, Any]) -> Header:
    """DeepseekV3ForCausalLM as deepseek-ai publish it: FP8 (e4m3) linear weights with 128x128
    block scales (``weight_scale_inv``, F32), BF16 embeddings/head/router/norms, F32 router bias,
    and the MTP module as ``model.layers.{num_hidden_layers}``."""
    h, ff, moe_ff = cfg["hidden_size"], cfg["intermediate_size"], cfg["moe_intermediate_size"]
    n_head, vocab = cfg["num_attention_heads"], cfg["vocab_size"]
    q_lora, kv_lora = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    n_exp, n_dense = cfg["n_routed_experts"], cfg["first_k_dense_replace"]
    bs = cfg["quantization_config"]["weight_block_size"]
    out: Header = {}

    def fp8(name: str, rows: int, cols: int) -> None:
        out[name + ".weight"] = ((rows, cols), "F8_E4M3")
        out[name + ".weight_scale_inv"] = (
            (math.ceil(rows / bs[0]), math.ceil(cols / bs[1])),
            "F32",
        )

    def layer(i: int) -> None:
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ((h,), "BF16")
        out[p + "post_attention_layernorm.weight"] = ((h,), "BF16")
        fp8(p + "self_attn.q_a_proj", q_lora, h)
        out[p + "self_attn.q_a_layernorm.weight"] = ((q_lora,), "BF16")
        fp8(p + "self_attn.q_b_proj", n_head * (nope + rope), q_lora)
        fp8(p + "self_attn.kv_a_proj_with_mqa", kv_lora + rope, h)
        out[p + "self_attn.kv_a_layernorm.weight"] = ((kv_lora,), "BF16")
        fp8(p + "self_attn.kv_b_proj", n_head * (nope + vd), kv_lora)
        fp8(p + "self_attn.o_proj", h, n_head * vd)
        if i < n_dense:
            fp8(p + "mlp.gate_proj", ff, h)
            fp8(p + "mlp.up_proj", ff, h)
            fp8(p + "mlp.down_proj", h, ff)
            return
        out[p + "mlp.gate.weight"] = ((n_exp, h), "BF16")
        out[p + "mlp.gate.e_score_correction_bias"] = ((n_exp,), "F32")
        for e in range(n_exp):
            fp8(p + f"mlp.experts.{e}.gate_proj", moe_ff, h)
            fp8(p + f"mlp.experts.{e}.up_proj", moe_ff, h)
            fp8(p + f"mlp.experts.{e}.down_proj", h, moe_ff)
        sh = cfg["n_shared_experts"] * moe_ff
        fp8(p + "mlp.shared_experts.gate_proj", sh, h)
        fp8(p + "mlp.shared_experts.up_proj", sh, h)
        fp8(p + "mlp.shared_experts.down_proj", h, sh)

    out["model.embed_tokens.weight"] = ((vocab, h), "BF16")
    for i in range(cfg["num_hidden_layers"]):
        layer(i)
    out["model.norm.weight"] = ((h,), "BF16")
    out["lm_head.weight"] = ((vocab, h), "BF16")
    for k in range(cfg.get("num_nextn_predict_layers", 0)):
        i = cfg["num_hidden_layers"] + k
        layer(i)
        p = f"model.layers.{i}."
        out[p + "embed_tokens.weight"] = ((vocab, h), "BF16")
        out[p + "enorm.weight"] = ((h,), "BF16")
        out[p + "hnorm.weight"] = ((h,), "BF16")
        out[p + "eh_proj.weight"] = ((h, 2 * h), "BF16")
        out[p + "shared_head.norm.weight"] = ((h,), "BF16")
        out[p + "shared_head.head.weight"] = ((vocab, h), "BF16")
    return out


# ------------------------------------------------------------------------------------------------
# Header-only stand-ins


def write_header_only(path: Path, tensors: Header, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file cut after its header: valid names/shapes/dtypes/offsets, no data.

    Offsets are laid out as safetensors does (tensors one after another in name order), so the
    header is byte-for-byte what a real file with these tensors would start with, give or take
    the order of keys.
    """
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        shape, dtype = tensors[name]
        n = math.prod(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes with spaces
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def hf_params(tensors: Header, skip: tuple[str, ...] = ()) -> int:
    return sum(math.prod(s) for n, (s, _) in tensors.items() if not n.endswith(skip))


MODELS = {
    "gemma3-27b": (
        "google/gemma-3-27b-it",
        GEMMA3_27B_CONFIG,
        lambda: gemma3_header(GEMMA3_27B_CONFIG, GEMMA3_TEXT_VOCAB),
    ),
    "deepseek-v3.1": (
        "deepseek-ai/DeepSeek-V3.1",
        DEEPSEEK_V31_CONFIG,
        lambda: deepseek_v3_header(DEEPSEEK_V31_CONFIG),
    ),
}


def build(key: str, workdir: Path) -> tuple[Inventory, Header]:
    repo, config, make = MODELS[key]
    tensors = make()
    d = workdir / key
    d.mkdir()
    write_header_only(d / "model.safetensors", tensors)
    (d / "config.json").write_text(json.dumps(config))
    inv = inventory_from_safetensors(d, config, f"hf://{repo}")
    return inv, tensors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the saved JSON")
    args = ap.parse_args(argv)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for key in MODELS:
            inv, tensors = build(key, Path(tmp))
            n_hf = hf_params(tensors, skip=("_scale_inv",))
            n = parameter_count(inv)
            gb = sum(t.nbytes for t in inv.tensors)
            print(
                f"{key}: {len(inv.tensors)} tensors, "
                f"{n:,} parameters ({n / 1e9:.3f}B) in the GGUF; "
                f"{n_hf:,} ({n_hf / 1e9:.3f}B) in the checkpoint; {gb / 2**30:.2f} GiB as converted"
            )
            out = HERE / f"{key}.json"
            if args.check:
                if not out.exists() or load_inventory(out).model_dump() != inv.model_dump():
                    print(f"  {out.name}: differs from a fresh build")
                    bad += 1
            else:
                inv.save(out)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
