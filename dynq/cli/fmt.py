"""``dynq fmt [--check] [RECIPE...]``: write recipes in their canonical form."""

from __future__ import annotations

import argparse
import sys

from dynq.errors import RecipeError
from dynq.recipe import comment_line, dump_recipe, load_recipe, save_recipe
from dynq.registry import find_recipes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fmt", help="rewrite recipes canonically (all of registry/ by default)")
    p.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipe files or folders")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if any would")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    changed = 0
    for path in find_recipes(args.recipes):
        loaded = load_recipe(path)
        text = dump_recipe(loaded.recipe, path)
        if text == loaded.text:
            continue
        changed += 1
        if args.check:
            print(f"would reformat {path}")
            continue
        line = comment_line(loaded.text)
        if line is not None:
            raise RecipeError(
                f"{path}:{line}: comments are not kept by the canonical form; "
                "move them into 'note' fields, then run dynq fmt again"
            )
        save_recipe(loaded.recipe, path)
        print(f"reformatted {path}")
    if args.check and changed:
        print(f"{changed} recipe(s) not in canonical form; run: dynq fmt", file=sys.stderr)
        return 1
    return 0
