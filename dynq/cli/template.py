"""``dynq template check RECIPE|FILE.gguf|FILE.jinja [--format json] [--engine E]``: render a
chat template in the sandbox on the fixed conversations and flag what llama.cpp cannot run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynq.errors import DynqError
from dynq.gguf_io import read_gguf
from dynq.recipe import load_recipe
from dynq.templates import ALL_ENGINES, check_gguf, check_recipe, check_template


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("template", help="check chat templates against llama.cpp's engines")
    tsub = p.add_subparsers(dest="template_command", metavar="SUBCOMMAND", required=True)
    c = tsub.add_parser(
        "check",
        help="render a template in a sandbox and flag constructs llama.cpp cannot run",
        description="Check the chat template of a recipe (its model.chat_template, else its "
        "source GGUF's), a GGUF file, or a .jinja file. Exit status 1 when there are errors.",
    )
    c.add_argument("path", metavar="RECIPE|FILE.gguf|FILE.jinja")
    c.add_argument("--format", "-f", choices=("text", "json"), default="text")
    c.add_argument(
        "--engine",
        "-e",
        choices=("jinja", "minja", "all"),
        default="all",
        help="which engines must run it: llama.cpp's common/jinja, google/minja (builds "
        "before llama.cpp PR #18462), or both (default)",
    )
    c.add_argument("--bos-token", default="", help=".jinja files: the BOS token text")
    c.add_argument("--eos-token", default="", help=".jinja files: the EOS token text")
    c.add_argument(
        "--add-bos", action="store_true", help=".jinja files: the tokenizer adds BOS itself"
    )
    c.add_argument(
        "--render",
        metavar="CONVERSATION",
        help="also print what the template renders for this test conversation "
        "(e.g. tools+gen; 'list' lists them)",
    )
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    engines = list(ALL_ENGINES) if args.engine == "all" else [args.engine]
    path = Path(args.path)
    if path.suffix == ".gguf":
        reports = check_gguf(read_gguf(path), engines=engines, name=str(path))
    elif path.suffix in (".jinja", ".j2", ".jinja2", ".txt"):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DynqError(f"{path}: cannot read template: {e}") from None
        reports = [
            check_template(
                text,
                bos_token=args.bos_token,
                eos_token=args.eos_token,
                add_bos=args.add_bos,
                engines=engines,
                name=str(path),
            )
        ]
    else:
        loaded = load_recipe(path)
        reports, complete = check_recipe(loaded, engines=engines)
        if not complete:
            raise DynqError(
                f"{path}: model.source {loaded.recipe.model.source} is not on this machine and "
                "the recipe has no model.chat_template: nothing to check (download the source)"
            )
    if args.render:
        names = list(reports[0].renders) if reports else []
        if args.render == "list" or args.render not in names:
            if args.render != "list":
                raise DynqError(f"no render '{args.render}' (have: {', '.join(names)})")
            print("\n".join(names))
            return 0
        for r in reports:
            print(r.renders[args.render])
        return 0 if all(r.ok for r in reports) else 1
    if args.format == "json":
        out = {"ok": all(r.ok for r in reports), "reports": [r.to_json() for r in reports]}
        print(json.dumps(out, indent=1, ensure_ascii=False))
    else:
        for r in reports:
            for line in r.lines():
                print(line)
            print(r.summary())
    return 0 if all(r.ok for r in reports) else 1
