"""Throughput of dynq's quantization kernels against libggml's, per type, with and without an
imatrix, on the same float32 tensors.

    python bench/kernels.py --libggml /path/to/llama-build/bin [--device cuda]
        [--types q4_k,q6_k | --types lowbit] [--shapes 4096x14336,14336x4096] [--ggml-rows 256]

MB/s is megabytes of float32 input per second (best of ``--repeat`` runs, after one warm-up).
ggml runs ``ggml_quantize_chunk`` through ctypes with ``--threads`` Python threads splitting the
rows (ctypes releases the GIL, so they run in parallel). dynq runs ``dynq.kernels.quantize`` on
``--device`` with its default chunk threads (the CPUs this process may use; one with
``--cpu-time``). The last column says whether the bytes match.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from dynq import kernels
from dynq.kernels.ggml_ref import load

DEFAULT_TYPES = (
    "q8_0,q4_0,q4_1,q5_0,q5_1,q6_k,q4_k,q5_k,q3_k,q2_k,iq4_nl,iq4_xs,tq1_0,tq2_0,mxfp4,q1_0"
)
#: ``--types lowbit``: the 1–3 bit i-quants (ggml refuses IQ2_XXS, IQ2_XS and IQ1_S without an
#: imatrix, so those run with one only)
LOWBIT_TYPES = "iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,iq1_s,iq1_m"


def best_time(fn, repeat: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def copy_bandwidth(dev: str) -> float:
    """The card's device-to-device copy rate in GB/s (bytes read + written), measured now."""
    a = torch.empty(1 << 28, dtype=torch.float32, device=dev)  # 1 GiB
    b = torch.empty_like(a)

    def copy() -> None:
        b.copy_(a)
        torch.cuda.synchronize()

    return 2 * a.nbytes / best_time(copy, 5) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libggml", default=os.environ.get("DYNQ_LIBGGML"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--types", default=DEFAULT_TYPES, help="comma-separated, or 'lowbit'")
    ap.add_argument(
        "--shapes", default="1024x2048", help="comma-separated ROWSxCOLS tensors to quantize"
    )
    ap.add_argument(
        "--ggml-rows",
        type=int,
        default=0,
        help="time ggml on the first N rows only (its MB/s does not depend on the row count; "
        "saves minutes on large shapes); bytes are compared on those rows",
    )
    ap.add_argument("--threads", type=int, default=2, help="ggml threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread each (ggml and torch), timed by process CPU time: a per-core comparison "
        "that a busy machine distorts less than wall-clock time",
    )
    args = ap.parse_args()
    clock = time.perf_counter
    if args.cpu_time:
        args.threads = 1
        kernels.set_threads(1)
        torch.set_num_threads(1)
        clock = time.process_time
    if not args.libggml:
        raise SystemExit("pass --libggml or set DYNQ_LIBGGML")
    g = load(args.libggml)
    cuda = args.device == "cuda"
    if cuda:
        bw = copy_bandwidth(args.device)
        print(f"# {torch.cuda.get_device_name()}: device copy {bw:.0f} GB/s (read + write)")
    for shape in args.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        x = (rng.standard_t(4, (rows, cols)) * 0.02).astype(np.float32)
        w = np.exp(rng.standard_normal(cols) * 1.5).astype(np.float32)
        gx = x[: args.ggml_rows] if args.ggml_rows else x
        mb, gmb = x.nbytes / 1e6, gx.nbytes / 1e6
        xin = torch.from_numpy(x).to(args.device) if cuda else x
        print(
            f"\n# {rows}x{cols} float32 ({mb:.1f} MB), dynq on {args.device} "
            f"(torch {torch.__version__}, {kernels.threads()} threads), "
            f"ggml {args.threads} threads on {gx.shape[0]} rows, best of {args.repeat}"
            + (", process CPU time" if args.cpu_time else ", wall-clock time")
        )
        head = f"{'type':8s} {'imatrix':7s} {'ggml MB/s':>10s} {'dynq MB/s':>10s} {'dynq/ggml':>9s}"
        if cuda:
            head += f" {'from host':>10s} {'of copy bw':>10s}"
        print(head + "  same")
        types = LOWBIT_TYPES if args.types == "lowbit" else args.types
        for t in types.split(","):
            for im in (None, w):
                if im is None and g.requires_imatrix(t):
                    print(f"{t:8s} {'no':7s} {'(ggml requires an imatrix)':>31s}", flush=True)
                    continue
                ref = g.quantize(gx, t, im, threads=args.threads)
                ours = kernels.quantize(xin, t, im, device=args.device)
                tg = best_time(
                    lambda t=t, im=im, gx=gx: g.quantize(gx, t, im, threads=args.threads),
                    args.repeat,
                    clock,
                )
                td = best_time(
                    lambda t=t, im=im, xin=xin: kernels.quantize(xin, t, im, device=args.device),
                    args.repeat,
                    clock,
                )
                same = "yes" if np.array_equal(ref, ours[: ref.size]) else "NO"
                line = (
                    f"{t:8s} {'yes' if im is not None else 'no':7s} {gmb / tg:10.1f} "
                    f"{mb / td:10.1f} {(mb / td) / (gmb / tg):9.3f}"
                )
                if cuda:
                    th = best_time(
                        lambda t=t, im=im, x=x: kernels.quantize(x, t, im, device=args.device),
                        args.repeat,
                        clock,
                    )
                    moved = (x.nbytes + ours.nbytes) / td / 1e9
                    line += f" {mb / th:10.1f} {moved / bw:10.1%}"
                print(f"{line}  {same}", flush=True)


if __name__ == "__main__":
    main()
