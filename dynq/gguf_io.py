"""Reading GGUF headers through gguf's reader, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import gguf

from dynq.errors import InventoryError
from dynq.inventory import Inventory, TensorInfo

# Keys of the GGUF preamble that GGUFReader exposes as fields but that are not key/values.
_PREAMBLE = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def open_gguf(path: str | os.PathLike[str]) -> gguf.GGUFReader:
    """Open a GGUF file (memory-mapped; no tensor data is read)."""
    p = Path(path)
    if not p.exists():
        raise InventoryError(f"{p}: file not found")
    try:
        return gguf.GGUFReader(p, "r")
    except Exception as e:  # gguf raises ValueError/IndexError/struct errors on bad files
        raise InventoryError(f"{p}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def inventory_from_gguf(path: str | os.PathLike[str], origin: str | None = None) -> Inventory:
    """The inventory of a GGUF file, from its header alone."""
    p = Path(path)
    reader = open_gguf(p)
    fields = reader.fields
    arch_field = fields.get("general.architecture")
    if arch_field is None:
        raise InventoryError(f"{p}: general.architecture: key missing from GGUF header")
    arch = arch_field.contents()
    block_count = fields.get(f"{arch}.block_count")
    n_layers = int(block_count.contents()) if block_count is not None else 0
    metadata_bytes = {
        name: int(sum(part.nbytes for part in field.parts))
        for name, field in fields.items()
        if name not in _PREAMBLE
    }
    tensors = [
        TensorInfo(
            name=t.name,
            shape=tuple(int(d) for d in t.shape),
            type=t.tensor_type.name,
        )
        for t in reader.tensors
    ]
    end = reader.data_offset + sum(int(t.n_bytes) for t in reader.tensors)
    size = p.stat().st_size
    if size < end:
        raise InventoryError(
            f"{p}: truncated GGUF: header describes {end} bytes of data but file has {size}"
        )
    return Inventory(
        arch=arch,
        origin=origin or str(p),
        origin_kind="gguf",
        alignment=reader.alignment,
        n_layers=n_layers,
        metadata_bytes=metadata_bytes,
        tensors=tensors,
    )
