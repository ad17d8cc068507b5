"""``dynq tui [RECIPE]``: the terminal workbench (registry browser, recipe editor, builds).

Textual is imported inside ``run`` only, so that the rest of the CLI never loads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="browse the registry, edit a recipe, build and compare targets")
    p.add_argument("recipe", metavar="RECIPE", nargs="?", type=Path, help="open this recipe")
    p.add_argument("--target", "-t", help="open this target of RECIPE")
    p.add_argument(
        "--registry", type=Path, default=Path("registry"), help="recipe folder (default: registry/)"
    )
    p.add_argument(
        "--build-dir",
        type=Path,
        default=Path("build"),
        help="where builds and reports live (default: build/, as dynq build)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tui import run as run_tui

    return run_tui(
        recipe=args.recipe, registry=args.registry, target=args.target, build_root=args.build_dir
    )
