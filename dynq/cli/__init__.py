"""The ``dynq`` command line: thin wrappers over the library, one module per command.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func=run``; ``run(args) -> int`` returns the exit status. A ``DynqError`` anywhere becomes
its one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading

from dynq import __version__
from dynq.errors import DynqError

# Command modules, in the order ``dynq --help`` lists them.
COMMANDS = [
    "init",
    "validate",
    "fmt",
    "schema",
    "inventory",
    "plan",
    "diff",
    "tune",
    "build",
    "imatrix",
    "measure",
    "eval",
    "compare",
    "template",
    "publish",
    "tui",
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone: a command module imports what its
    command needs, and importing all of them costs a user of one about 0.4 s."""
    parser = argparse.ArgumentParser(
        prog="dynq",
        description="Per-tensor ('dynamic') GGUF quantization recipes: validate, plan, build.",
    )
    parser.add_argument("--version", action="version", version=f"dynq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command is None else [command]:
        importlib.import_module(f"dynq.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    first = (sys.argv[1:] if argv is None else argv)[:1]
    parser = build_parser(first[0] if first and first[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DynqError as e:
        print(f"dynq: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynq: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``dynq`` command: :func:`main`, then exit without the interpreter's teardown when
    nothing is left running. Freeing what a build loaded (numba's compiled code above all) took
    0.1-0.3 s after every file was written, closed and renamed; output is flushed first, and
    with any other thread still alive the exit is the ordinary one."""
    code = main()
    from dynq.kernels import chunks

    chunks.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() == 1:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
