"""``dynq imatrix RECIPE [-o FILE]`` and ``dynq imatrix MODEL.gguf --text FILE -o FILE``: per
weight matrix, the sum of squared input activations per column and the token count, in
llama-imatrix's GGUF format (which llama-quantize accepts).

The recipe form runs the recipe's source model over its calibration text (conversations
rendered through the model's chat template) with its ``ctx`` and ``chunks``, and writes
``<out>/<name>.imatrix.gguf``, where ``dynq build`` finds it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.errors import DynqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "imatrix",
        help="compute an importance matrix (llama-imatrix's GGUF format) over calibration text",
    )
    p.add_argument(
        "input",
        metavar="RECIPE|MODEL.gguf",
        help="a recipe (its source and calibration text) or a GGUF model with --text",
    )
    p.add_argument("--text", type=Path, help="UTF-8 calibration text for a MODEL.gguf")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="imatrix GGUF to write (a recipe's default: <out>/<name>.imatrix.gguf)",
    )
    p.add_argument("--out", type=Path, help="a recipe's output folder (default build/<name>/)")
    p.add_argument("--ctx", type=int, help="tokens per chunk (a model's default 512)")
    p.add_argument("--chunks", type=int, help="use the first N chunks (a model's default: all)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--batch", type=int, default=4, help="chunks run through a layer at once")
    p.add_argument(
        "--process-output", action="store_true", help="also collect output.weight's inputs"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise DynqError(f"--device {args.device}: CUDA is not available in this torch build")
    if not Path(args.input).exists():
        raise DynqError(f"{args.input}: file not found")

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    if args.input.endswith(".toml"):
        im, out = _recipe(args, progress)
    else:
        im, out = _model(args, progress)
    from dynq.imatrix_file import save_imatrix

    out.parent.mkdir(parents=True, exist_ok=True)
    save_imatrix(out, im)
    if not args.quiet:
        print(f"{out}: {len(im)} tensors, {im.chunk_count} chunks of {im.chunk_size}")
    return 0


def _recipe(args: argparse.Namespace, progress):  # type: ignore[no-untyped-def]
    from dynq.calibration import compute_imatrix
    from dynq.outputs import imatrix_path
    from dynq.recipe import load_recipe

    for flag in ("text", "ctx", "chunks"):
        if getattr(args, flag) is not None:
            raise DynqError(
                f"--{flag}: the recipe form uses the recipe's calibration section instead"
            )
    if args.process_output:
        raise DynqError("--process-output: only with a MODEL.gguf")
    loaded = load_recipe(args.input)
    if loaded.recipe.calibration is None or not loaded.recipe.calibration.text:
        raise DynqError(f"{args.input}: calibration.text: the recipe names no calibration text")
    im = compute_imatrix(loaded, device=args.device, batch=max(1, args.batch), progress=progress)
    return im, args.output or imatrix_path(loaded, args.out)


def _model(args: argparse.Namespace, progress):  # type: ignore[no-untyped-def]
    from dynq.evaluate import read_text
    from dynq.imatrix import collect_imatrix

    if args.text is None or args.output is None:
        raise DynqError("a MODEL.gguf needs --text FILE and -o FILE (or give a RECIPE)")
    if args.out is not None:
        raise DynqError("--out: only with a RECIPE (a model's imatrix goes to -o)")
    im = collect_imatrix(
        args.input,
        read_text(args.text),
        ctx=args.ctx or 512,
        chunks=None if args.chunks is None or args.chunks < 0 else args.chunks,
        device=args.device,
        batch=max(1, args.batch),
        process_output=args.process_output,
        dataset=str(args.text),
        progress=progress,
    )
    return im, args.output
