"""Check dynq.convert against llama.cpp's own converter (``conversion/`` of a llama.cpp checkout).

For each case, a checkpoint is written to a temporary directory and both are run on it:
llama.cpp's converter class (``prepare_tensors`` with a dry-run GGUFWriter, in a subprocess so that
its bundled gguf-py does not mix with the installed one) and ``dynq.convert`` (installed gguf).
The tensor lists (name, GGUF shape, type, order) must be identical.

* ``--tiny`` (default): small checkpoints with real data for llama (Llama 3 rope), gemma3
  (multimodal), qwen3moe and deepseek2 (FP8, MTP layer); ``--outtype auto`` on both sides.
* ``--registry``: the header-only stand-ins of ``make_inventories.py`` (Gemma 3 27B, DeepSeek-V3.1),
  compared with the saved JSON. Header-only files cannot be read, so the converter gets
  ``--outtype bf16`` (what auto picks for both: their embeddings are BF16) and, since
  transformers' AutoConfig is stubbed out here, Gemma 3's default ``vocab_size`` in config.json.
  DeepSeek-V3.1 takes about 30 s and 1 GB.

Needs torch and a llama.cpp checkout (``--llama-cpp``, default: the one vendored by
llama-cpp-python 0.3.36 in /work/ext); transformers is not needed (stubbed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_LLAMA_CPP = Path("/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")

_STUB = """
class AutoConfig:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        raise RuntimeError("transformers stubbed out: read config.json")
class AutoTokenizer:
    pass
"""


def _real(llama_cpp: Path, model_dir: Path, outtype: str) -> None:
    """(subprocess) print the converter's tensor list as JSON."""
    import logging

    stub = model_dir.parent / "_stub"
    (stub / "transformers").mkdir(parents=True, exist_ok=True)
    (stub / "transformers" / "__init__.py").write_text(_STUB)
    sys.path[:0] = [str(stub), str(llama_cpp / "gguf-py"), str(llama_cpp)]
    logging.basicConfig(level=logging.ERROR)
    import gguf
    from conversion import base, load_all_models

    load_all_models()
    cfg = json.loads((model_dir / "config.json").read_text())
    cls = base.ModelBase._model_classes[base.ModelType.TEXT][cfg["architectures"][0]]
    ftype = {"auto": gguf.LlamaFileType.GUESSED, "bf16": gguf.LlamaFileType.MOSTLY_BF16}[outtype]
    m = cls(model_dir, ftype, model_dir / "out.gguf", dry_run=True)
    m.prepare_tensors()
    out = [
        [name, [int(x) for x in reversed(ti.shape)], ti.dtype.name]
        for shard in m.gguf_writer.tensors
        for name, ti in shard.items()
    ]
    print(json.dumps(out))


def _write_real(d: Path, header: dict[str, Any], cfg: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    dtypes = {
        "BF16": torch.bfloat16,
        "F16": torch.float16,
        "F32": torch.float32,
        "F8_E4M3": torch.float8_e4m3fn,
    }
    d.mkdir(parents=True)
    tensors = {n: torch.full(s, 0.5).to(dtypes[dt]) for n, (s, dt) in header.items()}
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg))


def _tiny_cases(mk: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    ds = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 32,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "vocab_size": 50,
        "num_nextn_predict_layers": 1,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    g = json.loads(json.dumps(mk.GEMMA3_27B_CONFIG))
    g["text_config"].update(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        head_dim=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    g["vision_config"].update(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, image_size=56
    )
    ll = dict(
        mk.SMOLLM2_135M_CONFIG,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "original_max_position_embeddings": 8192,
        },
    )
    q = {
        "architectures": ["Qwen3MoeForCausalLM"],
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": 2,
        "num_experts": 4,
        "moe_intermediate_size": 32,
        "vocab_size": 50,
    }
    bf = "BF16"
    hq: dict[str, Any] = {
        "model.embed_tokens.weight": ((50, 64), bf),
        "model.norm.weight": ((64,), bf),
    }
    hq["lm_head.weight"] = ((50, 64), bf)
    for i in range(2):
        p = f"model.layers.{i}."
        for n, s in (
            ("input_layernorm", (64,)),
            ("post_attention_layernorm", (64,)),
            ("self_attn.q_norm", (16,)),
            ("self_attn.k_norm", (16,)),
            ("self_attn.q_proj", (64, 64)),
            ("self_attn.k_proj", (32, 64)),
            ("self_attn.v_proj", (32, 64)),
            ("self_attn.o_proj", (64, 64)),
            ("mlp.gate", (4, 64)),
        ):
            hq[p + n + ".weight"] = (s, bf)
        for x in range(4):
            hq[p + f"mlp.experts.{x}.gate_proj.weight"] = ((32, 64), bf)
            hq[p + f"mlp.experts.{x}.up_proj.weight"] = ((32, 64), bf)
            hq[p + f"mlp.experts.{x}.down_proj.weight"] = ((64, 32), bf)
    # gemma3: embed has 120 rows, the vocabulary 100 (tokenizer.json written below)
    return {
        "deepseek2": (mk.deepseek_v3_header(ds), ds),
        "gemma3": (mk.gemma3_header(g, 120), g),
        "llama": (mk.llama_header(ll), ll),
        "qwen3moe": (hq, q),
    }


def _compare(name: str, real: list[Any], mine: list[Any]) -> bool:
    same = real == mine
    verdict = "identical" if same else "DIFFERENT"
    print(f"{name}: converter {len(real)} tensors, dynq {len(mine)}: {verdict}")
    if not same:
        for a, b in zip(real, mine, strict=False):
            if a != b:
                print(f"  first difference: converter {a} / dynq {b}")
                break
    return same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP)
    ap.add_argument("--registry", action="store_true", help="check the registry inventories")
    ap.add_argument("--_real", nargs=2, metavar=("DIR", "OUTTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._real:
        _real(args.llama_cpp, Path(args._real[0]), args._real[1])
        return 0
    if not (args.llama_cpp / "conversion" / "base.py").is_file():
        print(f"{args.llama_cpp}: not a llama.cpp checkout with conversion/", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import make_inventories as mk

    from dynq.convert import inventory_from_safetensors

    def real(d: Path, outtype: str) -> list[Any]:
        cmd = [
            sys.executable,
            __file__,
            "--llama-cpp",
            str(args.llama_cpp),
            "--_real",
            str(d),
            outtype,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise RuntimeError(f"converter failed on {d}:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.splitlines()[-1])

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if args.registry:
            for key, (repo, cfg, make) in mk.MODELS.items():
                d = Path(tmp) / key
                d.mkdir()
                mk.write_header_only(d / "model.safetensors", make())
                cfg = json.loads(json.dumps(cfg))
                if key == "gemma3-27b":
                    cfg["text_config"]["vocab_size"] = mk.GEMMA3_TEXT_VOCAB
                    vocab = {f"t{i}": i for i in range(mk.GEMMA3_TEXT_VOCAB)}
                    (d / "tokenizer.json").write_text(
                        json.dumps({"model": {"vocab": vocab}, "added_tokens": []})
                    )
                (d / "config.json").write_text(json.dumps(cfg))
                saved = json.loads((HERE / f"{key}.json").read_text())["tensors"]
                mine = [[t["name"], t["shape"], t["type"]] for t in saved]
                ok &= _compare(f"{key} ({repo})", real(d, "bf16"), mine)
        else:
            for key, (header, cfg) in _tiny_cases(mk).items():
                d = Path(tmp) / key
                _write_real(d, header, cfg)
                if key == "gemma3":
                    vocab = {f"t{i}": i for i in range(100)}
                    (d / "tokenizer.json").write_text(
                        json.dumps({"model": {"vocab": vocab}, "added_tokens": []})
                    )
                inv = inventory_from_safetensors(d, cfg, key)
                mine = [[t.name, list(t.shape), t.type] for t in inv.tensors]
                ok &= _compare(key, real(d, "auto"), mine)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
