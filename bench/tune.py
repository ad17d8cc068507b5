"""A model dynq has not seen before, taken through `dynq init` → `measure` → `tune --like` →
`build`/`eval`, against llama-quantize's stock mixes of the same size (same kernels, same imatrix).

    .venv/bin/python bench/tune.py SOURCE.gguf --name NAME --work DIR
        [--mixes IQ2_M,Q2_K,Q3_K_M,IQ4_XS,Q4_K_M] [--llama-bin <llama.cpp>/build/bin]

SOURCE is a full-precision GGUF; for the bundled models use grid-free references made by
../shared/tools/rescale_reference.py (their plain F32 dequantizations favour the source's own
types). Per mix it prints the stock and tuned file sizes, mean/p99 KLD and top-1 agreement as
`dynq eval` measures them on the recipe's evaluation text (never its calibration text), and the
change of mean KLD (goal: at least 30 % lower, no larger file). With `--llama-bin`, the same
files are scored by `llama-perplexity --kl-divergence` too (its mean KLD in the last columns).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DYNQ = [sys.executable, "-m", "dynq"]


def run(*args: object, capture: bool = False) -> str:
    cmd = [*DYNQ, *map(str, args)]
    print("$ dynq", " ".join(map(str, args)), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, text=True, capture_output=capture, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr if capture else ''}")
    return p.stdout if capture else ""


def llama_kld(bin_dir: Path, ref: Path, files: list[Path], text: Path, work: Path) -> list[float]:
    base = work / "llama-kld-base.bin"
    exe = str(bin_dir / "llama-perplexity")
    common = ["-f", str(text), "-c", "512", "-t", "2", "-b", "2048"]
    if not base.exists():
        subprocess.run(
            [exe, "-m", str(ref), *common, "--kl-divergence-base", str(base)],
            check=True,
            capture_output=True,
        )
    out = []
    for f in files:
        p = subprocess.run(
            [exe, "-m", str(f), *common, "--kl-divergence-base", str(base), "--kl-divergence"],
            check=True,
            capture_output=True,
            text=True,
        )
        m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", p.stdout + p.stderr)
        out.append(float(m.group(1)) if m else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--mixes", default="IQ2_M,Q2_K,Q3_K_M,IQ4_XS,Q4_K_M")
    ap.add_argument("--llama-bin", type=Path)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / f"{args.name}.toml"
    mixes = args.mixes.split(",")
    t0 = time.perf_counter()
    if not recipe.exists():
        run("init", args.source.resolve(), "--name", args.name, "-o", recipe,
            "--mixes", ",".join(mixes))  # fmt: skip
    out = work / "build"
    run("measure", recipe, "--out", out, "--device", args.device)
    t_measure = time.perf_counter() - t0
    for mix in mixes:
        run("tune", recipe, "--target", f"UD-{mix}", "--like", f"llama.cpp:{mix}")
    run("build", recipe, "--out", out, "--force", "--device", args.device)
    reports = json.loads(
        run("eval", recipe, "--out", out, "--baselines", "--format", "json", "-q",
            "--device", args.device, capture=True)
    )  # fmt: skip
    by = {r["target"]: r for r in reports}
    meas = json.loads((work / "measurements" / f"{args.name}.json").read_text())
    f = meas["faithfulness"]
    print(
        f"# {args.name}: measured in {t_measure:.0f} s (Spearman {f['spearman']:.3f} over "
        f"{f['pairs']} sampled pairs); total {time.perf_counter() - t0:.0f} s"
    )
    head = "| mix | stock bytes | tuned bytes | stock mean KLD | tuned mean KLD | change | "
    head += "stock p99 | tuned p99 | stock top-1 | tuned top-1 |"
    if args.llama_bin:
        head += " llama.cpp stock KLD | llama.cpp tuned KLD |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for mix in mixes:
        s, t = by[f"llama.cpp:{mix}"], by[f"UD-{mix}"]
        change = t["mean_kld"] / s["mean_kld"] - 1
        row = (
            f"| {mix} | {s['file_size']:,} | {t['file_size']:,} | {s['mean_kld']:.5f} | "
            f"{t['mean_kld']:.5f} | {change:+.1%} | {s['p99_kld']:.4f} | {t['p99_kld']:.4f} | "
            f"{s['top1_agreement']:.4f} | {t['top1_agreement']:.4f} |"
        )
        if args.llama_bin:
            files = [
                out / "baselines" / f"{args.name}-{mix}.gguf",
                out / f"{args.name}-UD-{mix}.gguf",
            ]
            ls, lt = llama_kld(
                args.llama_bin, args.source.resolve(), files,
                work / "calibration" / "eval-docs-code-v1.txt", work,
            )  # fmt: skip
            row += f" {ls:.5f} | {lt:.5f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
