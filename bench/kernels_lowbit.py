"""Throughput of dynq's 1–3 bit i-quant kernels (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
IQ3_XXS, IQ3_S) against libggml's, per type, with and without an imatrix.

    python bench/kernels_lowbit.py --libggml /path/to/llama-build/bin [--device cuda] \\
        [--types iq2_xxs,iq3_s] [--rows 128] [--cols 2048] [--cpu-time]

MB/s is megabytes of float32 input per second (best of ``--repeat`` runs, after one warm-up).
ggml runs ``ggml_quantize_chunk`` through ctypes with ``--threads`` Python threads splitting the
rows (ctypes releases the GIL, so they run in parallel). dynq runs ``dynq.kernels.quantize`` on
``--device`` (on the CPU: chunks in parallel threads, as many as torch has intra-op threads).
``--cpu-time`` runs both on one thread and times process CPU time: a per-core comparison that
a busy machine distorts less. IQ2_XXS, IQ2_XS and IQ1_S run only with the imatrix (ggml
refuses them without one). The last column says whether the bytes match.
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

DEFAULT_TYPES = "iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,iq1_s,iq1_m"


def best_time(fn, repeat: int, clock=time.perf_counter, sync=None) -> float:
    fn()  # warm-up (and the lattice tables' first build)
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        best = min(best, clock() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libggml", default=os.environ.get("DYNQ_LIBGGML"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2, help="ggml threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread each (ggml and torch), timed by process CPU time",
    )
    args = ap.parse_args()
    clock = time.perf_counter
    if args.cpu_time:
        if args.device != "cpu":
            raise SystemExit("--cpu-time compares CPU kernels: drop --device cuda")
        args.threads = 1
        torch.set_num_threads(1)
        clock = time.process_time
    if not args.libggml:
        raise SystemExit("pass --libggml or set DYNQ_LIBGGML")
    g = load(args.libggml)
    rng = np.random.default_rng(0)
    x = (rng.standard_t(4, (args.rows, args.cols)) * 0.02).astype(np.float32)
    w = np.exp(rng.standard_normal(args.cols) * 1.5).astype(np.float32)
    mb = x.nbytes / 1e6
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    xin = torch.from_numpy(x).to(args.device) if args.device == "cuda" else x
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"# {args.rows}x{args.cols} float32 ({mb:.1f} MB), dynq on {dev} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"ggml {args.threads} threads, best of {args.repeat}"
        + (", process CPU time" if args.cpu_time else ", wall-clock time")
    )
    print(
        f"{'type':8s} {'imatrix':7s} {'ggml MB/s':>10s} {'dynq MB/s':>10s} {'dynq/ggml':>9s}  same"
    )
    for t in args.types.split(","):
        for im in (None, w):
            if im is None and g.requires_imatrix(t):
                print(f"{t:8s} {'no':7s} {'(ggml requires an imatrix)':>31s}", flush=True)
                continue
            ref = g.quantize(x, t, im, threads=args.threads)
            ours = kernels.quantize(xin, t, im, device=args.device)
            tg = best_time(
                lambda t=t, im=im: g.quantize(x, t, im, threads=args.threads), args.repeat, clock
            )
            td = best_time(
                lambda t=t, im=im: kernels.quantize(xin, t, im, device=args.device),
                args.repeat,
                clock,
                sync,
            )
            same = "yes" if np.array_equal(ref, ours) else "NO"
            print(
                f"{t:8s} {'yes' if im is not None else 'no':7s} {mb / tg:10.2f} {mb / td:10.2f} "
                f"{tg / td:9.3f}  {same}",
                flush=True,
            )


if __name__ == "__main__":
    main()
