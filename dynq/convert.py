"""Inventories from safetensors headers (local files or the Hub), as a converted GGUF holds them.

What llama.cpp's ``convert_hf_to_gguf.py`` writes for a model is decided by the tensor *names*,
*shapes* and *dtypes* alone, plus ``config.json``: so a model's GGUF inventory can be had from its
safetensors headers (the 8-byte length and the JSON after it) without reading one weight. This
module replays, on headers, the part of the converter that decides the tensor set:

* ``filter_tensors``: multimodal towers skipped (``vision_tower``, ``multi_modal_projector``...),
  ``language_model.`` prefixes dropped, ``e_score_correction_bias`` renamed;
* FP8 checkpoints (``quantization_config.quant_method == "fp8"``): ``*_scale_inv`` dropped, the
  weights dequantized (and so written at the output type like any other weight);
* the per-architecture ``modify_tensors``: experts merged into 3-D ``ffn_*_exps`` tensors,
  DeepSeek's ``kv_b_proj`` split into ``attn_k_b``/``attn_v_b``, the MTP layer skipped, Gemma 3's
  out-of-vocabulary embedding rows dropped, Llama 3's generated ``rope_freqs``;
* names mapped with gguf's ``TensorNameMap`` (an unmappable tensor is an error, as it is there);
* the output type of each tensor: 1-D tensors, norms, routers and biases F32, everything else the
  ``--outtype`` (default "auto": BF16 or F16 from the first 2-D 16-bit tensor, else F16).

Tensor order follows the converter too: shards in sorted file-name order, tensors sorted by name
within a shard (gguf's ``SafetensorsLocal``), merged/split tensors where the converter emits them.
Written against llama.cpp's ``conversion/`` package (base.py, llama.py, gemma.py, qwen.py,
deepseek.py) as vendored with llama-cpp-python 0.3.36.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from dynq.errors import InventoryError
from dynq.inventory import Inventory, TensorInfo

__all__ = [
    "ARCHITECTURES",
    "HFTensor",
    "inventory_from_dir",
    "inventory_from_hub",
    "inventory_from_safetensors",
    "inventory_from_tensors",
    "parameter_count",
    "read_safetensors_header",
    "safetensors_tensors",
]

# A safetensors header larger than this is not a header (the format caps it at 100 MB).
_MAX_HEADER = 100_000_000

MT = gguf.MODEL_TENSOR
QT = gguf.GGMLQuantizationType


@dataclass(frozen=True, slots=True)
class HFTensor:
    """One tensor of a safetensors header: HF name, PyTorch shape, safetensors dtype string."""

    name: str
    shape: tuple[int, ...]
    dtype: str


# ----------------------------------------------------------------------------------------------
# Reading headers


def read_safetensors_header(path: str | os.PathLike[str]) -> list[HFTensor]:
    """The tensors of one safetensors file, from its header alone, sorted by name.

    Sorted as gguf's ``SafetensorsLocal`` (and so the converter) iterates them. Only the first
    ``8 + header length`` bytes of the file are read.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InventoryError(f"{p}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise InventoryError(
                    f"{p}: not a safetensors file (header length {n} is over the 100 MB limit)"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise InventoryError(f"{p}: file not found") from None
    except OSError as e:
        raise InventoryError(f"{p}: cannot read: {e}") from None
    if len(raw) < n:
        raise InventoryError(f"{p}: truncated safetensors header ({len(raw)} of {n} bytes)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InventoryError(f"{p}: safetensors header is not JSON: {e}") from None
    return _tensors_from_header(header, str(p))


def _tensors_from_header(header: Any, where: str) -> list[HFTensor]:
    if not isinstance(header, dict):
        raise InventoryError(f"{where}: safetensors header is not a JSON object")
    out: list[HFTensor] = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(meta, dict):
            raise InventoryError(f"{where}: tensor '{name}': header entry is not an object")
        dtype, shape = meta.get("dtype"), meta.get("shape")
        if not isinstance(dtype, str):
            raise InventoryError(f"{where}: tensor '{name}': dtype missing or not a string")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InventoryError(
                f"{where}: tensor '{name}': shape must be a list of non-negative integers"
            )
        out.append(HFTensor(name, tuple(shape), dtype))
    out.sort(key=lambda t: t.name)
    return out


def _part_files(
    paths_or_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """The safetensors files of a model, in the order the converter reads them."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = Path(paths_or_dir)
        if p.is_file():
            return [p]
        if not p.is_dir():
            raise InventoryError(f"{p}: no such file or directory")
        index = p / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
                raise InventoryError(f"{index}: not a readable index: {e}") from None
            if not isinstance(weight_map, dict):
                raise InventoryError(f"{index}: weight_map: missing or not an object")
            return [p / name for name in sorted(set(weight_map.values()))]
        parts = sorted(
            f.name for f in p.iterdir() if f.name.startswith("model") and f.suffix == ".safetensors"
        )
        if not parts:
            raise InventoryError(f"{p}: no model*.safetensors files")
        return [p / name for name in parts]
    files = [Path(x) for x in paths_or_dir]
    if not files:
        raise InventoryError("no safetensors files given")
    return sorted(files, key=lambda f: f.name)


def safetensors_tensors(
    paths_or_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[HFTensor]:
    """Every tensor of a model's safetensors files, headers only, in the converter's order."""
    out: list[HFTensor] = []
    seen: dict[str, Path] = {}
    for f in _part_files(paths_or_dir):
        for t in read_safetensors_header(f):
            if t.name in seen:
                raise InventoryError(f"{f}: tensor '{t.name}' is also in {seen[t.name]}")
            seen[t.name] = f
            out.append(t)
    return out


# ----------------------------------------------------------------------------------------------
# The converter, replayed on names and shapes


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """How one HF architecture converts: the GGUF arch and the converter class's transforms."""

    model_arch: gguf.MODEL_ARCH
    family: str  # which modify_tensors: llama, gemma3, qwen3, qwen3moe, deepseek2

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.model_arch]


# config.json ``architectures[0]`` -> converter class (see @ModelBase.register in conversion/).
ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, "llama"),
    "LLaMAForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, "llama"),
    "MistralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, "llama"),
    "MixtralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, "llama"),
    "Gemma3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.GEMMA3, "gemma3"),
    "Gemma3ForConditionalGeneration": ArchSpec(gguf.MODEL_ARCH.GEMMA3, "gemma3"),
    "Qwen3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN3, "qwen3"),
    "Qwen3MoeForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN3MOE, "qwen3moe"),
    "DeepseekV2ForCausalLM": ArchSpec(gguf.MODEL_ARCH.DEEPSEEK2, "deepseek2"),
    "DeepseekV3ForCausalLM": ArchSpec(gguf.MODEL_ARCH.DEEPSEEK2, "deepseek2"),
}

# transformers defaults the converter sees through AutoConfig when config.json leaves a key out
# (Gemma3TextConfig.vocab_size = 262208: google/gemma-3-*-it configs omit it in text_config).
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3": {"vocab_size": 262208},
}

# TextModel.filter_tensors: multimodal tensors that a text conversion skips.
_MM_PREFIXES = (
    "mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.", "sound_encoder.",
    "sound_projection.", "speech_embeddings.",
)  # fmt: skip
_MM_PARTS = (
    "visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.", "code2wav.",
    "projector.", "pre_mm_projector_norm", "image_newline", "view_seperator", "patch_embed",
    "patch_embedding", "patch_merger.", "patch_merge_mlp.", "model.connector.",
)  # fmt: skip

# prepare_tensors: never written in the output type (a subset of the converter's list: the ones
# gguf knows; names missing from an older gguf are simply absent from the arch).
_FORCE_F32_NAMES = (
    "FFN_GATE_INP", "FFN_GATE_INP_SHEXP", "POS_EMBD", "TOKEN_TYPES", "SSM_CONV1D", "SHORTCONV_CONV",
    "TIME_MIX_FIRST", "TIME_MIX_W1", "TIME_MIX_W2", "TIME_MIX_DECAY_W1", "TIME_MIX_DECAY_W2",
    "TIME_MIX_LERP_FUSED", "POSNET_NORM1", "POSNET_NORM2", "V_ENC_EMBD_POS", "A_ENC_EMBD_POS",
    "ALTUP_CORRECT_COEF", "ALTUP_PREDICT_COEF", "SSM_CONV1D_Q", "SSM_CONV1D_K", "SSM_CONV1D_V",
    "INDEXER_PROJ",
)  # fmt: skip
_FORCE_F32 = tuple(getattr(MT, n) for n in _FORCE_F32_NAMES if hasattr(MT, n))

_OUTTYPES = {
    "f32": QT.F32,
    "f16": QT.F16,
    "bf16": QT.BF16,
    "q8_0": QT.Q8_0,
}


@dataclass
class _Converter:
    """State of one conversion: the hparams, the name map and the expert buffers."""

    spec: ArchSpec
    hparams: dict[str, Any]
    origin: str
    hf_arch: str
    block_count: int = 0
    tensor_map: gguf.TensorNameMap = field(init=False)
    experts: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("n_layers", "num_hidden_layers", "n_layer", "num_layers"):
            if key in self.hparams:
                self.block_count = int(self.hparams[key])
                break
        else:
            raise InventoryError(f"{self.origin}: config: num_hidden_layers missing")
        self.tensor_map = gguf.get_tensor_name_map(self.spec.model_arch, self.block_count)

    def err(self, msg: str) -> InventoryError:
        return InventoryError(f"{self.origin}: {msg}")

    def need(self, key: str) -> Any:
        if key not in self.hparams:
            raise self.err(f"config: '{key}' missing (needed for {self.spec.name})")
        return self.hparams[key]

    # -- filter_tensors --------------------------------------------------------------------------

    def filter_name(self, name: str) -> str | None:
        fam = self.spec.family
        if fam == "deepseek2" and ("sam_model" in name or "qwen2_model" in name):
            return None
        if fam == "llama" and "text_model." in name:
            name = name.replace("text_model.", "")
        if name.startswith(_MM_PREFIXES) or any(part in name for part in _MM_PARTS):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        if "language_model." in name:
            name = name.replace("language_model.", "")
        return name

    # -- modify_tensors --------------------------------------------------------------------------

    def map_name(self, name: str) -> str:
        new = self.tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise self.err(
                f"tensor '{name}': no GGUF name for it in arch {self.spec.name} "
                "(convert_hf_to_gguf would stop with 'Can not map tensor')"
            )
        return new

    def base(self, name: str, shape: tuple[int, ...]) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        yield name, self.map_name(name), shape

    def merge_experts(
        self,
        name: str,
        shape: tuple[int, ...],
        bid: int | None,
        n_experts: int,
        w_names: Sequence[str],
        expert_fmt: str,
        merged_fmt: str,
    ) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        """Buffer one expert tensor; on a layer's last one, yield the stacked 3-D tensors."""
        if bid is None:
            raise self.err(f"tensor '{name}': expert tensor without a layer number")
        buf = self.experts.setdefault(bid, {})
        buf[name] = shape
        if len(buf) < n_experts * 3:
            return
        for w in w_names:
            shapes = []
            for xid in range(n_experts):
                ename = expert_fmt.format(bid=bid, xid=xid, w=w)
                if ename not in buf:
                    raise self.err(f"layer {bid}: expert tensor '{ename}' missing")
                shapes.append(buf.pop(ename))
            if len(set(shapes)) != 1:
                raise self.err(
                    f"layer {bid}: experts of '{w}' differ in shape: {sorted(set(shapes))}"
                )
            yield from self.base(merged_fmt.format(bid=bid, w=w), (n_experts, *shapes[0]))

    def modify(
        self, name: str, shape: tuple[int, ...], bid: int | None
    ) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        fam = self.spec.family
        hp = self.hparams
        if fam == "llama":
            if self.hf_arch == "LlamaModel":
                name = "model." + name
            if "block_sparse_moe.experts" in name:
                yield from self.merge_experts(
                    name, shape, bid, int(self.need("num_local_experts")), ("w1", "w2", "w3"),
                    "model.layers.{bid}.block_sparse_moe.experts.{xid}.{w}.weight",
                    "layers.{bid}.feed_forward.experts.{w}.weight",
                )  # fmt: skip
                return
        elif fam == "gemma3":
            if "embed_tokens.weight" in name and shape:
                # Gemma3Model.modify_tensors drops out-of-vocabulary rows (data[:n_vocab_real]).
                n_vocab = int(self.need("vocab_size"))
                shape = (min(shape[0], n_vocab), *shape[1:])
        elif fam == "qwen3moe":
            if name.endswith(("mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
                yield from self.base(name if name.endswith(".weight") else name + ".weight", shape)
                return
            if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight")):
                if len(shape) < 3 or shape[-2] % 2:
                    raise self.err(f"tensor '{name}': unexpected gate_up_proj shape {shape}")
                half = (*shape[:-2], shape[-2] // 2, shape[-1])
                stem = name.removesuffix(".weight").removesuffix(".gate_up_proj")
                yield from self.base(f"{stem}.gate_proj.weight", half)
                yield from self.base(f"{stem}.up_proj.weight", half)
                return
            if "experts" in name:
                n = hp.get("num_local_experts", hp.get("num_experts"))
                if n is None:
                    raise self.err("config: 'num_experts' missing (needed for qwen3moe)")
                yield from self.merge_experts(
                    name, shape, bid, int(n), ("down_proj", "gate_proj", "up_proj"),
                    "model.layers.{bid}.mlp.experts.{xid}.{w}.weight",
                    "model.layers.{bid}.mlp.experts.{w}.weight",
                )  # fmt: skip
                return
        elif fam == "deepseek2":
            if hp.get("tie_word_embeddings", False) and name in (
                "lm_head.weight",
                "model.lm_head.weight",
            ):
                return
            m = re.match(r"model.layers.(\d+)", name)
            if m and int(m.group(1)) >= int(self.need("num_hidden_layers")):
                return  # the MTP (next-token prediction) layer: skip_mtp
            if "mlp.experts" in name:
                yield from self.merge_experts(
                    name, shape, bid, int(self.need("n_routed_experts")),
                    ("down_proj", "gate_proj", "up_proj"),
                    "model.layers.{bid}.mlp.experts.{xid}.{w}.weight",
                    "model.layers.{bid}.mlp.experts.{w}.weight",
                )  # fmt: skip
                return
            if name.endswith("kv_b_proj.weight"):
                n_head_kv = int(hp.get("num_key_value_heads", self.need("num_attention_heads")))
                v_dim = int(self.need("v_head_dim"))
                nope = int(self.need("qk_nope_head_dim"))
                if len(shape) != 2 or shape[0] != n_head_kv * (v_dim + nope):
                    raise self.err(
                        f"tensor '{name}': shape {list(shape)} is not "
                        f"[{n_head_kv} * ({v_dim} + {nope}), kv_lora_rank]"
                    )
                kv_lora = shape[1]
                # view(n_head_kv, v+nope, kv_lora), split on dim 1, k_b transposed(1, 2)
                yield from self.base(
                    name.replace("kv_b_proj", "k_b_proj"), (n_head_kv, kv_lora, nope)
                )
                yield from self.base(
                    name.replace("kv_b_proj", "v_b_proj"), (n_head_kv, v_dim, kv_lora)
                )
                return
        yield from self.base(name, shape)

    def extra_tensors(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """generate_extra_tensors: Llama 3's rope_freqs (one factor per rotary pair)."""
        if self.spec.family != "llama":
            return
        rp = self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {}
        rp = rp.get("full_attention", rp)
        if rp and str(rp.get("rope_type", rp.get("type", ""))).lower() == "llama3":
            dim = self.hparams.get("head_dim") or (
                int(self.need("hidden_size")) // int(self.need("num_attention_heads"))
            )
            yield gguf.TENSOR_NAMES[MT.ROPE_FREQS] + ".weight", ((int(dim) + 1) // 2,)

    # -- types -----------------------------------------------------------------------------------

    def matches(self, new_name: str, key: MT, bid: int | None) -> bool:
        if key not in gguf.MODEL_TENSORS[self.spec.model_arch]:
            return False
        key_name = gguf.TENSOR_NAMES[key]
        if "{bid}" in key_name:
            if bid is None:
                return False
            key_name = key_name.format(bid=bid)
        elif bid is not None:
            return False
        return new_name == key_name + ".weight"

    def out_type(self, new_name: str, shape: tuple[int, ...], bid: int | None, ftype: QT) -> QT:
        if len(shape) <= 1 or new_name.endswith("_norm.weight"):
            return QT.F32
        if any(self.matches(new_name, k, bid) for k in _FORCE_F32) or new_name[-7:] not in (
            ".weight",
            ".lora_a",
            ".lora_b",
        ):
            return QT.F32
        if ftype == QT.Q8_0 and shape[-1] % 32:
            return QT.F16  # gguf.QuantError -> "falling back to F16"
        return ftype


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    hp = dict(config)
    if isinstance(hp.get("text_config"), dict):
        hp = {**hp, **hp["text_config"]}  # TextModel: text_config moved to the root level
    return hp


def _guess_ftype(tensors: Sequence[HFTensor]) -> QT:
    """ModelBase.__init__'s --outtype auto: the first 2-D+ BF16/F16 tensor decides; else F16."""
    for t in tensors:
        if len(t.shape) < 2:
            continue
        if t.dtype == "BF16":
            return QT.BF16
        if t.dtype == "F16":
            return QT.F16
    return QT.F16


def _dequant(tensors: list[HFTensor], hparams: dict[str, Any], origin: str) -> list[HFTensor]:
    """ModelBase.dequant_model, for the quantizations whose headers this can follow."""
    qc = hparams.get("quantization_config")
    method = qc.get("quant_method") if isinstance(qc, dict) else None
    if method is None:
        return tensors
    if method != "fp8":
        raise InventoryError(
            f"{origin}: config: quantization_config.quant_method '{method}' is not supported "
            "here (only unquantized and fp8 checkpoints)"
        )
    names = {t.name for t in tensors}
    drop: set[str] = set()
    for t in tensors:
        if t.name.endswith("_scale_inv"):
            weight = t.name.removesuffix("_scale_inv")
            if weight not in names:
                raise InventoryError(f"{origin}: tensor '{t.name}' scales a missing '{weight}'")
            drop.add(t.name)
        elif t.name.endswith((".activation_scale", "_activation_scale", ".qscale_act")):
            drop.add(t.name)
        elif t.name.endswith(".qscale_weight"):
            drop.add(t.name)
    # dequantized weights come out as float32 (dequant_simple), at the same place in the order
    return [
        HFTensor(t.name, t.shape, "F32") if t.name + "_scale_inv" in drop else t
        for t in tensors
        if t.name not in drop
    ]


def inventory_from_tensors(
    tensors: Iterable[HFTensor],
    config: dict[str, Any],
    origin: str,
    *,
    outtype: str = "auto",
) -> Inventory:
    """The GGUF inventory ``convert_hf_to_gguf.py --outtype <outtype>`` would write.

    ``tensors`` are the checkpoint's tensors in the converter's reading order (see
    :func:`safetensors_tensors`); ``config`` is the model's ``config.json``.
    """
    archs = config.get("architectures") or []
    if not archs or not isinstance(archs, list):
        raise InventoryError(f"{origin}: config: 'architectures' missing")
    hf_arch = str(archs[0])
    spec = ARCHITECTURES.get(hf_arch)
    if spec is None:
        raise InventoryError(
            f"{origin}: config: architecture '{hf_arch}' is not supported here "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    hparams = _hparams(config)
    for k, v in _CONFIG_DEFAULTS.get(spec.family, {}).items():
        hparams.setdefault(k, v)
    conv = _Converter(spec, hparams, origin, hf_arch)

    # index_tensors + filter_tensors
    indexed: list[HFTensor] = []
    seen: set[str] = set()
    for t in tensors:
        name = conv.filter_name(t.name)
        if name is None:
            continue
        if name in seen:
            raise InventoryError(f"{origin}: tensor '{name}' appears twice")
        seen.add(name)
        indexed.append(HFTensor(name, t.shape, t.dtype))
    if outtype == "auto":
        ftype = _guess_ftype(indexed)
    elif outtype.lower() in _OUTTYPES:
        ftype = _OUTTYPES[outtype.lower()]
    else:
        raise InventoryError(
            f"{origin}: outtype '{outtype}' unknown (auto, {', '.join(_OUTTYPES)})"
        )
    indexed = _dequant(indexed, hparams, origin)

    # prepare_tensors
    out: list[TensorInfo] = []
    names: set[str] = set()

    def emit(new_name: str, shape: tuple[int, ...], bid: int | None) -> None:
        if new_name in names:
            raise InventoryError(f"{origin}: two tensors map to '{new_name}'")
        names.add(new_name)
        gshape = tuple(reversed(shape))
        out.append(
            TensorInfo(
                name=new_name, shape=gshape, type=conv.out_type(new_name, shape, bid, ftype).name
            )
        )

    for new_name, shape in conv.extra_tensors():
        emit(new_name, shape, None)
    for t in indexed:
        if t.name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            continue
        bid = next((int(p) for p in t.name.split(".") if p.isdecimal()), None)
        for _src, new_name, shape in conv.modify(t.name, t.shape, bid):
            emit(new_name, shape, bid)
    left = sorted(n for buf in conv.experts.values() for n in buf)
    if left:
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        raise InventoryError(f"{origin}: unprocessed expert tensors: {', '.join(left[:3])}{more}")
    if not out:
        raise InventoryError(f"{origin}: no tensors left after conversion")
    return Inventory(
        arch=spec.name,
        origin=origin,
        origin_kind="safetensors",
        alignment=gguf.GGUF_DEFAULT_ALIGNMENT,
        n_layers=conv.block_count,
        hparams=_quant_hparams(hparams),
        tensors=out,
    )


def _quant_hparams(hp: dict[str, Any]) -> dict[str, int]:
    """What llama-quantize's rules read from the header, from config.json's names."""
    out: dict[str, int] = {}
    n_head = hp.get("num_attention_heads")
    if isinstance(n_head, int):
        out["n_head"] = n_head
        out["n_head_kv"] = int(hp.get("num_key_value_heads") or n_head)
    for key in ("n_routed_experts", "num_local_experts", "num_experts"):
        if isinstance(hp.get(key), int):
            out["n_expert"] = int(hp[key])
            break
    return out


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(f"{path}: config.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InventoryError(f"{path}: not a readable config.json: {e}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: config.json is not a JSON object")
    return data


def inventory_from_safetensors(
    paths_or_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    config: dict[str, Any] | None = None,
    origin: str | None = None,
    *,
    outtype: str = "auto",
) -> Inventory:
    """The GGUF inventory of a local safetensors checkpoint, from its headers alone.

    ``paths_or_dir``: a model directory (its ``model.safetensors.index.json`` or its
    ``model*.safetensors`` files), one file, or a list of files. ``config``: the parsed
    ``config.json``; read from the directory when omitted.
    """
    if config is None:
        if not isinstance(paths_or_dir, (str, os.PathLike)):
            raise InventoryError("config is needed when a list of files is given")
        base = Path(paths_or_dir)
        config = _load_config((base if base.is_dir() else base.parent) / "config.json")
    if origin is None:
        origin = (
            str(paths_or_dir) if isinstance(paths_or_dir, (str, os.PathLike)) else "safetensors"
        )
    return inventory_from_tensors(
        safetensors_tensors(paths_or_dir), config, origin, outtype=outtype
    )


def inventory_from_dir(path: str | os.PathLike[str], *, outtype: str = "auto") -> Inventory:
    """A model folder: its safetensors headers and config.json (origin: the folder's path)."""
    p = Path(path)
    if not p.is_dir():
        raise InventoryError(f"{p}: not a directory of safetensors files with a config.json")
    return inventory_from_safetensors(p, None, str(p), outtype=outtype)


# ----------------------------------------------------------------------------------------------
# The Hub


def _hub_tensors(meta: Any) -> list[HFTensor]:
    """A ``huggingface_hub.SafetensorsRepoMetadata`` as HFTensors in the converter's order."""
    out: list[HFTensor] = []
    for filename in sorted(meta.files_metadata):
        fm = meta.files_metadata[filename]
        for name in sorted(fm.tensors):
            ti = fm.tensors[name]
            out.append(HFTensor(name, tuple(int(d) for d in ti.shape), str(ti.dtype)))
    return out


def inventory_from_hub(
    repo_id: str,
    revision: str | None = None,
    *,
    outtype: str = "auto",
    download: Callable[..., str] | None = None,
    metadata: Callable[..., Any] | None = None,
) -> Inventory:
    """The GGUF inventory of a Hub model: its config.json and the safetensors headers only.

    Uses ``huggingface_hub.hf_hub_download`` for config.json (cached like any download, so
    ``HF_HUB_OFFLINE=1`` works from a warm cache) and ``get_safetensors_metadata``, which reads
    each shard's header with an HTTP range request. ``download``/``metadata`` replace those two
    functions (tests, mirrors).
    """
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    download = download or huggingface_hub.hf_hub_download
    metadata = metadata or huggingface_hub.get_safetensors_metadata
    origin = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        cfg_path = download(repo_id=repo_id, filename="config.json", revision=revision)
        meta = metadata(repo_id, revision=revision)
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
        raise InventoryError(f"{origin}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    except hf_errors.NotASafetensorsRepoError:
        raise InventoryError(f"{origin}: repository has no safetensors weights") from None
    except (hf_errors.EntryNotFoundError, hf_errors.LocalEntryNotFoundError) as e:
        raise InventoryError(f"{origin}: {str(e).splitlines()[0]}") from None
    except (hf_errors.HfHubHTTPError, hf_errors.SafetensorsParsingError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InventoryError(f"{origin}: cannot read from the Hub: {msg}") from None
    config = _load_config(Path(cfg_path))
    return inventory_from_tensors(_hub_tensors(meta), config, origin, outtype=outtype)


def parameter_count(inv: Inventory) -> int:
    """Total number of weights of an inventory (elements of every tensor)."""
    return sum(t.n_elements for t in inv.tensors)
