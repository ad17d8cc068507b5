"""Model inventories: every tensor's GGUF name, shape and type, without the weights.

An inventory lets ``plan``, ``diff`` and the TUI work on a 671B model from a few hundred kB of
JSON. It is read from a GGUF header (no tensor data touched), from safetensors headers mapped to
GGUF names (see ``dynq.convert``), or from a cached JSON file in ``registry/inventories/``.

Shapes are in GGUF order, as llama.cpp's converter writes them: ``shape[0]`` is the row length
(``ne0``), the dimension a quant block runs along.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dynq import qtypes
from dynq.errors import InventoryError
from dynq.fsutil import atomic_write_text

INVENTORY_FORMAT = 1

_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


class TensorInfo(BaseModel):
    """One tensor of a model: GGUF name, GGUF shape (ne0 first), and its stored type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    shape: tuple[int, ...]
    type: str = Field(description="GGML type name as gguf spells it, e.g. BF16 or Q4_K")

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @cached_property
    def layer(self) -> int | None:
        m = _LAYER_RE.match(self.name)
        return int(m.group(1)) if m else None

    @cached_property
    def kind(self) -> str:
        """The name without its layer prefix: ``blk.3.attn_v.weight`` -> ``attn_v.weight``."""
        m = _LAYER_RE.match(self.name)
        return m.group(2) if m else self.name

    @property
    def nbytes(self) -> int:
        return qtypes.parse_type(self.type).nbytes(self.shape)


class Inventory(BaseModel):
    """Everything dynq needs to plan a model without its weights.

    ``metadata_bytes`` holds the encoded size of every key/value of the source GGUF's header, so
    that a Plan can predict the output file to the byte; it is empty for inventories made from
    safetensors (the Plan then estimates the metadata and says so).
    """

    model_config = ConfigDict(extra="forbid")

    format: int = INVENTORY_FORMAT
    arch: str
    origin: str = Field(description="where it was read from: a path, pypi:, hf:// reference")
    origin_kind: str = Field(description="gguf or safetensors")
    alignment: int = 32
    n_layers: int
    metadata_bytes: dict[str, int] = Field(default_factory=dict)
    hparams: dict[str, int] = Field(
        default_factory=dict,
        description="what llama-quantize's rules read from the header: n_head, n_head_kv "
        "(layer 0), n_expert",
    )
    tensors: list[TensorInfo]

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    @property
    def exact(self) -> bool:
        """Whether the header's metadata is known to the byte (inventory read from a GGUF)."""
        return self.origin_kind == "gguf"

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        # One tensor per line: readable diffs in pull requests, a few hundred kB for 671B models.
        tensors = data.pop("tensors")
        head = json.dumps(data, indent=1, sort_keys=True)[:-2]
        lines = ",\n  ".join(json.dumps(t, separators=(",", ":")) for t in tensors)
        return f'{head},\n "tensors": [\n  {lines}\n ]\n}}\n'

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(Path(path), self.to_json())


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read an inventory: a cached JSON file, or straight from a ``.gguf`` header."""
    p = Path(path)
    if not p.exists():
        raise InventoryError(f"{p}: inventory file not found")
    if p.suffix == ".gguf":
        from dynq.gguf_io import inventory_from_gguf

        return inventory_from_gguf(p)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InventoryError(f"{p}: not a readable inventory JSON: {e}") from None
    try:
        inv = Inventory.model_validate(data)
    except Exception as e:  # pydantic.ValidationError: keep the first problem on one line
        first = str(e).splitlines()
        msg = first[1] + ": " + first[2].strip() if len(first) > 2 else str(e)
        raise InventoryError(f"{p}: {msg}") from None
    if inv.format > INVENTORY_FORMAT:
        raise InventoryError(
            f"{p}: format: inventory format {inv.format} is newer than this dynq supports "
            f"({INVENTORY_FORMAT}); upgrade dynq"
        )
    return inv
