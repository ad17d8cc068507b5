"""``dynq build RECIPE [--target T ...]``: quantize a recipe's targets into GGUF files."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dynq.recipe import load_recipe

# dynq.build (and with it torch) is imported in run(), so that `dynq --help` and the light
# commands start fast.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="quantize a recipe's targets into GGUF files")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--target", "-t", action="append", help="only this target (repeatable)")
    p.add_argument("--out", type=Path, help="output folder (default: build/<name>/)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where kernels run (default: cpu)")
    p.add_argument("--imatrix", type=Path, help="importance matrix (llama.cpp GGUF or .dat)")
    p.add_argument("--jobs", "-j", type=int, help="CPU threads for the kernels")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--json", action="store_true", help="print the build reports as JSON")
    p.set_defaults(func=run)


def _term_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from dynq.build import Builder, BuildOptions
    from dynq.outputs import output_path

    # `kill` (SIGTERM) cleans up like Ctrl-C: temp files removed, no partial output left.
    signal.signal(signal.SIGTERM, _term_as_interrupt)
    if args.jobs:
        from dynq import kernels

        kernels.set_threads(args.jobs)
    err = Console(stderr=True)
    loaded = load_recipe(args.recipe)
    opts = BuildOptions(
        targets=args.target,
        out=args.out,
        device=args.device,
        imatrix=args.imatrix,
        force=args.force,
    )
    builder = Builder(
        loaded,
        opts,
        warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}"),
        say=lambda m: err.print(m, highlight=False),
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tensors {task.fields[mb]:,.1f} MB"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=args.json or not err.is_terminal) as bar:
        tasks = {t: bar.add_task(t, total=len(p.tensors), mb=0.0) for t, p in builder.plans.items()}

        def progress(target: str, done: int, nbytes: int, total: int) -> None:
            bar.update(tasks[target], completed=done, mb=nbytes / 1e6)

        reports = builder.run(progress)
    if args.json:
        json.dump([r.to_json() for r in reports], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for r in reports:
            print(
                f"built {output_path(loaded, r.target, args.out)}: {r.file_size:,} bytes "
                f"(= Plan), {r.bpw:.3f} bpw, "
                f"{r.seconds:.1f} s, sha256 {r.sha256[:12]}"
            )
    return 0
