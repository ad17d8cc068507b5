"""``dynq compare RECIPE``: targets and baselines by size, bpw, PPL, KLD and top-1 agreement."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynq.recipe import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="targets and baselines: size, bpw, PPL, KLD, top-1; the Pareto front"
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--out", type=Path, help="where the builds are (default: build/<name>/)")
    p.add_argument("--format", "-f", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--plot", type=Path, help="also write a size-vs-KLD plot (SVG) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dynq.compare import compare_rows, render_svg, render_table
    from dynq.fsutil import atomic_write_text

    loaded = load_recipe(args.recipe)
    rows = compare_rows(loaded, args.out)
    if args.format == "json":
        doc = [
            {
                "target": r.label,
                "kind": r.kind,
                "file_size": r.file_size,
                "bpw": r.bpw,
                "pareto": r.pareto,
                **{
                    k: v
                    for k, v in (r.report or {}).items()
                    if k
                    in ("ppl", "mean_kld", "median_kld", "p99_kld", "max_kld", "top1_agreement")
                },
            }
            for r in rows
        ]
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(rows, markdown=args.format == "markdown"))
    if args.plot:
        title = f"{loaded.recipe.name} {loaded.recipe.version}: size vs mean KLD"
        atomic_write_text(args.plot, render_svg(rows, title))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
