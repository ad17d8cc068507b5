"""``dynq tune RECIPE --target NAME (--size SIZE | --bpw X | --like llama.cpp:MIX)``: choose
each tensor group's type to minimise the measured KLD within a size budget, and write the result
into the target as compact rules (``--dry-run``: print the diff only; ``--verify``: build and
evaluate the tuned target)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.errors import DynqError
from dynq.recipe import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="choose per-tensor types to minimise measured KLD within a size budget"
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--target", "-t", required=True, help="target to tune (created if missing)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--size", help="largest file size: bytes, or e.g. 95MB, 1.5GiB")
    budget.add_argument("--bpw", type=float, help="most bits per weight (as dynq plan reports)")
    budget.add_argument(
        "--like",
        metavar="llama.cpp:MIX",
        help="no larger than this stock mix with the recipe's shared rules",
    )
    p.add_argument(
        "--measurement",
        type=Path,
        help="dynq measure's output (default: <recipe dir>/measurements/<name>.json)",
    )
    p.add_argument(
        "--bound",
        action="append",
        default=[],
        metavar="KIND=MIN..MAX",
        help="keep a tensor kind's types in a range, e.g. attn_v=q5_0..q8_0 (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the recipe diff; write nothing")
    p.add_argument("--format", "-f", choices=("text", "markdown"), default="text", help="diff")
    p.add_argument("--verify", action="store_true", help="build and evaluate the tuned target")
    p.add_argument("--out", type=Path, help="--verify: output folder (default: build/<name>/)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="--verify: where to build and run")
    p.add_argument("--chunks", type=int, help="--verify: evaluate the first N chunks only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dynq import tune as tn
    from dynq.diff import diff_recipes, render_markdown, render_text

    loaded = load_recipe(args.recipe)
    if args.size is not None:
        budget = tn.size_budget(args.size)
    elif args.bpw is not None:
        budget = tn.bpw_budget(args.bpw)
    else:
        budget = tn.like_budget(loaded, args.target, args.like)
    bounds = [tn.parse_bound(b) for b in args.bound]
    path = args.measurement or tn.default_measurement_path(loaded)
    meas = tn.load_measurement(path, loaded.recipe.name)

    def err(msg: str) -> None:
        print(msg, file=sys.stderr)

    res = tn.tune(loaded, args.target, budget, meas, bounds, say=err)
    for w in res.warnings:
        err(f"warning: {w}")
    sol, plan = res.solution, res.plan
    summary = [
        f"{'created' if res.created else 'tuned'} target {res.target}: {plan.file_size:,} bytes, "
        f"{plan.bpw:.4f} bpw; budget {budget.describe()}",
        f"predicted KLD {res.predicted_kld:.6g} nats/token over {res.groups} groups"
        + (f" ({res.pinned_groups} pinned)" if res.pinned_groups else "")
        + f"; {tn.optimality(sol)}",
        f"{res.rules} rule(s) from measurement {path} ({meas.method or 'method not stated'})",
    ]
    if args.dry_run:
        d = diff_recipes(loaded, res.new)
        sys.stdout.write(render_markdown(d) if args.format == "markdown" else render_text(d))
        for line in summary:
            err(line)
    else:
        tn.write_result(res)
        for line in summary:
            print(line)
        print(f"wrote {loaded.path}")
        if loaded.recipe.version == res.new.recipe.version:
            print(f"hint: outputs change: bump the recipe's version ({loaded.recipe.version})")
    if args.verify:
        try:
            rep = tn.verify(
                res, args.out, args.device, args.chunks, warn=lambda m: err(f"warning: {m}")
            )
        except DynqError as e:
            raise DynqError(f"--verify: {e}") from None
        measured = float(rep["mean_kld"])  # type: ignore[arg-type]
        print(
            f"verify {res.target}: predicted KLD {res.predicted_kld:.6g}, measured mean KLD "
            f"{measured:.6g} ({measured - res.predicted_kld:+.3g}), file {rep['file']}"
        )
    return 0
