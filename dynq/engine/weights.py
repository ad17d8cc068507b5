"""GGUF tensors as F32 torch tensors, dequantized one tensor (or one layer) at a time.

Tensor data stays in the memory-mapped file; ``LayerWeights`` holds one layer dequantized, so a
forward pass needs memory for one layer plus activations, whatever the model's size. A model
small enough (``DEFAULT_CACHE_BYTES`` as float32) keeps its dequantized tensors instead, so that
evaluating or calibrating it in many batches dequantizes each tensor once.
Dequantization uses ``dynq.kernels.dequantize`` when that module exists, else
``gguf.quants.dequantize`` (both: raw bytes and GGML type in, F32 values out).
"""

from __future__ import annotations

import os

import gguf
import numpy as np
import torch

from dynq.errors import InventoryError
from dynq.gguf_io import GGUFFile


def _kernels():
    """dynq's own ``dequantize`` when the kernels module exists and is not disabled with
    DYNQ_ENGINE_DEQUANT=gguf; else None."""
    if os.environ.get("DYNQ_ENGINE_DEQUANT", "") == "gguf":
        return None
    try:
        from dynq.kernels import dequantize as kernel_dequantize  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - depends on the tree
        return None
    return kernel_dequantize


def dequantize(
    raw: np.ndarray, qt: gguf.GGMLQuantizationType, shape: tuple[int, ...]
) -> np.ndarray:
    """F32 values of ``raw`` (uint8) holding a tensor of GGML type ``qt`` and GGUF ``shape``
    (fastest dimension first); the result has numpy/torch order (shape reversed)."""
    np_shape = tuple(reversed(shape))
    if qt == gguf.GGMLQuantizationType.F32:
        return raw.view(np.float32).reshape(np_shape)
    if qt == gguf.GGMLQuantizationType.F16:
        return raw.view(np.float16).reshape(np_shape).astype(np.float32)
    kernel = _kernels()
    if kernel is not None:
        try:
            out = kernel(np.array(raw), qt, shape)
            return np.asarray(out, dtype=np.float32).reshape(np_shape)
        except Exception:  # a type the kernels do not (yet) cover: gguf's reference
            pass
    block, type_size = gguf.GGML_QUANT_SIZES[qt]
    row_bytes = shape[0] // block * type_size
    rows = raw.reshape(-1, row_bytes)
    out = gguf.quants.dequantize(rows, qt)
    return np.asarray(out, dtype=np.float32).reshape(np_shape)


#: a model whose weights take at most this many bytes as float32 keeps them dequantized after
#: their first use (every later batch of chunks skips the dequantization); larger ones stream
#: layer by layer. DYNQ_WEIGHT_CACHE_MB overrides it (0: always stream).
DEFAULT_CACHE_BYTES = 4 << 30


def _cache_limit() -> int:
    env = os.environ.get("DYNQ_WEIGHT_CACHE_MB")
    return int(env) << 20 if env else DEFAULT_CACHE_BYTES


class WeightSource:
    """Reads tensors of one GGUF file onto ``device`` as F32 torch tensors (kept once read when
    the whole model fits in the cache limit, see :data:`DEFAULT_CACHE_BYTES`)."""

    def __init__(self, gf: GGUFFile, device: str | torch.device = "cpu"):
        self.gf = gf
        self.device = torch.device(device)
        f32_bytes = sum(4 * int(np.prod(t.shape)) for t in gf.tensors)
        self._cache: dict[str, torch.Tensor] | None = {} if f32_bytes <= _cache_limit() else None
        #: tensors used instead of the file's (dynq measure runs the model with one replaced)
        self.overrides: dict[str, torch.Tensor] = {}

    def has(self, name: str) -> bool:
        return name in self.gf.by_name

    def tensor(self, name: str) -> torch.Tensor:
        if name in self.overrides:
            return self.overrides[name]
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        t = self.gf.by_name.get(name)
        if t is None:
            raise InventoryError(f"{self.gf.path}: tensor {name}: not in file")
        arr = dequantize(self.gf.raw(t), t.type, t.shape)
        if not arr.flags.writeable:
            arr = arr.copy()
        out = torch.from_numpy(arr).to(self.device)
        if self._cache is not None:
            self._cache[name] = out
        return out

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of a 2-D tensor (an embedding), dequantizing only those rows."""
        if self._cache is not None or name in self.overrides:
            return self.tensor(name)[ids.to(self.device, torch.long)]
        t = self.gf.by_name.get(name)
        if t is None:
            raise InventoryError(f"{self.gf.path}: tensor {name}: not in file")
        n_cols, n_rows = t.shape[0], int(np.prod(t.shape[1:]))
        block, type_size = gguf.GGML_QUANT_SIZES[t.type]
        raw = self.gf.raw(t).reshape(n_rows, n_cols // block * type_size)
        flat = ids.reshape(-1).cpu()
        uniq, inv = torch.unique(flat, return_inverse=True)
        sub = dequantize(np.ascontiguousarray(raw[uniq.numpy()]), t.type, (n_cols, len(uniq)))
        out = torch.from_numpy(np.array(sub, dtype=np.float32))[inv]
        return out.reshape(*ids.shape, n_cols).to(self.device)

    def layer(self, il: int) -> LayerWeights:
        prefix = f"blk.{il}."
        names = [t.name for t in self.gf.tensors if t.name.startswith(prefix)]
        if not names:
            raise InventoryError(f"{self.gf.path}: layer {il}: no tensors blk.{il}.*")
        return LayerWeights(il, {n[len(prefix) :]: self.tensor(n) for n in names})


class LayerWeights:
    """One layer's tensors by short name: ``w["attn_q"]`` is ``blk.N.attn_q.weight``."""

    def __init__(self, il: int, tensors: dict[str, torch.Tensor]):
        self.il = il
        self.tensors = tensors

    def __getitem__(self, short: str) -> torch.Tensor:
        return self.tensors[short if "." in short else f"{short}.weight"]

    def get(self, short: str) -> torch.Tensor | None:
        return self.tensors.get(short if "." in short else f"{short}.weight")
