"""llama.cpp's stock quantization mixes (``llama-quantize <model> Q4_K_M``), per tensor.

A recipe that says ``extends = "llama.cpp:Q4_K_M"`` starts from the types llama-quantize would
choose for every tensor of the model. This module reproduces that choice in Python, following
``src/llama-quant.cpp`` of the llama.cpp vendored by llama-cpp-python 0.3.36 (ggml 0.25.3):

* :func:`is_quantizable` is ``tensor_allows_quantization``: which tensors are quantized at all
  (2-D and 3-D tensors named ``*weight``, except norms, routers, position embeddings, ...);
* :func:`stock_types` is the preliminary loop of ``llama_model_quantize_impl`` calling
  ``llama_tensor_get_type`` / ``llama_tensor_get_type_impl`` for every tensor, in the order the
  model loader sorts them (the ``i_attention_wv`` / ``i_ffn_*`` counters depend on it);
* :func:`fallback` is ``tensor_type_fallback``: what a type becomes when its block does not
  divide the row length.

Only default ``llama_model_quantize_params`` are modelled: no ``--pure``, ``--tensor-type``,
``--output-tensor-type``, ``--token-embedding-type``, ``--leave-output-tensor`` or ``COPY``; an
importance matrix only matters as "given or not" (``imatrix=``), as in llama.cpp.

llama.cpp reads a few hyperparameters from the GGUF metadata; an inventory has the tensors only,
so they are derived from the tensors (or passed in ``hparams``):

``n_layer``
    ``{arch}.block_count``: ``Inventory.n_layers``, else one more than the highest ``blk.N``.
``n_expert``
    ``{arch}.expert_count``: ``shape[2]`` of the first ``*_exps`` tensor, else the number of
    per-expert tensors ``blk.N.ffn_gate.E.weight`` of old GGUFs, else 0.
``n_head`` / ``n_head_kv`` (only their ratio ``n_gqa``, and only for attn_v-like tensors)
    ``attention.head_count`` / ``attention.head_count_kv`` of layer 0: the output widths of
    ``blk.0.attn_q`` / ``blk.0.attn_k`` (both are ``n_head * head_dim``); for a fused
    ``attn_qkv`` the widths ``n_embd`` and ``(out - n_embd) / 2`` (assumes ``n_embd`` equals
    ``n_head * head_dim``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

from gguf.constants import GGMLQuantizationType

from dynq import qtypes
from dynq.errors import QuantTypeError, RecipeError
from dynq.inventory import Inventory, TensorInfo
from dynq.qtypes import GGMLType

__all__ = [
    "MIXES",
    "StockChoice",
    "fallback",
    "is_quantizable",
    "mix_default_type",
    "not_quantized_reason",
    "stock_types",
]

T = GGMLQuantizationType

# llama_ftype_get_default_type: the type every quantized tensor starts from, per mix (ftype).
_DEFAULT_TYPE: dict[str, GGMLQuantizationType] = {
    "Q2_K": T.Q2_K,
    "Q2_K_S": T.Q2_K,
    "Q3_K_S": T.Q3_K,
    "Q3_K_M": T.Q3_K,
    "Q3_K_L": T.Q3_K,
    "Q4_K_S": T.Q4_K,
    "Q4_K_M": T.Q4_K,
    "Q5_K_S": T.Q5_K,
    "Q5_K_M": T.Q5_K,
    "Q6_K": T.Q6_K,
    "Q8_0": T.Q8_0,
    "Q4_0": T.Q4_0,
    "Q4_1": T.Q4_1,
    "Q5_0": T.Q5_0,
    "Q5_1": T.Q5_1,
    "IQ1_S": T.IQ1_S,
    "IQ1_M": T.IQ1_M,
    "IQ2_XXS": T.IQ2_XXS,
    "IQ2_XS": T.IQ2_XS,
    "IQ2_S": T.IQ2_XS,  # sic: IQ2_S the mix starts from IQ2_XS the type
    "IQ2_M": T.IQ2_S,
    "IQ3_XXS": T.IQ3_XXS,
    "IQ3_XS": T.IQ3_S,
    "IQ3_S": T.IQ3_S,
    "IQ3_M": T.IQ3_S,
    "IQ4_NL": T.IQ4_NL,
    "IQ4_XS": T.IQ4_XS,
    "TQ1_0": T.TQ1_0,
    "TQ2_0": T.TQ2_0,
    "Q1_0": T.Q1_0,
    "MXFP4_MOE": T.MXFP4,
    "F16": T.F16,
    "BF16": T.BF16,
    "F32": T.F32,
}

MIXES: tuple[str, ...] = tuple(_DEFAULT_TYPE)

# tools/quantize/quantize.cpp QUANT_OPTIONS aliases.
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# The ftypes that the IQ1/IQ2 branch of llama_tensor_get_type_impl handles.
_IQ1_IQ2 = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
# ftypes whose output/tied-embedding tensor is Q5_K rather than Q6_K.
_OUTPUT_Q5_K = frozenset({"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
# ftypes whose attn_output goes to Q5_K in an 8-expert model.
_ATTN_OUTPUT_Q5_K_8X = frozenset(
    {
        "Q2_K",
        "IQ3_XS",
        "IQ3_XXS",
        "Q3_K_S",
        "Q3_K_M",
        "IQ4_NL",
        "Q4_K_S",
        "Q4_K_M",
        "IQ3_S",
        "IQ3_M",
        "IQ4_XS",
    }
)

# tensor_type_fallback: the 32-block type a 256-block type falls back to when its block does not
# divide the row length.
_FALLBACK: dict[GGMLQuantizationType, GGMLQuantizationType] = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}

# ggml's non-quantized storage types (ggml_is_quantized is false for these).
_NOT_QUANTIZED = frozenset({T.F32, T.F16, T.BF16, T.F64, T.I8, T.I16, T.I32, T.I64})

# The architectures (general.architecture) that llama-quant.cpp tests by name.
_FALCON = "falcon"
_GLM5_NEXT = "glm5-next"
_BAILINGMOE3 = "bailingmoe3"


@dataclass(frozen=True, slots=True)
class StockChoice:
    """What llama-quantize does with one tensor for one mix."""

    type: GGMLType
    reason: str
    fallback_from: GGMLType | None = None
    quantize: bool = True
    """False when llama.cpp keeps the tensor's stored type (copies it unchanged)."""
    requires_imatrix: bool = False
    """llama.cpp refuses this tensor's type without an imatrix (tensor_requires_imatrix)."""


def _t(t: GGMLQuantizationType) -> GGMLType:
    return qtypes.get(t)


def _canonical_mix(mix: str) -> str:
    key = mix.strip().upper()
    if key.startswith("LLAMA.CPP:"):
        key = key[len("LLAMA.CPP:") :]
    key = _ALIASES.get(key, key)
    if key in _DEFAULT_TYPE:
        return key
    close = difflib.get_close_matches(key, list(MIXES) + list(_ALIASES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecipeError(f"unknown llama.cpp mix '{mix}'{hint}")


def mix_default_type(mix: str) -> GGMLType:
    """The type a mix starts every quantized tensor from (llama_ftype_get_default_type)."""
    return _t(_DEFAULT_TYPE[_canonical_mix(mix)])


# --------------------------------------------------------------------------------------------
# fallback: tensor_type_fallback
# --------------------------------------------------------------------------------------------


def fallback(t: GGMLType, n_per_row: int) -> GGMLType:
    """llama.cpp's type for a tensor of row length ``n_per_row`` that was meant to be ``t``.

    Identity when ``t``'s block divides the row; else the 32-block type of ``_FALLBACK``, and F16
    when even that does not divide it (a 32-block type that does not fit goes to F16 directly).
    Reproduces ``tensor_type_fallback``; a block of more than 32 with no fallback defined (Q1_0,
    NVFP4) is an error there and here.
    """
    if n_per_row % t.block_size == 0:
        return t
    target = _FALLBACK.get(t.gguf)
    if target is None:
        if t.block_size > 32:
            raise QuantTypeError(
                f"{t.name}: row length {n_per_row} is not a multiple of its block size "
                f"{t.block_size}, and llama.cpp defines no fallback type for it"
            )
        target = t.gguf
    fb = _t(target)
    if n_per_row % fb.block_size:
        return _t(T.F16)
    return fb


# --------------------------------------------------------------------------------------------
# tensor_allows_quantization
# --------------------------------------------------------------------------------------------


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count."""
    for i in range(min(len(shape), 4) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


# Substrings that keep a tensor unquantized, in the order tensor_allows_quantization tests them.
_KEEP_SUBSTRINGS: tuple[tuple[str, str], ...] = (
    ("_norm.weight", "norm"),
    ("ffn_gate_inp.weight", "expert router"),
    ("ffn_gate_tid2eid.weight", "token-to-expert table"),
    ("altup", "altup (small)"),
    ("laurel", "laurel (small)"),
    ("per_layer_model_proj", "per-layer model projection (small)"),
)
_KEEP_SUBSTRINGS_2: tuple[tuple[str, str], ...] = (
    ("ssm_conv1d", "ssm conv1d (small)"),
    ("shortconv.conv.weight", "short conv (small)"),
    ("indexer.k_proj.weight", "indexer projection (small)"),
    ("indexer.q_proj.weight", "indexer projection (small)"),
)
_KEEP_GLM5_NEXT = (
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
)
_KEEP_RWKV = tuple(
    f"time_mix_{s}.weight"
    for s in (
        "first",
        "w0",
        "w1",
        "w2",
        "v0",
        "v1",
        "v2",
        "a0",
        "a1",
        "a2",
        "g1",
        "g2",
        "decay_w1",
        "decay_w2",
        "lerp_fused",
    )
)
_KEEP_MULTIMODAL = (
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)


def not_quantized_reason(tensor: TensorInfo, arch: str) -> str | None:
    """Why llama.cpp leaves this tensor as stored (``"1-D"``, ``"norm"``, ...), or None."""
    # tensor_allows_quantization
    if _n_dims(tensor.shape) < 2:
        return "1-D"
    name = tensor.name
    # name.rfind("weight") == name.size() - 6 (size_t arithmetic: also true for 5-char names)
    if not (name.endswith("weight") or len(name) == 5):
        return "not a weight"
    for sub, why in _KEEP_SUBSTRINGS:
        if sub in name:
            return why
    if name in ("position_embd.weight", "token_types.weight"):
        return "position/token-type embedding"
    for sub, why in _KEEP_SUBSTRINGS_2:
        if sub in name:
            return why
    if arch == _GLM5_NEXT and any(s in name for s in _KEEP_GLM5_NEXT):
        return "glm5-next small projection"
    if any(s in name for s in _KEEP_RWKV):
        return "rwkv small weight"
    if "attn_rel_b.weight" in name:
        return "relative position bias"
    if any(s in name for s in _KEEP_MULTIMODAL):
        return "multimodal embedding/projection"
    return None


def is_quantizable(tensor: TensorInfo, arch: str) -> bool:
    """llama.cpp's decision whether a tensor is quantized at all (tensor_allows_quantization)."""
    return not_quantized_reason(tensor, arch) is None


# --------------------------------------------------------------------------------------------
# tensor categories: tensor_get_category
# --------------------------------------------------------------------------------------------


class _Cat(Enum):
    TOKEN_EMBD = "token_embd"
    ATTENTION_Q = "attn_q"
    ATTENTION_V = "attn_v"
    ATTENTION_K = "attn_k"
    ATTENTION_QKV = "attn_qkv"
    ATTENTION_KV_B = "attn_kv_b"
    ATTENTION_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OUTPUT = "output"
    OTHER = "other"


_CAT_SUBSTRINGS = (
    ("attn_qkv.weight", _Cat.ATTENTION_QKV),
    ("attn_kv_b.weight", _Cat.ATTENTION_KV_B),
    ("attn_v.weight", _Cat.ATTENTION_V),
    ("attn_k.weight", _Cat.ATTENTION_K),
    ("attn_q.weight", _Cat.ATTENTION_Q),
    ("attn_output.weight", _Cat.ATTENTION_OUTPUT),
    ("ffn_up", _Cat.FFN_UP),
    ("ffn_gate", _Cat.FFN_GATE),
    ("ffn_down", _Cat.FFN_DOWN),
)


def _category(name: str) -> _Cat:
    if name == "output.weight":
        return _Cat.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return _Cat.TOKEN_EMBD
    for sub, cat in _CAT_SUBSTRINGS:
        if sub in name:
            return cat
    return _Cat.OTHER


_ATTN_V_LIKE = frozenset({_Cat.ATTENTION_V, _Cat.ATTENTION_QKV, _Cat.ATTENTION_KV_B})

_BLK_PREFIX = re.compile(r"blk\.\s*([+-]?\d+)")


def _sscanf_layer(name: str) -> int | None:
    """``sscanf(name, "blk.%d.", &i)``: the layer number, or None when it does not convert."""
    m = _BLK_PREFIX.match(name)
    return int(m.group(1)) if m else None


def _loader_order(tensors: Iterable[TensorInfo]) -> list[TensorInfo]:
    """llama_model_loader's weights_map order (weight_name_comparer): non-layer tensors first,
    then by layer number, then by name."""

    def key(t: TensorInfo) -> tuple[int, bytes]:
        layer = _sscanf_layer(t.name)
        return (-1 if layer is None else layer, t.name.encode())

    return sorted(tensors, key=key)


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """use_more_bits: the first and last 1/8 of layers, and every third layer between."""
    # the remainder is only reached with i_layer >= n_layers/8, where C++ and Python agree
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


# --------------------------------------------------------------------------------------------
# model hyperparameters that llama.cpp reads from metadata
# --------------------------------------------------------------------------------------------

_SPLIT_EXPERT = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down)\.(\d+)\.weight$")
_HPARAM_KEYS = frozenset({"n_layer", "n_expert", "n_head", "n_head_kv", "n_gqa"})


class _Model:
    """The few hparams llama-quant.cpp looks at, derived from the tensors or given."""

    def __init__(self, inventory: Inventory, hparams: Mapping[str, int] | None):
        hp = dict(hparams or {})
        unknown = set(hp) - _HPARAM_KEYS
        if unknown:
            raise RecipeError(
                f"stock_types: unknown hparams {sorted(unknown)} (known: {sorted(_HPARAM_KEYS)})"
            )
        self.inventory = inventory
        self.arch = inventory.arch
        self.hp = hp
        self.by_name = inventory.by_name()

    @cached_property
    def n_layer(self) -> int:
        if "n_layer" in self.hp:
            return int(self.hp["n_layer"])
        if self.inventory.n_layers > 0:
            return self.inventory.n_layers
        layers = [t.layer for t in self.inventory.tensors if t.layer is not None]
        return max(layers) + 1 if layers else 0

    @cached_property
    def n_expert(self) -> int:
        if "n_expert" in self.hp:
            return int(self.hp["n_expert"])
        for t in self.inventory.tensors:
            if "_exps." in t.name and len(t.shape) >= 3:
                return int(t.shape[2])
        # old GGUFs (Mixtral before merged experts) keep one tensor per expert
        ids = [
            int(m.group(1)) for t in self.inventory.tensors if (m := _SPLIT_EXPERT.match(t.name))
        ]
        return max(ids) + 1 if ids else 0

    def _heads(self) -> tuple[int, int] | None:
        """(n_head, n_head_kv) of layer 0, or a pair with the same ratio, or None."""
        if "n_head" in self.hp:
            return int(self.hp["n_head"]), int(self.hp.get("n_head_kv", self.hp["n_head"]))
        q = self.by_name.get("blk.0.attn_q.weight")
        k = self.by_name.get("blk.0.attn_k.weight")
        if q is not None and k is not None and len(q.shape) >= 2 and len(k.shape) >= 2:
            return q.shape[1], k.shape[1]
        qkv = self.by_name.get("blk.0.attn_qkv.weight")
        if qkv is not None and len(qkv.shape) >= 2:
            n_embd, out = qkv.shape[0], qkv.shape[1]
            kv2 = out - n_embd
            if kv2 > 0 and kv2 % 2 == 0:
                return n_embd, kv2 // 2
        return None

    @cached_property
    def n_gqa(self) -> int:
        if "n_gqa" in self.hp:
            return int(self.hp["n_gqa"])
        heads = self._heads()
        if heads is None:
            raise RecipeError(
                f"{self.inventory.origin}: llama.cpp's choice for attn_v-like tensors depends on "
                "n_head/n_head_kv, which cannot be derived from the tensors of this "
                f"'{self.arch}' model; pass hparams={{'n_head': ..., 'n_head_kv': ...}}"
            )
        n_head, n_head_kv = heads
        return 0 if n_head_kv == 0 else n_head // n_head_kv

    @cached_property
    def is_70b(self) -> bool:
        """Whether llama.cpp's load_hparams sets LLM_TYPE_70B (the only model type quantization
        looks at): llama/llama-embed with 80 layers and GQA (not 8 experts), qwen2/deci/olmo with
        80 layers, jais2 with 68."""
        n = self.n_layer
        if self.arch in ("llama", "llama-embed"):
            if n != 80 or self.n_expert == 8:
                return False
            heads = self._heads()
            if heads is None:
                raise RecipeError(
                    f"{self.inventory.origin}: cannot tell an 80-layer llama's n_head from "
                    "n_head_kv; pass hparams={'n_head': ..., 'n_head_kv': ...}"
                )
            return heads[0] != heads[1]
        if self.arch in ("qwen2", "deci", "olmo"):
            return n == 80
        if self.arch == "jais2":
            return n == 68
        return False


# --------------------------------------------------------------------------------------------
# llama_tensor_get_type_impl
# --------------------------------------------------------------------------------------------


class _State:
    """quantize_state_impl: the counters that llama_tensor_get_type_impl advances."""

    def __init__(self, model: _Model, ftype: str, has_imatrix: bool, names: list[str]):
        self.model = model
        self.ftype = ftype
        self.has_imatrix = has_imatrix
        cats = [_category(n) for n in names]
        # init_quantize_state_counters: counted over every tensor, quantizable or not
        self.n_attention_wv = sum(c in _ATTN_V_LIKE for c in cats)
        self.has_tied_embeddings = _Cat.OUTPUT not in cats
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = model.n_layer
        self.i_attention_wv = 0
        self.i_ffn_down = 0
        self.i_ffn_gate = 0
        self.i_ffn_up = 0

    def layer_info(self, counter: int, n: int, name: str) -> tuple[int, int]:
        """The layer for position-dependent rules: the running counter, or the name's layer number
        in an MoE model (where experts need not be consecutive)."""
        if max(1, self.model.n_expert) > 1:
            i = _sscanf_layer(name)
            if i is None:
                raise RecipeError(f"{name}: llama.cpp cannot determine the layer of this tensor")
            if not 0 <= i < n:
                raise RecipeError(f"{name}: bad layer {i}, must be in [0, {n})")
            return i, n
        return counter, n

    def choose(
        self, t: TensorInfo, new_type: GGMLQuantizationType
    ) -> tuple[GGMLQuantizationType, str]:
        """llama_tensor_get_type_impl: the type for one quantizable tensor, and why."""
        ft = self.ftype
        m = self.model
        arch = m.arch
        name = t.name
        cat = _category(name)
        default = new_type

        # glm5-next keeps its q projections and MTP projection at Q8_0 or better
        if arch == _GLM5_NEXT and (
            "attn_q_a" in name or "attn_q_b" in name or "nextn.eh_proj" in name
        ):
            if new_type not in (T.F32, T.BF16, T.F16):
                return T.Q8_0, "glm5-next q/eh projection kept at Q8_0"

        if cat is _Cat.OUTPUT or (self.has_tied_embeddings and cat is _Cat.TOKEN_EMBD):
            what = name.removesuffix(".weight")
            if cat is _Cat.TOKEN_EMBD:
                what += " (tied to output)"
            nx = t.shape[0]
            if ft == "MXFP4_MOE":
                return T.Q8_0, f"{what}: Q8_0 in MXFP4_MOE"
            if arch == _FALCON:
                return T.Q8_0, f"{what}: Q8_0 for falcon"
            if nx % _t(new_type).block_size:
                return T.Q8_0, f"{what}: Q8_0, row {nx} not a multiple of {default.name}'s block"
            if ft in _OUTPUT_Q5_K:
                return T.Q5_K, f"{what}: Q5_K in {ft}"
            if new_type != T.Q8_0:
                return T.Q6_K, f"{what}: Q6_K"
            return new_type, f"{what}: mix default"

        if ft == "MXFP4_MOE":
            # MLA projections are 3-D too; bailingmoe3 matches expert roles explicitly
            is_expert_role = cat in (_Cat.FFN_UP, _Cat.FFN_GATE, _Cat.FFN_DOWN)
            ne2 = t.shape[2] if len(t.shape) > 2 else 1
            if ne2 > 1 and (arch != _BAILINGMOE3 or is_expert_role):
                return T.MXFP4, "3-D (experts): MXFP4"
            return T.Q8_0, "not experts: Q8_0 in MXFP4_MOE"

        if cat is _Cat.TOKEN_EMBD:
            if ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                return T.Q2_K, f"token_embd: Q2_K in {ft}"
            if ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                return T.IQ3_S, f"token_embd: IQ3_S in {ft}"
            if ft in ("TQ1_0", "TQ2_0"):
                return T.Q4_K, f"token_embd: Q4_K in {ft}"
            return new_type, "token_embd: mix default"

        if ft in _IQ1_IQ2:
            return self._choose_iq1_iq2(name, cat, new_type)

        if cat in _ATTN_V_LIKE:
            return self._choose_attn_v(cat, new_type)

        if cat is _Cat.ATTENTION_K:
            if m.n_expert == 8:
                return T.Q8_0, "attn_k: Q8_0 in an 8-expert model"
            if ft == "IQ3_XS":
                return T.IQ3_XXS, "attn_k: IQ3_XXS in IQ3_XS"
            if ft == "IQ3_XXS":
                return T.IQ2_S, "attn_k: IQ2_S in IQ3_XXS"
            return new_type, "attn_k: mix default"

        if cat is _Cat.ATTENTION_Q:
            if ft == "IQ3_XS":
                return T.IQ3_XXS, "attn_q: IQ3_XXS in IQ3_XS"
            if ft == "IQ3_XXS":
                return T.IQ2_S, "attn_q: IQ2_S in IQ3_XXS"
            return new_type, "attn_q: mix default"

        if cat is _Cat.FFN_DOWN:
            i_layer, n_layer = self.layer_info(self.i_ffn_down, self.n_ffn_down, name)
            self.i_ffn_down += 1
            return self._choose_ffn_down(i_layer, n_layer, new_type)

        if cat is _Cat.ATTENTION_OUTPUT:
            if arch != _FALCON:
                if m.n_expert == 8:
                    if ft in _ATTN_OUTPUT_Q5_K_8X:
                        return T.Q5_K, "attn_output: Q5_K in an 8-expert model"
                else:
                    bump = {
                        "Q2_K": T.Q3_K,
                        "IQ3_XXS": T.IQ3_S,
                        "Q3_K_M": T.Q4_K,
                        "Q3_K_L": T.Q5_K,
                        "IQ3_M": T.Q4_K,
                    }.get(ft)
                    if bump is not None:
                        return bump, f"attn_output: {bump.name} in {ft}"
            elif ft == "Q3_K_L":
                return T.Q4_K, "attn_output: Q4_K in Q3_K_L for falcon"
            return new_type, "attn_output: mix default"

        # (llama.cpp's later attn_qkv branch is unreachable: attn_qkv is attn_v-like, see above)

        if cat in (_Cat.FFN_GATE, _Cat.FFN_UP):
            gate = cat is _Cat.FFN_GATE
            counter = self.i_ffn_gate if gate else self.i_ffn_up
            n = self.n_ffn_gate if gate else self.n_ffn_up
            i_layer, n_layer = self.layer_info(counter, n, name)
            if gate:
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
            if ft == "IQ3_XS" and n_layer // 8 <= i_layer < 7 * n_layer // 8:
                return T.IQ3_XXS, f"{cat.value} in middle 3/4 of layers: IQ3_XXS in IQ3_XS"
            return new_type, f"{cat.value}: mix default"

        return new_type, "mix default"

    def _choose_iq1_iq2(
        self, name: str, cat: _Cat, new_type: GGMLQuantizationType
    ) -> tuple[GGMLQuantizationType, str]:
        """The IQ1_S/IQ1_M/IQ2_* branch of llama_tensor_get_type_impl."""
        ft = self.ftype
        m = self.model
        iq2_sm = ft in ("IQ2_S", "IQ2_M")
        if cat in _ATTN_V_LIKE:
            self.i_attention_wv += 1
            if m.n_gqa >= 4 or m.n_expert >= 4:
                return T.Q4_K, f"{cat.value}: Q4_K with n_gqa >= 4 or n_expert >= 4"
            bump = T.IQ3_S if iq2_sm else T.Q2_K
            return bump, f"{cat.value}: {bump.name} in {ft}"
        if m.n_expert == 8 and cat is _Cat.ATTENTION_K:
            return T.Q4_K, "attn_k: Q4_K in an 8-expert model"
        if cat is _Cat.FFN_DOWN:
            # note: the running count of ffn_down tensors, not the layer number
            i = self.i_ffn_down
            self.i_ffn_down += 1
            if i < self.n_ffn_down // 8:
                bump = T.IQ3_S if iq2_sm else T.Q2_K
                return bump, f"ffn_down among the first n_layer/8 ffn_down tensors: {bump.name}"
            return new_type, "ffn_down: mix default"
        if cat is _Cat.ATTENTION_OUTPUT:
            if m.n_expert == 8:
                return T.Q5_K, "attn_output: Q5_K in an 8-expert model"
            if ft in ("IQ1_S", "IQ1_M"):
                return T.IQ2_XXS, f"attn_output: IQ2_XXS in {ft}"
            if iq2_sm:
                return T.IQ3_S, f"attn_output: IQ3_S in {ft}"
            return new_type, "attn_output: mix default"
        return new_type, f"{cat.value}: mix default" if cat is not _Cat.OTHER else "mix default"

    def _choose_attn_v(
        self, cat: _Cat, new_type: GGMLQuantizationType
    ) -> tuple[GGMLQuantizationType, str]:
        """The attn_v / attn_qkv / attn_kv_b branch of llama_tensor_get_type_impl."""
        ft = self.ftype
        m = self.model
        what = cat.value
        i = self.i_attention_wv
        reason = f"{what}: mix default"
        if ft == "Q2_K":
            new_type = T.Q4_K if m.n_gqa >= 4 else T.Q3_K
            reason = f"{what}: {new_type.name} in Q2_K" + (" (n_gqa >= 4)" if m.n_gqa >= 4 else "")
        elif ft == "Q2_K_S" and m.n_gqa >= 4:
            new_type, reason = T.Q4_K, f"{what}: Q4_K in Q2_K_S (n_gqa >= 4)"
        elif ft == "IQ3_XXS":
            if m.n_gqa >= 4:
                new_type, reason = T.Q4_K, f"{what}: Q4_K in IQ3_XXS (n_gqa >= 4)"
            elif not self.has_imatrix:
                new_type, reason = T.IQ3_S, f"{what}: IQ3_S in IQ3_XXS without imatrix"
            else:
                new_type, reason = T.IQ3_XXS, f"{what}: IQ3_XXS in IQ3_XXS with imatrix"
        elif ft in ("IQ3_XS", "IQ3_S") and m.n_gqa >= 4:
            new_type, reason = T.Q4_K, f"{what}: Q4_K in {ft} (n_gqa >= 4)"
        elif ft == "IQ3_M":
            new_type, reason = T.Q4_K, f"{what}: Q4_K in IQ3_M"
        elif ft == "Q3_K_M":
            new_type = T.Q5_K if i < 2 else T.Q4_K
            reason = f"{what}: {new_type.name} in Q3_K_M" + (" (first two)" if i < 2 else "")
        elif ft == "Q3_K_L":
            new_type, reason = T.Q5_K, f"{what}: Q5_K in Q3_K_L"
        elif ft in ("IQ4_NL", "IQ4_XS") and m.n_gqa >= 4:
            new_type, reason = T.Q5_K, f"{what}: Q5_K in {ft} (n_gqa >= 4)"
        elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, self.n_attention_wv):
            new_type, reason = T.Q6_K, f"{what} #{i} of {self.n_attention_wv} (use_more_bits): Q6_K"
        elif ft == "Q4_K_S" and i < 4:
            new_type, reason = T.Q5_K, f"{what}: Q5_K in Q4_K_S (first four)"
        if m.is_70b and new_type in (T.Q3_K, T.Q4_K):
            new_type, reason = T.Q5_K, f"{what}: Q5_K in a 70B model"
        if m.n_expert == 8:
            new_type, reason = T.Q8_0, f"{what}: Q8_0 in an 8-expert model"
        self.i_attention_wv += 1
        return new_type, reason

    def _choose_ffn_down(
        self, i_layer: int, n_layer: int, new_type: GGMLQuantizationType
    ) -> tuple[GGMLQuantizationType, str]:
        """The ffn_down branch of llama_tensor_get_type_impl (layer already resolved)."""
        ft = self.ftype
        m = self.model
        falcon = m.arch == _FALCON
        first8 = i_layer < n_layer // 8
        more = _use_more_bits(i_layer, n_layer)
        at = f"ffn_down layer {i_layer}/{n_layer}"
        if ft == "Q2_K":
            return T.Q3_K, f"{at}: Q3_K in Q2_K"
        if ft == "Q2_K_S":
            if first8:
                return T.Q4_K, f"{at} in first 1/8: Q4_K"
            return new_type, f"{at}: mix default"
        if ft == "IQ3_XXS" and not self.has_imatrix:
            t = T.Q4_K if first8 else T.Q3_K
            return t, f"{at}: {t.name} in IQ3_XXS without imatrix" + (
                " (first 1/8)" if first8 else ""
            )
        if ft == "Q3_K_M":
            if i_layer < n_layer // 16:
                return T.Q5_K, f"{at} in first 1/16: Q5_K"
            if not falcon or more:
                return T.Q4_K, f"{at}: Q4_K in Q3_K_M"
            return T.Q3_K, f"{at}: Q3_K in Q3_K_M (falcon)"
        if ft == "IQ3_M" and (first8 or (m.n_expert == 8 and more)):
            return T.Q4_K, f"{at} (first 1/8 or 8-expert use_more_bits): Q4_K"
        if ft == "Q3_K_L":
            t = T.Q4_K if falcon else T.Q5_K
            return t, f"{at}: {t.name} in Q3_K_L"
        if ft == "Q4_K_M":
            if falcon:
                if i_layer < n_layer // 16:
                    return T.Q6_K, f"{at} in first 1/16: Q6_K (falcon)"
                if more:
                    return T.Q5_K, f"{at} (use_more_bits): Q5_K (falcon)"
                return T.Q4_K, f"{at}: Q4_K (falcon)"
            if more:
                return T.Q6_K, f"{at} (use_more_bits): Q6_K"
            return new_type, f"{at}: mix default"
        if first8 and ft in ("IQ4_NL", "IQ4_XS") and not self.has_imatrix:
            return T.Q5_K, f"{at} in first 1/8 without imatrix: Q5_K"
        if ft == "Q5_K_M" and more:
            return T.Q6_K, f"{at} (use_more_bits): Q6_K"
        if ft == "Q4_K_S" and not falcon and first8:
            return T.Q5_K, f"{at} in first 1/8: Q5_K"
        if ft in ("Q4_0", "Q5_0") and self.has_imatrix and first8:
            t = T.Q4_1 if ft == "Q4_0" else T.Q5_1
            return t, f"{at} in first 1/8 with imatrix: {t.name}"
        return new_type, f"{at}: mix default"


# --------------------------------------------------------------------------------------------
# tensor_requires_imatrix
# --------------------------------------------------------------------------------------------

_IMATRIX_TYPES = qtypes.IMATRIX_REQUIRED


def requires_imatrix(name: str, t: GGMLQuantizationType, ftype: str | None = None) -> bool:
    """Whether llama-quantize refuses to give tensor ``name`` type ``t`` without an imatrix
    (token_embd and output are exempt; Q2_K only under the Q2_K_S mix)."""
    if _category(name) in (_Cat.TOKEN_EMBD, _Cat.OUTPUT):
        return False
    if t in _IMATRIX_TYPES:
        return True
    return t == T.Q2_K and ftype == "Q2_K_S"


# --------------------------------------------------------------------------------------------
# the driver: llama_model_quantize_impl's preliminary loop
# --------------------------------------------------------------------------------------------


def stock_types(
    mix: str,
    inventory: Inventory,
    *,
    imatrix: bool = False,
    hparams: Mapping[str, int] | None = None,
) -> dict[str, StockChoice]:
    """What ``llama-quantize [--imatrix F] model.gguf <mix>`` makes of every tensor.

    ``imatrix`` says whether an importance matrix is given: it changes a few choices (IQ3_XXS,
    IQ4_NL, IQ4_XS, Q4_0, Q5_0 mixes). ``hparams`` may give ``n_layer``, ``n_expert``,
    ``n_head``/``n_head_kv`` (layer 0) or ``n_gqa`` where the tensors cannot tell them. The
    result is keyed by tensor name, in inventory order.
    """
    ftype = _canonical_mix(mix)
    default = _DEFAULT_TYPE[ftype]
    model = _Model(inventory, hparams)
    ordered = _loader_order(inventory.tensors)
    state = _State(model, ftype, imatrix, [t.name for t in ordered])

    out: dict[str, StockChoice] = {}
    for t in ordered:
        stored = qtypes.parse_type(t.type)
        why_not = not_quantized_reason(t, model.arch)
        if why_not is not None:
            out[t.name] = StockChoice(stored, f"not quantized: {why_not}", None, False)
            continue
        if default in _NOT_QUANTIZED:
            chosen, reason, fb_from = default, "mix default", None
        else:
            chosen, reason = state.choose(t, default)
            first = _t(chosen)
            final = fallback(first, t.shape[0])
            fb_from = first if final != first else None
            chosen = final.gguf
            if fb_from is not None:
                reason += f"; row {t.shape[0]} not a multiple of {fb_from.block_size}: {final.name}"
        ct = _t(chosen)
        out[t.name] = StockChoice(
            ct,
            reason,
            fb_from,
            quantize=ct != stored,
            requires_imatrix=requires_imatrix(t.name, chosen, ftype),
        )
    return {t.name: out[t.name] for t in inventory.tensors}
