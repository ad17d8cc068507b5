"""The registry: a folder of recipes, ``registry/<name>.toml``."""

from __future__ import annotations

from pathlib import Path

from dynq.errors import RecipeError

DEFAULT_DIR = Path("registry")


def find_recipes(paths: list[str] | None = None) -> list[Path]:
    """Recipe files named on the command line (files or folders), else every one in registry/."""
    if not paths:
        if not DEFAULT_DIR.is_dir():
            raise RecipeError(f"{DEFAULT_DIR}/: no registry folder here; name recipe files")
        paths = [str(DEFAULT_DIR)]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.glob("*.toml"))
        else:
            out.append(p)
    if not out:
        raise RecipeError(f"{', '.join(paths)}: no recipe files (*.toml) found")
    return out
