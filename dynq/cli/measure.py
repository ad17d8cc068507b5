"""``dynq measure RECIPE [--types T,...] [--device cpu|cuda]``: what each tensor's type costs in
KLD (see dynq.measure), written to ``<recipe dir>/measurements/<name>.json`` for ``dynq tune``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.errors import DynqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure", help="measure each tensor's KLD cost per candidate type (for dynq tune)"
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument(
        "--types",
        help="candidate types, comma-separated; 'default' and 'lowbit' name the two sets "
        "(default: the recipe's [measure] types, else the k-quants, legacy types, IQ4_NL and "
        "IQ4_XS)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--out", type=Path, help="where the recipe's imatrix lives (default build/<name>/)"
    )
    p.add_argument(
        "--probe-chunks", type=int, help="calibration chunks per probe (default: [measure], 2)"
    )
    p.add_argument(
        "--sample", type=int, help="pairs checked for faithfulness (default: [measure], 24)"
    )
    p.add_argument("--force", action="store_true", help="measure again even if up to date")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dynq.measure import measure, parse_types
    from dynq.recipe import load_recipe

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise DynqError(f"--device {args.device}: CUDA is not available in this torch build")
    loaded = load_recipe(args.recipe)

    def say(m: str) -> None:
        if not args.quiet:
            print(m, file=sys.stderr)

    # flags left out: the recipe's [measure] table decides (dynq.measure.measure)
    res, path = measure(
        loaded,
        types=parse_types(args.types) if args.types is not None else None,
        device=args.device,
        out=args.out,
        probe_chunks=max(1, args.probe_chunks) if args.probe_chunks is not None else None,
        sample=max(0, args.sample) if args.sample is not None else None,
        force=args.force,
        say=say,
    )
    f = res["faithfulness"]
    print(
        f"{path}: {len(res['groups'])} tensors × {len(res['types'])} candidate types; "
        f"faithfulness: Spearman {f['spearman']:.3f} over {f['pairs']} sampled pairs"
    )
    return 0
