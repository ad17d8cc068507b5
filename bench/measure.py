"""`dynq measure` at scale: time and peak memory on an 8B-shaped synthetic model, one device.

    python bench/measure.py --synthetic-layers 4 --device cuda [--chunks 8] [--work DIR]

The model is bench/build.py's 8B-shaped F16 GGUF (Llama 3 8B's shapes, seeded random weights,
N of its 32 layers; its vocabulary starts with the 256 byte-level symbols, so real text
tokenizes one token per byte). Its recipe is started by `dynq init` (the bundled chat-and-code
conversations, read as plain text as the model has no chat template), with the calibration cut
to `--chunks` chunks of 512 tokens; then `dynq measure` runs in this process — the imatrix, the
imatrix-weighted error of every (tensor, default candidate type) pair, and the exact KLD probes —
with the weight cache off (every forward pass streams the layers from the memory map, as a model
larger than memory must). Prints each phase's seconds, the peak RSS and the peak GPU memory, and
the per-layer cost that the extrapolations in docs/benchmarks.md are built from.

`--dims 256,512,1024,128` shrinks the model for a quick check of this script on a CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import tomllib  # noqa: E402

from build import LLAMA3_8B, synthetic_8b  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--synthetic-layers", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--chunks", type=int, default=8, help="calibration chunks of 512 tokens")
    ap.add_argument("--dims", help="hidden,ffn,vocab,kv (default: Llama 3 8B's)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--make-synthetic", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    dims = tuple(int(x) for x in args.dims.split(",")) if args.dims else LLAMA3_8B
    work = args.work or Path(tempfile.mkdtemp(prefix="dynq-bench-measure-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.make_synthetic:
        synthetic_8b(work, args.synthetic_layers, dims)  # type: ignore[arg-type]
        return
    # made in a child, so that this process's peak RSS is the measurement's own
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--make-synthetic", "--work", str(work)],
        check=True,
    )
    src = synthetic_8b(work, args.synthetic_layers, dims)  # type: ignore[arg-type]
    print(
        f"synthetic model: {src.stat().st_size / 2**30:.2f} GiB F16, "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    from dynq.init import init_recipe
    from dynq.measure import measure
    from dynq.recipe import load_recipe

    recipe = work / "synth.toml"
    if not recipe.exists():
        init_recipe(str(src), name="synth", output=recipe, mixes=["Q4_K_M"])
        data = tomllib.loads(recipe.read_text())
        data["calibration"]["chunks"] = args.chunks
        recipe.write_text(tomli_w.dumps(data))
    os.environ["DYNQ_WEIGHT_CACHE_MB"] = "0"  # stream every layer, as a model larger than RAM
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    marks: list[tuple[float, str]] = []

    def say(m: str) -> None:
        marks.append((time.perf_counter(), m))
        print(m, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    res, path = measure(
        load_recipe(recipe), device=args.device, out=work / "out", force=True, say=say
    )
    total = time.perf_counter() - t0
    # phases from the progress messages: imatrix until the first tensor's error, errors until
    # the first probe (a resumed run skips what its partial file holds)
    end = t0 + total
    first = {"errors": end, "probes": end}
    for t, m in marks:
        if m.startswith("measure: errors") and first["errors"] == end:
            first["errors"] = t
        if "exact KLD probes" in m:
            first["probes"] = t
    first["errors"] = min(first["errors"], first["probes"])
    imatrix_s = first["errors"] - t0
    errors_s = first["probes"] - first["errors"]
    probes_s = end - first["probes"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    gpu = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else 0.0
    n_probes = sum(1 for _, m in marks if m.startswith("measure: probe "))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"{path}: {len(res['groups'])} tensors × {len(res['types'])} types, "
        f"Spearman {res['faithfulness']['spearman']:.3f}"
    )
    print(
        "| model | device | calibration | imatrix s | errors s | probes s (n) | total s "
        "| peak RSS MiB | peak GPU GiB |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|"
    )
    print(
        f"| synthetic 8B-shaped, {args.synthetic_layers} layers | {name} | {args.chunks}×512 | "
        f"{imatrix_s:.0f} | {errors_s:.0f} | {probes_s:.0f} ({n_probes}) | {total:.0f} | "
        f"{rss:.0f} | {gpu:.1f} |"
    )


if __name__ == "__main__":
    main()
