"""``dynq diff OLD NEW`` / ``dynq diff RECIPE --rev GIT_REV``: what a recipe change does."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dynq.diff import diff_recipes, render_markdown, render_text
from dynq.errors import RecipeError
from dynq.recipe import LoadedRecipe, load_recipe, parse_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="rules, per-tensor types and size between two recipe versions")
    p.add_argument("old", metavar="OLD", help="old recipe (or the recipe, with --rev)")
    p.add_argument("new", metavar="NEW", nargs="?", help="new recipe")
    p.add_argument("--rev", help="compare RECIPE at this git revision against the working file")
    p.add_argument("--format", "-f", choices=("text", "markdown"), default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are differences")
    p.set_defaults(func=run)


def recipe_at_rev(path: Path, rev: str) -> LoadedRecipe:
    """The recipe as committed at ``rev`` (paths in it resolve beside the working file)."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True
    )
    if top.returncode != 0:
        raise RecipeError(f"{path}: not in a git repository (needed for --rev)")
    rel = path.resolve().relative_to(Path(top.stdout.strip()).resolve())
    show = subprocess.run(
        ["git", "show", f"{rev}:{rel.as_posix()}"],
        cwd=top.stdout.strip(),
        capture_output=True,
        text=True,
    )
    if show.returncode != 0:
        msg = show.stderr.strip().splitlines()[-1] if show.stderr.strip() else "git show failed"
        raise RecipeError(f"{path}: --rev {rev}: {msg}")
    label = Path(f"{path}@{rev}")
    recipe = parse_recipe(show.stdout, label.with_name(path.name))
    return LoadedRecipe(recipe, path, show.stdout)


def run(args: argparse.Namespace) -> int:
    if args.rev:
        if args.new:
            raise RecipeError("give either OLD NEW or RECIPE --rev REV, not both")
        new = load_recipe(args.old)
        old = recipe_at_rev(Path(args.old), args.rev)
    else:
        if not args.new:
            raise RecipeError("dynq diff needs OLD and NEW recipes, or RECIPE --rev REV")
        old, new = load_recipe(args.old), load_recipe(args.new)
    d = diff_recipes(old, new)
    sys.stdout.write(render_markdown(d) if args.format == "markdown" else render_text(d))
    return 1 if args.exit_code and not d.empty else 0
