"""Importance-matrix files in llama.cpp's two formats: GGUF (``<name>.in_sum2`` / ``.counts``)
and the legacy ``.dat``.

Reading follows llama.cpp's ``common_imatrix_load`` and llama-quantize's ``load_imatrix``: a
GGUF entry's importance is ``in_sum2 / count`` per expert (1 where a count is 0); a legacy entry
stores ``(sum / count) * ncall`` and is divided by ``ncall``. Writing produces the GGUF format
that llama-imatrix writes and llama-quantize accepts.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from dynq.errors import DynqError
from dynq.fsutil import atomic_path

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"


class ImatrixError(DynqError):
    """An importance-matrix file is missing, malformed, or does not fit the model."""


@dataclass
class Imatrix:
    """Per weight matrix: summed squared activations per column, and token counts per expert.

    ``sums[name]`` has shape ``(n_mat, ne0)`` (``n_mat`` = 1, or the number of experts) and
    ``counts[name]`` shape ``(n_mat,)``.
    """

    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False

    def __len__(self) -> int:
        return len(self.sums)

    def importance(self, name: str) -> np.ndarray | None:
        """The importance weights llama-quantize uses for tensor ``name``: ``(n_mat, ne0)``."""
        s = self.sums.get(name)
        if s is None:
            return None
        c = self.counts[name].astype(np.float32)
        if self.legacy:  # stored (sum / count) * ncall, counts hold ncall
            return s / c[:, None] if c[0] > 0 else s.copy()
        out = np.ones_like(s)
        nz = c > 0
        out[nz] = s[nz] / c[nz, None]
        return out


def load_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """Read an imatrix file in either of llama.cpp's formats."""
    p = Path(path)
    if not p.exists():
        raise ImatrixError(f"{p}: imatrix file not found")
    with p.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _load_gguf(p)
    return _load_legacy(p)


def _load_gguf(p: Path) -> Imatrix:
    try:
        r = gguf.GGUFReader(p)
    except Exception as e:
        raise ImatrixError(f"{p}: not a readable GGUF imatrix ({e})") from None
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in r.tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ImatrixError(f"{p}: tensor '{t.name}': imatrix tensors must be F32")
        data = np.array(t.data, dtype=np.float32)
        if t.name.endswith(".in_sum2"):
            ne0 = int(t.shape[0])
            sums[t.name.removesuffix(".in_sum2")] = data.reshape(-1, ne0)
        elif t.name.endswith(".counts"):
            counts[t.name.removesuffix(".counts")] = np.rint(data.reshape(-1)).astype(np.int64)
    for name in sums.keys() ^ counts.keys():
        raise ImatrixError(f"{p}: tensor '{name}': in_sum2 and counts do not pair up")
    for name, s in sums.items():
        if s.shape[0] != counts[name].shape[0]:
            raise ImatrixError(
                f"{p}: tensor '{name}': {s.shape[0]} sum rows but {counts[name].shape[0]} counts"
            )
    if not sums:
        raise ImatrixError(f"{p}: no imatrix entries")

    def field_value(key: str) -> object:
        f = r.fields.get(key)
        return f.contents() if f is not None else None

    datasets = field_value(KEY_DATASETS) or []
    return Imatrix(
        sums=sums,
        counts=counts,
        datasets=list(datasets) if isinstance(datasets, list) else [str(datasets)],
        chunk_count=int(field_value(KEY_CHUNK_COUNT) or 0),
        chunk_size=int(field_value(KEY_CHUNK_SIZE) or 0),
    )


def _load_legacy(p: Path) -> Imatrix:
    data = p.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ImatrixError(f"{p}: truncated legacy imatrix at byte {pos}")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ImatrixError(f"{p}: not an imatrix file (no entries)")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        (n,) = take("<i")
        if not 0 < n < 4096:
            raise ImatrixError(f"{p}: entry {i}: bad name length {n}")
        name = take(f"<{n}s")[0].decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ImatrixError(f"{p}: entry '{name}': no values")
        vals = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        take(f"<{4 * nval}x")
        sums[name] = vals.reshape(1, -1)
        counts[name] = np.array([ncall], dtype=np.int64)
    datasets: list[str] = []
    chunk_count = 0
    if pos < len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (n,) = take("<i")
            if n > 0:
                datasets.append(take(f"<{n}s")[0].decode("utf-8", "replace"))
    return Imatrix(sums, counts, datasets, chunk_count, 0, legacy=True)


def save_imatrix(path: str | os.PathLike[str], im: Imatrix) -> None:
    """Write ``im`` in llama.cpp's GGUF imatrix format (sorted names, as llama-imatrix does)."""
    if im.legacy:
        raise ImatrixError(f"{path}: convert legacy imatrix data to sums before saving")
    p = Path(path)
    with atomic_path(p) as tmp:
        w = gguf.GGUFWriter(path=tmp, arch="imatrix")
        # llama-imatrix writes general.type, not general.architecture; GGUFWriter always adds
        # the architecture key, which llama.cpp's loader ignores for imatrix files.
        w.add_type("imatrix")
        w.add_array(KEY_DATASETS, list(im.datasets))
        w.add_uint32(KEY_CHUNK_COUNT, im.chunk_count)
        w.add_uint32(KEY_CHUNK_SIZE, im.chunk_size)
        for name in sorted(im.sums):
            s = np.ascontiguousarray(im.sums[name], dtype=np.float32)
            c = np.asarray(im.counts[name], dtype=np.float32).reshape(-1, 1)
            w.add_tensor(f"{name}.in_sum2", s)
            w.add_tensor(f"{name}.counts", c)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
