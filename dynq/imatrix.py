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

import numpy as np
import torch

from dynq.engine.model import load_model
from dynq.evaluate import make_chunks, tokenize_text
from dynq.gguf_io import read_gguf
from dynq.imatrix_file import Imatrix


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
) -> Imatrix:
    """Run the model over the chunks, accumulating each layer matrix's input statistics."""
    gf = read_gguf(model_path)
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
    return Imatrix(
        sums={k: v.cpu().numpy()[None, :] for k, v in sums.items()},
        counts={k: np.array([c], dtype=np.int64) for k, c in counts.items()},
        datasets=[dataset] if dataset else [],
        chunk_count=n,
        chunk_size=ctx,
    )
