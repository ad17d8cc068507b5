"""Per-tensor importance from the recipe's imatrix, when one is at hand."""

from __future__ import annotations

from pathlib import Path

from dynq.recipe import LoadedRecipe


def find_imatrix(loaded: LoadedRecipe, build_root: Path) -> Path | None:
    """The imatrix a build would use: the recipe's imported file, else the computed one."""
    cal = loaded.recipe.calibration
    if cal is not None and cal.imatrix is not None:
        p = loaded.resolve(cal.imatrix.path)
        return p if p.exists() else None
    p = build_root / loaded.recipe.name / f"{loaded.recipe.name}.imatrix.gguf"
    return p if p.exists() else None


def load_importance(path: Path) -> dict[str, float]:
    """Mean importance (mean squared activation per input column) of each weight matrix."""
    from dynq.imatrix_file import load_imatrix

    im = load_imatrix(path)
    out: dict[str, float] = {}
    for name in im.sums:
        imp = im.importance(name)
        if imp is not None:
            out[name] = float(imp.mean())
    return out
