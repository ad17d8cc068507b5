"""``dynq publish RECIPE --repo OWNER/NAME``: assemble the Hub repository of a recipe's built
targets (GGUFs, reports, recipe, model card) in a folder, then upload it in one commit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynq.recipe import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="assemble a recipe's built targets into a Hub repository and upload it"
    )
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub repository")
    p.add_argument("--target", "-t", action="append", help="only this target (repeatable)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write the folder and print what would be uploaded (default without a token)",
    )
    p.add_argument("--revision", metavar="BRANCH", help="commit to this branch (default: main)")
    p.add_argument(
        "--out", type=Path, help="the repository folder (default: dist/<owner>--<name>/)"
    )
    p.add_argument("--build-dir", type=Path, help="where the builds are (default: build/<name>/)")
    p.add_argument(
        "--shard-size",
        default="50G",
        metavar="SIZE",
        help="split GGUFs larger than this into gguf-split shards (default 50G; M, G, MiB, GiB)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from huggingface_hub import get_token

    from dynq.publish import assemble, check_repo, describe, parse_size, upload

    def err(msg: str) -> None:
        print(msg, file=sys.stderr)

    check_repo(args.repo)
    shard_size = parse_size(args.shard_size)
    loaded = load_recipe(args.recipe)
    token = get_token()
    dry = args.dry_run or not token
    if not args.dry_run and not token:
        err("dynq publish: no Hugging Face token (HF_TOKEN or `hf auth login`): dry run")
    asm = assemble(
        loaded,
        args.repo,
        targets=args.target,
        build_dir=args.build_dir,
        out=args.out,
        revision=args.revision,
        shard_size=shard_size,
        require_eval=not dry,
        warn=lambda m: err(f"warning: {m}"),
    )
    if dry:
        print("dry run: nothing uploaded; would upload")
        print("\n".join(describe(asm)))
        print(
            f"(files of {loaded.recipe.name} on the Hub that the folder does not have would be "
            "deleted in the same commit)"
        )
        return 0
    print("uploading")
    print("\n".join(describe(asm)))
    url, deleted = upload(asm, token, info=err)
    print(f"committed {url}" + (f" (deleted {len(deleted)} stale file(s))" if deleted else ""))
    return 0
