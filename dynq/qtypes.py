"""Every GGML type dynq knows, built on gguf's constants (never beside them).

Block size and bytes per block come from ``gguf.constants.GGML_QUANT_SIZES``; this module only
adds what gguf does not say: bits per weight, whether a type is a float or integer storage type,
whether quantizing to it needs an importance matrix (as llama-quantize requires), and the ladder
used for "one step up / one step down".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from dynq.errors import QuantTypeError

__all__ = [
    "LADDER",
    "GGMLType",
    "all_types",
    "ladder_step",
    "parse_type",
]

T = GGMLQuantizationType

# Plain storage types: one element per "block".
FLOAT_TYPES = frozenset({T.F32, T.F16, T.BF16, T.F64})
INT_TYPES = frozenset({T.I8, T.I16, T.I32, T.I64})

# Types llama-quantize refuses to produce without an importance matrix (llama-quant.cpp; the
# full rule, with its exemptions for token_embd/output, is dynq.stock.requires_imatrix).
IMATRIX_REQUIRED = frozenset({T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS})

# Dot-product helper types: they exist only as the other operand of a matmul; never a storage type
# that a model file should contain.
INTERNAL_TYPES = frozenset({T.Q8_1, T.Q8_K})

# "One step up / down": the general-purpose quant types ordered by bits per weight. Ternary types,
# MXFP4/NVFP4 and Q1_0 are special purpose and deliberately off the ladder; legacy 32-blocks are
# what k/i-quants fall back to, and sit on the ladder only where they add a distinct step.
LADDER: tuple[GGMLQuantizationType, ...] = (
    T.IQ1_S,
    T.IQ1_M,
    T.IQ2_XXS,
    T.IQ2_XS,
    T.IQ2_S,
    T.Q2_K,
    T.IQ3_XXS,
    T.IQ3_S,
    T.Q3_K,
    T.IQ4_XS,
    T.Q4_K,
    T.Q5_K,
    T.Q6_K,
    T.Q8_0,
    T.BF16,
    T.F16,
    T.F32,
)


@dataclass(frozen=True, slots=True)
class GGMLType:
    """One GGML tensor type with the numbers dynq needs about it."""

    gguf: GGMLQuantizationType
    block_size: int
    type_size: int

    @property
    def name(self) -> str:
        """The type's name as gguf spells it, e.g. ``Q4_K``."""
        return self.gguf.name

    @property
    def key(self) -> str:
        """The lowercase spelling recipes use, e.g. ``q4_k``."""
        return self.gguf.name.lower()

    @property
    def bpw(self) -> float:
        """Bits per weight."""
        return self.type_size * 8 / self.block_size

    @property
    def is_float(self) -> bool:
        return self.gguf in FLOAT_TYPES

    @property
    def is_quantized(self) -> bool:
        return self.gguf not in FLOAT_TYPES and self.gguf not in INT_TYPES

    @property
    def needs_imatrix(self) -> bool:
        return self.gguf in IMATRIX_REQUIRED

    @property
    def storable(self) -> bool:
        """Whether a model file may hold a weight of this type (not Q8_1/Q8_K, not integers)."""
        return self.gguf not in INTERNAL_TYPES and self.gguf not in INT_TYPES

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` elements; the block must divide the row."""
        if n_per_row % self.block_size:
            raise QuantTypeError(
                f"{self.name}: row length {n_per_row} is not a multiple of its block size "
                f"{self.block_size}"
            )
        return n_per_row // self.block_size * self.type_size

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Bytes of a tensor of GGUF shape ``shape`` (``shape[0]`` is the row length)."""
        n_rows = 1
        for d in shape[1:]:
            n_rows *= d
        return self.row_bytes(shape[0]) * n_rows

    def __str__(self) -> str:
        return self.name


@cache
def all_types() -> dict[str, GGMLType]:
    """Every type gguf knows, keyed by lowercase name."""
    out: dict[str, GGMLType] = {}
    for t in GGMLQuantizationType:
        if t not in GGML_QUANT_SIZES:
            continue
        block, size = GGML_QUANT_SIZES[t]
        out[t.name.lower()] = GGMLType(t, block, size)
    return out


def get(t: GGMLQuantizationType | str) -> GGMLType:
    """The type for a gguf enum member or a (case-insensitive) name."""
    if isinstance(t, GGMLQuantizationType):
        return all_types()[t.name.lower()]
    return parse_type(t)


def parse_type(name: str) -> GGMLType:
    """Parse a type name (``q4_k``, ``Q4_K``), with a did-you-mean on a miss."""
    types = all_types()
    key = name.strip().lower()
    if key in types:
        return types[key]
    close = difflib.get_close_matches(key, list(types), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise QuantTypeError(f"unknown GGML type '{name}'{hint}")


def ladder_step(t: GGMLType, steps: int) -> GGMLType:
    """The type ``steps`` rungs up (positive) or down (negative) the ladder, clamped at its ends.

    A type off the ladder first snaps to the rung with the nearest bits per weight.
    """
    rungs = [get(r) for r in LADDER]
    if t.gguf in LADDER:
        i = LADDER.index(t.gguf)
    else:
        i = min(range(len(rungs)), key=lambda j: abs(rungs[j].bpw - t.bpw))
    return rungs[max(0, min(len(rungs) - 1, i + steps))]
