"""dynq (library and CLI) never imports Textual; only ``dynq tui`` does, inside run()."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import importlib, pkgutil, sys
import dynq
failed = []
for m in pkgutil.walk_packages(dynq.__path__, "dynq."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except Exception as e:  # another module's own problem is not this test's business
        failed.append(f"{m.name}: {type(e).__name__}")
from dynq.cli import build_parser
build_parser()  # registers every command, dynq.cli.tui included
loaded = sorted(n for n in sys.modules if n == "textual" or n.startswith(("textual.", "tui")))
print("LOADED", loaded)
print("FAILED", failed)
"""


def test_dynq_never_imports_textual():
    p = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    assert "LOADED []" in p.stdout, p.stdout


def test_tui_command_is_registered_lazily():
    from dynq.cli import tui as cli_tui

    assert "textual" not in cli_tui.__dict__
    src = (ROOT / "dynq" / "cli" / "tui.py").read_text()
    assert "import textual" not in src and "from textual" not in src
