"""``dynq validate [RECIPE...]``: load, resolve every target, check pinned files."""

from __future__ import annotations

import argparse
import sys

from dynq.errors import DynqError
from dynq.plan import Resolver
from dynq.recipe import load_recipe
from dynq.registry import find_recipes
from dynq.sources import check_file_ref
from dynq.templates import check_for_build


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check recipes (all of registry/ by default)")
    p.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipe files or folders")
    p.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    p.set_defaults(func=run)


def validate_one(path) -> str:
    """Validate one recipe completely; returns a one-line summary or raises DynqError."""
    loaded = load_recipe(path)
    r = loaded.recipe
    for section in (r.calibration, r.evaluation):
        if section is None:
            continue
        for ref in section.text:
            check_file_ref(loaded.resolve(ref.path), ref.sha256)
    if r.calibration is not None and r.calibration.imatrix is not None:
        ref = r.calibration.imatrix
        check_file_ref(loaded.resolve(ref.path), ref.sha256)
    check_for_build(loaded, lambda m: print(f"dynq: warning: {m}", file=sys.stderr))
    resolver = Resolver(loaded)
    plans = resolver.plan_all()
    sizes = ", ".join(f"{p.target} {p.file_size / 1e9:.3g} GB" for p in plans)
    return f"ok {r.name} {r.version}: {len(plans)} targets ({sizes})"


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in find_recipes(args.recipes):
        try:
            line = validate_one(path)
        except DynqError as e:
            print(f"dynq: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            print(line)
    return 2 if failed else 0
