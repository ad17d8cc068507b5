"""``dynq schema [--check] [-o FILE]``: the JSON Schema of the recipe format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.fsutil import atomic_write_text
from dynq.recipe import json_schema

DEFAULT = Path("schemas/recipe.schema.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="write the recipe JSON Schema (schemas/recipe.schema.json)")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT, help="file to write ('-': stdout)")
    p.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = json_schema()
    if str(args.output) == "-":
        sys.stdout.write(text)
        return 0
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale; run: dynq schema", file=sys.stderr)
            return 1
        return 0
    if current != text:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    return 0
