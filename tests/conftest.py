"""Shared fixtures: the CLI through its entry point, recipe folders, the bundled real models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "registry"


@dataclass
class Result:
    code: int
    out: str
    err: str


def dynq_command() -> list[str]:
    """The installed ``dynq`` entry point beside this Python (``python -m dynq`` without one)."""
    exe = shutil.which("dynq", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "dynq"]


@pytest.fixture
def dynq():
    """Run the ``dynq`` command (the installed entry point) in a folder."""

    def run(*args: str, cwd: Path | None = None) -> Result:
        cmd = [*dynq_command(), *map(str, args)]
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        return Result(p.returncode, p.stdout, p.stderr)

    return run


MINIMAL = """\
schema_version = 1
name = "tiny"
version = "1.0.0"
description = "smallest valid recipe"

[model]
arch = "llama"
inventory = "inventories/smollm2-135m.json"

[targets.Q4_K_M]
extends = "llama.cpp:Q4_K_M"
"""


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    """A folder with registry-like layout: inventories/ copied from the real registry."""
    (tmp_path / "inventories").mkdir()
    for name in ("smollm2-135m.json", "gemma3-270m.json"):
        shutil.copy(REGISTRY / "inventories" / name, tmp_path / "inventories" / name)
    return tmp_path


@pytest.fixture
def write_recipe(recipe_dir: Path):
    def write(text: str, name: str = "tiny") -> Path:
        p = recipe_dir / f"{name}.toml"
        p.write_text(text)
        return p

    return write
