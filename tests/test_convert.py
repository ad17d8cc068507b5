"""dynq.convert: safetensors headers -> the GGUF inventory convert_hf_to_gguf.py would write."""

from __future__ import annotations

import functools
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dynq.convert import (
    HFTensor,
    inventory_from_dir,
    inventory_from_hub,
    inventory_from_safetensors,
    inventory_from_tensors,
    parameter_count,
    read_safetensors_header,
)
from dynq.errors import InventoryError
from dynq.inventory import load_inventory

REPO = Path(__file__).resolve().parent.parent
INVENTORIES = REPO / "registry" / "inventories"


def _make_inventories():
    spec = importlib.util.spec_from_file_location(
        "make_inventories", INVENTORIES / "make_inventories.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def T(name: str, *shape: int, dtype: str = "BF16") -> HFTensor:
    return HFTensor(name, tuple(shape), dtype)


def shapes(inv) -> dict[str, tuple[int, ...]]:
    return {t.name: t.shape for t in inv.tensors}


def types(inv) -> dict[str, str]:
    return {t.name: t.type for t in inv.tensors}


# ------------------------------------------------------------------------------------------------
# Header reading


def test_header_of_a_real_file_sorted_by_name(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file(
        {"zeta": np.zeros((2, 3), np.float32), "alpha": np.ones(4, np.float16)},
        str(f),
        metadata={"format": "pt"},
    )
    assert read_safetensors_header(f) == [
        HFTensor("alpha", (4,), "F16"),
        HFTensor("zeta", (2, 3), "F32"),
    ]


def test_only_the_header_is_read(tmp_path):
    """A file cut right after its header reads the same: no tensor data is touched."""
    f = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": np.zeros((64, 8), np.float16)}, str(f))
    full = read_safetensors_header(f)
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cut = tmp_path / "cut" / "model.safetensors"
    cut.parent.mkdir()
    cut.write_bytes(raw[: 8 + n])
    assert (
        read_safetensors_header(cut)
        == full
        == [HFTensor("model.embed_tokens.weight", (64, 8), "F16")]
    )


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"\x01\x02", "shorter than 8 bytes"),
        (struct.pack("<Q", 10**12), "over the 100 MB limit"),
        (struct.pack("<Q", 100) + b"{}", "truncated safetensors header"),
        (struct.pack("<Q", 5) + b"{nope", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 31) + b'{"w":{"dtype":"F32","shape":1}}', "'w': shape"),
    ],
)
def test_bad_headers_name_the_file(tmp_path, data, msg):
    f = tmp_path / "bad.safetensors"
    f.write_bytes(data)
    with pytest.raises(InventoryError, match=msg) as e:
        read_safetensors_header(f)
    assert str(f) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="not found"):
        read_safetensors_header(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------------------
# llama

LLAMA_CFG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 100,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
}


def _llama_files(d: Path) -> None:
    """Two shards with an index, written with safetensors itself (tiny real data)."""
    bf = np.float16  # safetensors.numpy has no bfloat16; F16 source -> auto picks F16
    part1 = {
        "model.embed_tokens.weight": np.zeros((100, 64), bf),
        "model.layers.0.input_layernorm.weight": np.zeros(64, bf),
        "model.layers.0.post_attention_layernorm.weight": np.zeros(64, bf),
        "model.layers.0.self_attn.q_proj.weight": np.zeros((64, 64), bf),
        "model.layers.0.self_attn.k_proj.weight": np.zeros((32, 64), bf),
        "model.layers.0.self_attn.v_proj.weight": np.zeros((32, 64), bf),
        "model.layers.0.self_attn.o_proj.weight": np.zeros((64, 64), bf),
        "model.layers.0.self_attn.rotary_emb.inv_freq": np.zeros(8, np.float32),
        "model.layers.0.mlp.gate_proj.weight": np.zeros((128, 64), bf),
        "model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), bf),
        "model.layers.0.mlp.down_proj.weight": np.zeros((64, 128), bf),
    }
    part2 = {k.replace("layers.0", "layers.1"): v for k, v in part1.items() if "layers.0" in k}
    part2["model.norm.weight"] = np.zeros(64, bf)
    part2["lm_head.weight"] = np.zeros((100, 64), bf)
    save_file(part1, str(d / "model-00001-of-00002.safetensors"))
    save_file(part2, str(d / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in part1}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in part2}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps(LLAMA_CFG))


def test_llama_directory_with_index(tmp_path):
    _llama_files(tmp_path)
    inv = inventory_from_safetensors(tmp_path)  # config.json read from the directory
    assert inv.arch == "llama" and inv.n_layers == 2 and inv.origin_kind == "safetensors"
    assert inv.metadata_bytes == {} and inv.alignment == 32 and not inv.exact
    names = [t.name for t in inv.tensors]
    # generated rope_freqs first; shard 1 in name order, then shard 2; inv_freq dropped
    assert names == [
        "rope_freqs.weight",
        "token_embd.weight",
        "blk.0.attn_norm.weight",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_norm.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_output.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_v.weight",
        "output.weight",
        "blk.1.attn_norm.weight",
        "blk.1.ffn_down.weight",
        "blk.1.ffn_gate.weight",
        "blk.1.ffn_up.weight",
        "blk.1.ffn_norm.weight",
        "blk.1.attn_k.weight",
        "blk.1.attn_output.weight",
        "blk.1.attn_q.weight",
        "blk.1.attn_v.weight",
        "output_norm.weight",
    ]
    s, ty = shapes(inv), types(inv)
    assert s["rope_freqs.weight"] == (8,) and ty["rope_freqs.weight"] == "F32"
    assert s["token_embd.weight"] == (64, 100) and ty["token_embd.weight"] == "F16"
    assert s["blk.0.attn_k.weight"] == (64, 32)
    assert s["blk.0.ffn_down.weight"] == (128, 64)
    assert ty["blk.0.attn_norm.weight"] == "F32"


def test_inventory_from_dir(tmp_path):
    _llama_files(tmp_path)
    inv = inventory_from_dir(tmp_path)
    assert inv.origin == str(tmp_path) and len(inv.tensors) == 22
    with pytest.raises(InventoryError, match="not a directory"):
        inventory_from_dir(tmp_path / "model.safetensors.index.json")
    (tmp_path / "config.json").unlink()
    with pytest.raises(InventoryError, match=r"config\.json not found"):
        inventory_from_dir(tmp_path)


def test_llama_matches_the_smollm2_gguf(tmp_path):
    """Names, shapes and order equal those of the bundled SmolLM2 GGUF (made by the converter)."""
    mk = _make_inventories()
    mk.write_header_only(tmp_path / "model.safetensors", mk.llama_header(mk.SMOLLM2_135M_CONFIG))
    inv = inventory_from_safetensors(tmp_path, mk.SMOLLM2_135M_CONFIG, "test")
    ref = load_inventory(INVENTORIES / "smollm2-135m.json")
    assert [(t.name, t.shape) for t in inv.tensors] == [(t.name, t.shape) for t in ref.tensors]
    assert parameter_count(inv) == parameter_count(ref) == 134_515_008


def test_mixtral_experts_merge():
    cfg = {**LLAMA_CFG, "architectures": ["MixtralForCausalLM"], "num_hidden_layers": 1}
    cfg.pop("rope_scaling")
    cfg["num_local_experts"] = 2
    p = "model.layers.0.block_sparse_moe."
    ts = [T(p + "gate.weight", 2, 64)]
    for x in range(2):
        ts += [T(p + f"experts.{x}.w1.weight", 128, 64), T(p + f"experts.{x}.w2.weight", 64, 128)]
        ts += [T(p + f"experts.{x}.w3.weight", 128, 64)]
    inv = inventory_from_tensors(ts, cfg, "t")
    assert [(t.name, t.shape, t.type) for t in inv.tensors] == [
        ("blk.0.ffn_gate_inp.weight", (64, 2), "F32"),
        ("blk.0.ffn_gate_exps.weight", (64, 128, 2), "BF16"),
        ("blk.0.ffn_down_exps.weight", (128, 64, 2), "BF16"),
        ("blk.0.ffn_up_exps.weight", (64, 128, 2), "BF16"),
    ]


# ------------------------------------------------------------------------------------------------
# gemma3

GEMMA3_CFG = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "text_config": {
        "head_dim": 16,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "vocab_size": 50,
    },
    "vision_config": {"hidden_size": 8},
}


def test_gemma3_text_of_the_multimodal_checkpoint():
    lm = "language_model.model."
    ts = [
        T("multi_modal_projector.mm_input_projection_weight", 8, 32),
        T("multi_modal_projector.mm_soft_emb_norm.weight", 8),
        T(lm + "embed_tokens.weight", 64, 32),  # 14 out-of-vocabulary rows
        T(lm + "layers.0.input_layernorm.weight", 32),
        T(lm + "layers.0.post_attention_layernorm.weight", 32),
        T(lm + "layers.0.pre_feedforward_layernorm.weight", 32),
        T(lm + "layers.0.post_feedforward_layernorm.weight", 32),
        T(lm + "layers.0.self_attn.q_proj.weight", 32, 32),
        T(lm + "layers.0.self_attn.k_proj.weight", 16, 32),
        T(lm + "layers.0.self_attn.q_norm.weight", 16),
        T(lm + "layers.0.self_attn.k_norm.weight", 16),
        T(lm + "layers.0.mlp.down_proj.weight", 32, 64),
        T(lm + "norm.weight", 32),
        T("vision_tower.vision_model.embeddings.patch_embedding.weight", 8, 3, 14, 14),
        T("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", 16, 8),
    ]
    inv = inventory_from_tensors(ts, GEMMA3_CFG, "t")
    assert inv.arch == "gemma3" and inv.n_layers == 1
    assert shapes(inv) == {
        "token_embd.weight": (32, 50),
        "blk.0.attn_norm.weight": (32,),
        "blk.0.post_attention_norm.weight": (32,),
        "blk.0.ffn_norm.weight": (32,),
        "blk.0.post_ffw_norm.weight": (32,),
        "blk.0.attn_q.weight": (32, 32),
        "blk.0.attn_k.weight": (32, 16),
        "blk.0.attn_q_norm.weight": (16,),
        "blk.0.attn_k_norm.weight": (16,),
        "blk.0.ffn_down.weight": (64, 32),
        "output_norm.weight": (32,),
    }
    ty = types(inv)
    assert ty["token_embd.weight"] == "BF16" and ty["blk.0.attn_q_norm.weight"] == "F32"


def test_gemma3_vocab_defaults_like_autoconfig():
    """config.json without text_config.vocab_size: transformers' default 262208 applies."""
    cfg = json.loads(json.dumps(GEMMA3_CFG))
    del cfg["text_config"]["vocab_size"]
    inv = inventory_from_tensors(
        [T("language_model.model.embed_tokens.weight", 262208, 32)], cfg, "t"
    )
    assert shapes(inv) == {"token_embd.weight": (32, 262208)}


# ------------------------------------------------------------------------------------------------
# qwen3 / qwen3moe

QWEN3_CFG = {
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "num_hidden_layers": 1,
}


def test_qwen3():
    ts = [
        T("model.layers.0.self_attn.q_norm.weight", 16),
        T("model.layers.0.self_attn.k_norm.weight", 16),
        T("model.layers.0.self_attn.q_proj.weight", 32, 32),
        T("lm_head.weight", 10, 32),
    ]
    inv = inventory_from_tensors(ts, QWEN3_CFG, "t")
    assert inv.arch == "qwen3"
    assert shapes(inv) == {
        "blk.0.attn_q_norm.weight": (16,),
        "blk.0.attn_k_norm.weight": (16,),
        "blk.0.attn_q.weight": (32, 32),
        "output.weight": (32, 10),
    }


def test_qwen3moe_per_expert_and_fused_experts():
    cfg = {**QWEN3_CFG, "architectures": ["Qwen3MoeForCausalLM"], "num_experts": 2}
    cfg["num_hidden_layers"] = 2
    ts = [T("model.layers.0.mlp.gate.weight", 2, 32)]
    for x in range(2):
        for w, sh in (("gate_proj", (24, 32)), ("up_proj", (24, 32)), ("down_proj", (32, 24))):
            ts.append(T(f"model.layers.0.mlp.experts.{x}.{w}.weight", *sh))
    ts += [
        T("model.layers.1.mlp.experts.gate_up_proj", 2, 48, 32),
        T("model.layers.1.mlp.experts.down_proj", 2, 32, 24),
    ]
    inv = inventory_from_tensors(ts, cfg, "t")
    assert inv.arch == "qwen3moe"
    assert [(t.name, t.shape, t.type) for t in inv.tensors] == [
        ("blk.0.ffn_gate_inp.weight", (32, 2), "F32"),
        ("blk.0.ffn_down_exps.weight", (24, 32, 2), "BF16"),
        ("blk.0.ffn_gate_exps.weight", (32, 24, 2), "BF16"),
        ("blk.0.ffn_up_exps.weight", (32, 24, 2), "BF16"),
        ("blk.1.ffn_gate_exps.weight", (32, 24, 2), "BF16"),
        ("blk.1.ffn_up_exps.weight", (32, 24, 2), "BF16"),
        ("blk.1.ffn_down_exps.weight", (24, 32, 2), "BF16"),
    ]


# ------------------------------------------------------------------------------------------------
# deepseek2 (DeepSeek-V3 family)

DS_CFG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 2,
    "first_k_dense_replace": 1,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 24,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4,
    "v_head_dim": 6,
    "vocab_size": 50,
    "num_nextn_predict_layers": 1,
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
}


def _ds_tiny():
    mk = _make_inventories()
    return mk.deepseek_v3_header(DS_CFG)


def test_deepseek_v3_tiny():
    header = _ds_tiny()
    assert "model.layers.2.eh_proj.weight" in header  # the MTP layer is in the checkpoint
    ts = [HFTensor(n, s, d) for n, (s, d) in sorted(header.items())]
    inv = inventory_from_tensors(ts, DS_CFG, "t")
    assert inv.arch == "deepseek2" and inv.n_layers == 2
    s, ty = shapes(inv), types(inv)
    assert not any(n.startswith("blk.2.") for n in s), "MTP layer must be skipped"
    assert not any("scale" in n for n in s), "FP8 scales must be dropped"
    # kv_b_proj [heads*(nope+v), kv_lora] = [56, 32]
    #   -> k_b {nope, kv_lora, heads}, v_b {kv_lora, v, heads}
    assert s["blk.0.attn_k_b.weight"] == (8, 32, 4)
    assert s["blk.0.attn_v_b.weight"] == (32, 6, 4)
    assert "blk.0.attn_kv_b.weight" not in s
    assert s["blk.0.attn_kv_a_mqa.weight"] == (64, 36)
    assert s["blk.0.attn_q_b.weight"] == (24, 48)
    assert s["blk.0.ffn_gate.weight"] == (64, 96)
    assert s["blk.1.ffn_gate_exps.weight"] == (64, 16, 4)
    assert s["blk.1.ffn_up_exps.weight"] == (64, 16, 4)
    assert s["blk.1.ffn_down_exps.weight"] == (16, 64, 4)
    assert s["blk.1.ffn_gate_shexp.weight"] == (64, 16)
    assert s["blk.1.exp_probs_b.bias"] == (4,)
    assert s["blk.1.ffn_gate_inp.weight"] == (64, 4)
    assert s["output.weight"] == (64, 50)
    # FP8 weights come out BF16 (auto: the BF16 embeddings decide), router and bias F32
    assert ty["blk.1.ffn_gate_exps.weight"] == "BF16" and ty["blk.0.attn_k_b.weight"] == "BF16"
    assert ty["blk.1.ffn_gate_inp.weight"] == "F32" and ty["blk.1.exp_probs_b.bias"] == "F32"
    assert ty["blk.0.attn_kv_a_norm.weight"] == "F32"
    # converter order: experts emitted (down, gate, up) on the layer's last expert tensor
    names = [t.name for t in inv.tensors]
    i = names.index("blk.1.ffn_down_exps.weight")
    assert names[i : i + 3] == [
        "blk.1.ffn_down_exps.weight",
        "blk.1.ffn_gate_exps.weight",
        "blk.1.ffn_up_exps.weight",
    ]
    assert names.index("blk.0.attn_k_b.weight") + 1 == names.index("blk.0.attn_v_b.weight")
    # 3 global; dense layer 12 (kv_b -> k_b + v_b: 13); MoE layer 17 (18)
    assert len(names) == 3 + 13 + 18


def test_deepseek_missing_expert():
    header = _ds_tiny()
    del header["model.layers.1.mlp.experts.3.up_proj.weight"]
    del header["model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"]
    ts = [HFTensor(n, s, d) for n, (s, d) in sorted(header.items())]
    with pytest.raises(InventoryError, match="unprocessed expert tensors"):
        inventory_from_tensors(ts, DS_CFG, "t")


def test_deepseek_bad_kv_b_shape():
    cfg = {**DS_CFG, "v_head_dim": 7}
    with pytest.raises(InventoryError, match=r"kv_b_proj\.weight': shape"):
        inventory_from_tensors([T("model.layers.0.self_attn.kv_b_proj.weight", 56, 32)], cfg, "t")


# ------------------------------------------------------------------------------------------------
# errors and dtype rules


def test_unknown_tensor_is_named():
    ts = [
        T("model.layers.0.self_attn.q_proj.weight", 64, 64),
        T("model.layers.0.frobnicator.weight", 4, 4),
    ]
    with pytest.raises(InventoryError, match=r"src: tensor 'model.layers.0.frobnicator.weight'"):
        inventory_from_tensors(ts, LLAMA_CFG, "src")


def test_unknown_architecture():
    with pytest.raises(InventoryError, match="architecture 'FooForCausalLM' is not supported"):
        inventory_from_tensors([], {"architectures": ["FooForCausalLM"]}, "t")
    with pytest.raises(InventoryError, match="'architectures' missing"):
        inventory_from_tensors([], {}, "t")


def test_unsupported_quantization():
    cfg = {**QWEN3_CFG, "quantization_config": {"quant_method": "awq"}}
    with pytest.raises(InventoryError, match="'awq' is not supported"):
        inventory_from_tensors([T("model.norm.weight", 32)], cfg, "t")


def test_auto_outtype_first_2d_16_bit_tensor_decides():
    # first 2-D tensor is F32 (skipped), next F16 -> F16 even though a BF16 one follows
    ts = [
        T("model.norm.weight", 32, dtype="BF16"),  # 1-D: ignored by the heuristic
        T("model.embed_tokens.weight", 10, 32, dtype="F32"),
        T("model.layers.0.self_attn.q_proj.weight", 32, 32, dtype="F16"),
        T("model.layers.0.self_attn.k_proj.weight", 16, 32, dtype="BF16"),
        T("model.layers.0.self_attn.q_proj.bias", 32, dtype="F16"),
    ]
    ty = types(inventory_from_tensors(ts, QWEN3_CFG, "t"))
    assert ty == {
        "output_norm.weight": "F32",
        "token_embd.weight": "F16",
        "blk.0.attn_q.weight": "F16",
        "blk.0.attn_k.weight": "F16",
        "blk.0.attn_q.bias": "F32",
    }
    # all float32: auto falls back to F16
    ts32 = [T("model.embed_tokens.weight", 10, 32, dtype="F32")]
    assert types(inventory_from_tensors(ts32, QWEN3_CFG, "t"))["token_embd.weight"] == "F16"


def test_explicit_outtypes():
    ts = [T("model.embed_tokens.weight", 10, 64), T("model.layers.0.mlp.down_proj.weight", 32, 48)]
    for outtype, emb, down in (
        ("f32", "F32", "F32"),
        ("bf16", "BF16", "BF16"),
        ("q8_0", "Q8_0", "F16"),
    ):
        ty = types(inventory_from_tensors(ts, QWEN3_CFG, "t", outtype=outtype))
        assert (ty["token_embd.weight"], ty["blk.0.ffn_down.weight"]) == (emb, down)
    with pytest.raises(InventoryError, match="outtype 'q4'"):
        inventory_from_tensors(ts, QWEN3_CFG, "t", outtype="q4")


def test_duplicate_mapped_names():
    ts = [T("model.norm.weight", 32), T("language_model.model.norm.weight", 32)]
    with pytest.raises(InventoryError, match="appears twice"):
        inventory_from_tensors(ts, QWEN3_CFG, "t")


# ------------------------------------------------------------------------------------------------
# the Hub (offline: a local huggingface_hub cache for config.json, metadata from real headers)


def _hf_cache(root: Path, repo_id: str, config: dict) -> None:
    commit = "0" * 40
    base = root / ("models--" + repo_id.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))


def _fake_metadata(files: dict[str, Path]):
    from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

    def metadata(repo_id, *, revision=None, **kw):
        fm = {}
        weight_map = {}
        for fname, path in files.items():
            raw = path.read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8 : 8 + n])
            header.pop("__metadata__", None)
            tensors = {
                k: TensorInfo(
                    dtype=v["dtype"], shape=v["shape"], data_offsets=tuple(v["data_offsets"])
                )
                for k, v in header.items()
            }
            fm[fname] = SafetensorsFileMetadata(metadata={}, tensors=tensors)
            weight_map |= dict.fromkeys(tensors, fname)
        return SafetensorsRepoMetadata(
            metadata=None, sharded=True, weight_map=weight_map, files_metadata=fm
        )

    return metadata


def test_hub_matches_local(tmp_path):
    from huggingface_hub import hf_hub_download

    model = tmp_path / "model"
    model.mkdir()
    _llama_files(model)
    cache = tmp_path / "cache"
    _hf_cache(cache, "org/tiny-llama", LLAMA_CFG)
    files = {p.name: p for p in model.glob("*.safetensors")}
    download = functools.partial(hf_hub_download, cache_dir=cache, local_files_only=True)
    inv = inventory_from_hub("org/tiny-llama", download=download, metadata=_fake_metadata(files))
    local = inventory_from_safetensors(model, LLAMA_CFG, "hf://org/tiny-llama")
    assert inv == local
    assert inv.origin == "hf://org/tiny-llama"

    # config.json not in the (offline) cache: an InventoryError naming the repo and revision
    with pytest.raises(InventoryError, match=r"hf://org/other@v1"):
        inventory_from_hub("org/other", "v1", download=download, metadata=_fake_metadata(files))


def test_hub_not_a_safetensors_repo(tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import NotASafetensorsRepoError

    cache = tmp_path / "cache"
    _hf_cache(cache, "org/pt-only", LLAMA_CFG)

    def metadata(repo_id, **kw):
        raise NotASafetensorsRepoError("no safetensors")

    download = functools.partial(hf_hub_download, cache_dir=cache, local_files_only=True)
    with pytest.raises(InventoryError, match="hf://org/pt-only: repository has no safetensors"):
        inventory_from_hub("org/pt-only", download=download, metadata=metadata)


# ------------------------------------------------------------------------------------------------
# the registry inventories


@pytest.mark.parametrize(
    ("key", "arch", "n_layers", "n_tensors", "params"),
    [
        ("gemma3-27b", "gemma3", 62, 808, 27_009_346_304),
        ("deepseek-v3.1", "deepseek2", 61, 1086, 671_026_419_200),
        ("smollm2-135m", "llama", 30, 272, 134_515_008),
        ("gemma3-270m", "gemma3", 18, 236, 268_098_176),
    ],
)
def test_registry_inventory_totals(key, arch, n_layers, n_tensors, params):
    inv = load_inventory(INVENTORIES / f"{key}.json")
    assert (inv.arch, inv.n_layers, len(inv.tensors)) == (arch, n_layers, n_tensors)
    assert parameter_count(inv) == params


def test_registry_deepseek_shapes():
    s = shapes(load_inventory(INVENTORIES / "deepseek-v3.1.json"))
    assert s["blk.0.attn_k_b.weight"] == (128, 512, 128)
    assert s["blk.0.attn_v_b.weight"] == (512, 128, 128)
    assert s["blk.3.ffn_gate_exps.weight"] == (7168, 2048, 256)
    assert s["blk.60.ffn_down_exps.weight"] == (2048, 7168, 256)
    assert "blk.61.attn_norm.weight" not in s and "blk.2.ffn_gate_exps.weight" not in s


def test_registry_inventories_rebuild_identically(capsys):
    assert _make_inventories().main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "671,026,419,200 parameters" in out and "27,009,346,304 parameters" in out


@pytest.mark.slow
def test_identical_to_llama_cpp_converter():
    """llama.cpp's own converter on tiny real checkpoints gives the same tensor lists (~25 s)."""
    verify = INVENTORIES / "verify_with_converter.py"
    llama_cpp = Path("/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
    if not (llama_cpp / "conversion" / "base.py").is_file():
        pytest.skip("no llama.cpp checkout with conversion/")
    pytest.importorskip("torch")
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, str(verify), "--llama-cpp", str(llama_cpp)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert r.stdout.count("identical") == 4
