"""A fast, read-only GGUF parser: key/values, tensor directory and a memory map of the data.

``gguf.GGUFReader`` builds a numpy view per array element, which takes seconds for a 262k-token
vocabulary; this parser decodes string arrays in one pass and maps tensor data lazily, so a
model's header is ready in well under a second and no tensor is read until asked for.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynq.errors import InventoryError

GGUF_MAGIC = b"GGUF"
_SCALAR = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_NP = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    7: np.bool_,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the directory: ``shape`` in GGUF order (fastest-varying dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset of the data in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.ggml_type).name


class GGUFFile:
    """A GGUF file: ``kv`` (key -> python value; arrays of numbers as numpy arrays, arrays of
    strings as lists of str) and ``tensors`` (name -> TensorEntry). Tensor bytes via ``raw``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise InventoryError(f"{self.path}: file not found")
        try:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise InventoryError(f"{self.path}: cannot map file ({e})") from None
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, IndexError, ValueError) as e:
            raise InventoryError(f"{self.path}: not a readable GGUF file ({e})") from None

    # -- parsing ---------------------------------------------------------------------------
    def _parse(self) -> None:
        mm = self._mm
        if mm[:4] != GGUF_MAGIC:
            raise InventoryError(f"{self.path}: not a GGUF file (bad magic)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
        if version < 2:
            raise InventoryError(f"{self.path}: GGUF version {version} is not supported")
        self.version = version
        pos = 24
        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = self._str(pos)
            (vtype,) = struct.unpack_from("<I", mm, pos)
            pos += 4
            kv[key], pos = self._value(vtype, pos)
        self.kv = kv
        entries = []
        for _ in range(n_tensors):
            name, pos = self._str(pos)
            (n_dims,) = struct.unpack_from("<I", mm, pos)
            pos += 4
            shape = struct.unpack_from(f"<{n_dims}Q", mm, pos)
            pos += 8 * n_dims
            ggml_type, rel = struct.unpack_from("<IQ", mm, pos)
            pos += 12
            entries.append((name, tuple(int(d) for d in shape), int(ggml_type), int(rel)))
        align = int(kv.get("general.alignment", 32))
        self.alignment = align
        self.data_offset = (pos + align - 1) // align * align
        import gguf

        tensors: dict[str, TensorEntry] = {}
        for name, shape, ggml_type, rel in entries:
            qt = gguf.GGMLQuantizationType(ggml_type)
            block, type_size = gguf.GGML_QUANT_SIZES[qt]
            n = int(np.prod(shape))
            n_bytes = n // block * type_size
            off = self.data_offset + rel
            if off + n_bytes > len(mm):
                raise InventoryError(f"{self.path}: tensor {name}: data beyond end of file")
            tensors[name] = TensorEntry(name, shape, ggml_type, off, n_bytes)
        self.tensors = tensors

    def _str(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self._mm, pos)
        pos += 8
        return self._mm[pos : pos + n].decode("utf-8"), pos + n

    def _value(self, vtype: int, pos: int) -> tuple[Any, int]:
        mm = self._mm
        if vtype in _SCALAR:
            fmt, size = _SCALAR[vtype]
            return struct.unpack_from(fmt, mm, pos)[0], pos + size
        if vtype == _STRING:
            return self._str(pos)
        if vtype == _ARRAY:
            itype, n = struct.unpack_from("<IQ", mm, pos)
            pos += 12
            if itype in _NP:
                dt = np.dtype(_NP[itype])
                arr = np.frombuffer(mm, dtype=dt, count=n, offset=pos).copy()
                return arr, pos + n * dt.itemsize
            if itype == _STRING:
                out = []
                unpack = struct.Struct("<Q").unpack_from
                buf = mm
                for _ in range(n):
                    (ln,) = unpack(buf, pos)
                    pos += 8
                    out.append(buf[pos : pos + ln].decode("utf-8", errors="surrogateescape"))
                    pos += ln
                return out, pos
            vals = []
            for _ in range(n):
                v, pos = self._value(itype, pos)
                vals.append(v)
            return vals, pos
        raise InventoryError(f"{self.path}: unknown GGUF value type {vtype}")

    # -- access ----------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        arch = self.kv.get("general.architecture")
        if not isinstance(arch, str):
            raise InventoryError(f"{self.path}: general.architecture: key missing from GGUF header")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def arch_key(self, key: str, default: Any = None) -> Any:
        return self.kv.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        if key not in self.kv:
            raise InventoryError(f"{self.path}: {key}: key missing from GGUF header")
        return self.kv[key]

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the file (no copy)."""
        t = self.tensors.get(name)
        if t is None:
            raise InventoryError(f"{self.path}: tensor {name}: not in file")
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.n_bytes, offset=t.offset)

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:  # views still alive; the map is released when they are
            pass
