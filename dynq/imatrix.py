"""Importance matrices as llama-imatrix computes them: for every weight matrix of the layers,
the sum over tokens of each input column's squared activation (``in_sum2``) and the number of
tokens (``counts``), written in llama.cpp's GGUF imatrix format (tensors ``NAME.in_sum2`` and
``NAME.counts``; keys ``general.type = imatrix``, ``imatrix.datasets``, ``imatrix.chunk_count``,
``imatrix.chunk_size``).

Chunking is llama-imatrix's: the first N windows of CTX tokens, BOS first when the model adds
it, every token of a window processed (not only the scored half).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dynq.engine.gguf_file import GGUFFile
from dynq.engine.model import load_model
from dynq.evaluate import make_chunks, tokenize_text


@dataclass
class IMatrix:
    """Per weight name: sum of squared inputs per column (float64) and token count."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chunk_count: int = 0
    chunk_size: int = 0
    datasets: list[str] = field(default_factory=list)

    def mean(self, name: str) -> np.ndarray:
        """The per-column mean of squares (what llama-quantize uses as importance)."""
        return self.sums[name] / max(1, self.counts[name])

    def write(self, path: str | os.PathLike[str]) -> None:
        import gguf

        w = gguf.GGUFWriter(str(path), arch="imatrix")
        w.add_string("general.type", "imatrix")
        w.add_array("imatrix.datasets", self.datasets or [""])
        w.add_uint32("imatrix.chunk_count", self.chunk_count)
        w.add_uint32("imatrix.chunk_size", self.chunk_size)
        for name in sorted(self.sums):
            w.add_tensor(f"{name}.in_sum2", self.sums[name].astype(np.float32)[None, :])
            w.add_tensor(f"{name}.counts", np.array([[self.counts[name]]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> IMatrix:
        """Read a GGUF imatrix (llama-imatrix's or dynq's)."""
        gf = GGUFFile(path)
        im = cls(
            chunk_count=int(gf.get("imatrix.chunk_count", 0)),
            chunk_size=int(gf.get("imatrix.chunk_size", 0)),
            datasets=list(gf.get("imatrix.datasets", []) or []),
        )
        for t in gf.tensors:
            if t.endswith(".in_sum2"):
                name = t[: -len(".in_sum2")]
                im.sums[name] = np.frombuffer(gf.raw(t), np.float32).astype(np.float64)
                im.counts[name] = int(np.frombuffer(gf.raw(f"{name}.counts"), np.float32)[0])
        return im


def collect_imatrix(
    model_path: str | os.PathLike[str],
    tokens: Sequence[int] | str,
    ctx: int = 512,
    chunks: int | None = None,
    device: str = "cpu",
    batch: int = 4,
    process_output: bool = False,
    dataset: str = "",
    progress: Callable[[str], None] | None = None,
) -> IMatrix:
    """Run the model over the chunks, accumulating each layer matrix's input statistics."""
    gf = GGUFFile(model_path)
    model = load_model(gf, device)
    if isinstance(tokens, str):
        tokens = tokenize_text(gf, tokens)
    bos = gf.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(
        gf.get("tokenizer.ggml.add_bos_token", gf.get("tokenizer.ggml.model") == "llama")
    )
    chunk_tokens = make_chunks(tokens, ctx, chunks, bos, add_bos)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str, x: torch.Tensor) -> None:
        if not (name.startswith("blk.") or (process_output and name == "output.weight")):
            return
        s = x.double().pow(2).sum(0)
        if name in sums:
            sums[name] += s
        else:
            sums[name] = s
        counts[name] = counts.get(name, 0) + x.shape[0]

    model.hook = hook
    n = chunk_tokens.shape[0]
    for c0 in range(0, n, batch):
        h = model.hidden(chunk_tokens[c0 : c0 + batch])
        if process_output and model.output_name == "output.weight":
            model.project(h, keep=False)
        if progress:
            progress(f"imatrix: {min(c0 + batch, n)}/{n} chunks")
    model.hook = None
    return IMatrix(
        sums={k: v.cpu().numpy() for k, v in sums.items()},
        counts=counts,
        chunk_count=n,
        chunk_size=ctx,
        datasets=[dataset] if dataset else [],
    )


def compare(a: IMatrix, b: IMatrix) -> dict[str, float]:
    """Per tensor, the relative difference of the per-column means of squares (L1 over L1)."""
    out = {}
    for name in sorted(set(a.sums) & set(b.sums)):
        ma, mb = a.mean(name), b.mean(name)
        out[name] = float(np.abs(ma - mb).sum() / max(np.abs(mb).sum(), 1e-30))
    return out


def write_imatrix(path: str | os.PathLike[str], im: IMatrix) -> Path:
    im.write(path)
    return Path(path)
