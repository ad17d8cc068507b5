"""``dynq eval REF.gguf CANDIDATE.gguf ... --text FILE`` or ``dynq eval RECIPE [--target T]``:
perplexity, KL divergence and top-1 agreement of each candidate against the reference, chunked
as ``llama-perplexity`` does. The recipe form scores the built targets (and, with
``--baselines``, the llama.cpp stock mixes it names, built first if needed) against the
recipe's source on its evaluation text, and writes an ``.eval.json`` report beside each file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynq.errors import DynqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score quantized GGUFs against a reference: PPL, KL divergence, top-1 agreement",
    )
    p.add_argument(
        "inputs",
        metavar="REF.gguf CANDIDATE.gguf... | RECIPE",
        nargs="+",
        help="a reference and candidates, or a recipe (.toml)",
    )
    p.add_argument("--text", type=Path, help="UTF-8 text (read as llama-perplexity -f does)")
    p.add_argument("--target", "-t", action="append", help="recipe form: only this target")
    p.add_argument(
        "--baselines", action="store_true", help="recipe form: also score its stock baselines"
    )
    p.add_argument("--out", type=Path, help="recipe form: where the builds are (build/<name>/)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=-1, help="score the first N chunks (default: all)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--base",
        type=Path,
        help="reference log-probs file (llama.cpp --kl-divergence-base format): reused when it "
        "matches the text and --ctx/--chunks, else written",
    )
    p.add_argument("--batch", type=int, default=4, help="chunks run through a layer at once")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise DynqError(f"--device {args.device}: CUDA is not available in this torch build")
    if args.inputs[0].endswith(".toml"):
        return run_recipe(args)
    if len(args.inputs) < 2 or args.text is None:
        raise DynqError("dynq eval needs REF.gguf CANDIDATE.gguf... --text FILE, or a RECIPE")
    args.reference, args.candidates = args.inputs[0], args.inputs[1:]
    return run_files(args)


def run_recipe(args: argparse.Namespace) -> int:
    from dynq.build import BuildOptions
    from dynq.compare import build_baselines, compare_rows, evaluate_files, render_table
    from dynq.outputs import output_path
    from dynq.recipe import load_recipe

    if len(args.inputs) > 1 or args.text is not None:
        raise DynqError("the recipe form takes one RECIPE and its own evaluation text")
    loaded = load_recipe(args.inputs[0])
    names = args.target or list(loaded.recipe.targets)
    files = {n: output_path(loaded, n, args.out) for n in names}
    if args.baselines:

        def warn(m: str) -> None:
            print(f"warning: {m}", file=sys.stderr)

        opts = BuildOptions(out=args.out, device=None if args.device == "cpu" else args.device)
        for path in build_baselines(loaded, opts, warn):
            files[f"llama.cpp:{path.stem.removeprefix(loaded.recipe.name + '-')}"] = path

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    reports = evaluate_files(
        loaded,
        files,
        args.out,
        device=args.device,
        chunks=None if args.chunks < 0 else args.chunks,
        progress=progress,
    )
    if args.format == "json":
        print(json.dumps(reports, indent=1))
    else:
        sys.stdout.write(render_table(compare_rows(loaded, args.out)))
    return 0


def run_files(args: argparse.Namespace) -> int:
    from dynq.evaluate import evaluate, read_text

    for p in [args.reference, *args.candidates]:
        if not Path(p).exists():
            raise DynqError(f"{p}: file not found")
    text = read_text(args.text)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    results = evaluate(
        args.reference,
        args.candidates,
        text,
        ctx=args.ctx,
        chunks=None if args.chunks < 0 else args.chunks,
        device=args.device,
        base_path=args.base,
        batch=max(1, args.batch),
        progress=progress,
    )
    if args.format == "json":
        out = {
            "reference": str(args.reference),
            "text": str(args.text),
            "ctx": args.ctx,
            "candidates": [r.to_json() for r in results],
        }
        print(json.dumps(out, indent=2))
        return 0
    ref_ppl = results[0].reference_ppl if results else float("nan")
    print(f"reference {args.reference}: PPL {ref_ppl:.4f}  ({results[0].n_tokens} tokens scored)")
    head = f"{'candidate':40} {'PPL':>9} {'mean KLD':>10} {'median':>10} {'p90':>10} "
    head += f"{'p99':>10} {'max':>10} {'top-1':>7}"
    print(head)
    for r in results:
        name = Path(r.path).name
        print(
            f"{name[:40]:40} {r.ppl:9.4f} {r.mean_kld:10.6f} {r.median_kld:10.6f} "
            f"{r.p90_kld:10.6f} {r.p99_kld:10.6f} {r.max_kld:10.6f} {100 * r.top1_agreement:6.2f}%"
        )
    return 0
