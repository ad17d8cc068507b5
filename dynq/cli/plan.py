"""``dynq plan RECIPE [--target T] [--format table|json|markdown]``: per-tensor types and size."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from dynq.plan import Plan, Resolver
from dynq.recipe import format_layers, load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="per-tensor types and exact size of a recipe's targets")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--target", "-t", action="append", help="only this target (repeatable)")
    p.add_argument("--format", "-f", choices=("table", "json", "markdown"), default="table")
    p.add_argument(
        "--tensors", action="store_true", help="table/markdown: list every tensor, not only layers"
    )
    p.set_defaults(func=run)


def layer_summary(plan: Plan) -> list[tuple[str, dict[str, str]]]:
    """Rows of (layers, {kind: type}), runs of layers with identical types collapsed."""
    kinds: list[str] = []
    per_layer: dict[int, dict[str, str]] = defaultdict(dict)
    other: dict[str, str] = {}
    for t in plan.tensors:
        if t.layer is None:
            other[t.name] = t.type.name
            continue
        if t.kind not in kinds:
            kinds.append(t.kind)
        per_layer[t.layer][t.kind] = t.type.name + ("*" if t.fallback_from else "")
    rows: list[tuple[str, dict[str, str]]] = []
    run: list[int] = []
    for layer in sorted(per_layer):
        if run and per_layer[layer] == per_layer[run[-1]] and layer == run[-1] + 1:
            run.append(layer)
            continue
        if run:
            rows.append((format_layers(set(run)), per_layer[run[0]]))
        run = [layer]
    if run:
        rows.append((format_layers(set(run)), per_layer[run[0]]))
    return [("—", other), *rows] if other else rows


def _short(kind: str) -> str:
    return kind.removesuffix(".weight")


def _kinds(plan: Plan) -> list[str]:
    out: list[str] = []
    for t in plan.tensors:
        if t.layer is not None and t.kind not in out and t.type.is_quantized:
            out.append(t.kind)
    return out


def _summary_line(p: Plan) -> str:
    exact = "" if p.exact else " (metadata estimated: inventory from safetensors)"
    return (
        f"{p.recipe} {p.recipe_version} / {p.target}: {p.file_size:,} bytes "
        f"({p.file_size / 2**30:.3f} GiB), {p.bpw:.3f} bpw, {len(p.tensors)} tensors, "
        f"{len(p.fallbacks)} fallbacks{exact}"
    )


def print_table(plans: list[Plan], tensors: bool) -> None:
    console = Console()
    for p in plans:
        console.print(f"[bold]{_summary_line(p)}[/bold]")
        hist = ", ".join(f"{k} {c}×/{b / 1e6:.1f} MB" for k, (c, b) in p.type_histogram().items())
        console.print(f"  types: {hist}")
        kinds = _kinds(p)
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("layers")
        for k in kinds:
            table.add_column(_short(k))
        for layers, types in layer_summary(p):
            if layers == "—":
                continue
            table.add_row(layers, *(types.get(k, "") for k in kinds))
        console.print(table)
        for t in p.tensors:
            if t.layer is None and t.type.is_quantized:
                console.print(f"  {t.name}: {t.type.name}  ({t.rule})")
        if p.fallbacks:
            console.print("  * fallback: the chosen type's block does not divide the row length")
        if tensors:
            tt = Table(header_style="bold")
            for col in ("tensor", "shape", "type", "bpw", "MB", "rule", "note / fallback"):
                tt.add_column(col, justify="right" if col in ("bpw", "MB") else "left")
            for t in p.tensors:
                extra = t.note or ""
                if t.fallback_from:
                    extra = f"fallback from {t.fallback_from.name}" + (
                        f"; {extra}" if extra else ""
                    )
                tt.add_row(
                    t.name,
                    "×".join(map(str, t.shape)),
                    t.type.name,
                    f"{t.bpw:.2f}",
                    f"{t.bytes / 1e6:.2f}",
                    t.rule,
                    extra,
                )
            console.print(tt)
        console.print()


def render_markdown(plans: list[Plan], tensors: bool) -> str:
    out: list[str] = []
    for p in plans:
        out += [f"### {p.target}", "", _summary_line(p), ""]
        kinds = _kinds(p)
        out.append("| layers | " + " | ".join(_short(k) for k in kinds) + " |")
        out.append("|---" * (len(kinds) + 1) + "|")
        for layers, types in layer_summary(p):
            if layers != "—":
                out.append(f"| {layers} | " + " | ".join(types.get(k, "") for k in kinds) + " |")
        if tensors:
            out += ["", "| tensor | type | MB | rule |", "|---|---|---:|---|"]
            out += [
                f"| {t.name} | {t.type.name}{'*' if t.fallback_from else ''} | "
                f"{t.bytes / 1e6:.2f} | {t.rule} |"
                for t in p.tensors
            ]
        out.append("")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    loaded = load_recipe(args.recipe)
    resolver = Resolver(loaded)
    names = args.target or list(loaded.recipe.targets)
    plans = [resolver.plan(n) for n in names]
    if args.format == "json":
        if args.target and len(plans) == 1:
            doc: object = plans[0].to_json()
        else:
            doc = {
                "recipe": loaded.recipe.name,
                "recipe_version": loaded.recipe.version,
                "plans": [p.to_json() for p in plans],
            }
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "markdown":
        sys.stdout.write(render_markdown(plans, args.tensors))
    else:
        print_table(plans, args.tensors)
    return 0
