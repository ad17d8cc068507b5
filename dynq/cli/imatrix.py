"""``dynq imatrix MODEL.gguf --text FILE -o imatrix.gguf``: per weight matrix, the sum of
squared input activations per column and the token count, in llama-imatrix's GGUF format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.errors import DynqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "imatrix",
        help="compute an importance matrix (llama-imatrix's GGUF format) over a text",
    )
    p.add_argument("model", metavar="MODEL.gguf", help="the model to run")
    p.add_argument(
        "--text", type=Path, required=True, help="UTF-8 calibration text (read as -f does)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="imatrix GGUF to write")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=-1, help="use the first N chunks (default all)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--batch", type=int, default=4, help="chunks run through a layer at once")
    p.add_argument(
        "--process-output", action="store_true", help="also collect output.weight's inputs"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dynq.evaluate import read_text
    from dynq.imatrix import collect_imatrix

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise DynqError(f"--device {args.device}: CUDA is not available in this torch build")
    if not Path(args.model).exists():
        raise DynqError(f"{args.model}: file not found")

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    im = collect_imatrix(
        args.model,
        read_text(args.text),
        ctx=args.ctx,
        chunks=None if args.chunks < 0 else args.chunks,
        device=args.device,
        batch=max(1, args.batch),
        process_output=args.process_output,
        dataset=str(args.text),
        progress=progress,
    )
    im.write(args.output)
    if not args.quiet:
        print(
            f"{args.output}: {len(im.sums)} tensors, {im.chunk_count} chunks of {im.chunk_size}",
            file=sys.stderr,
        )
    return 0
