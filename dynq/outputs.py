"""Where dynq puts what it makes: one place for every output path (importing nothing heavy,
so that publish, compare and the TUI find builds without loading torch)."""

from __future__ import annotations

from pathlib import Path

from dynq.recipe import LoadedRecipe

DEFAULT_OUT = Path("build")


def out_dir(loaded: LoadedRecipe, out: Path | None = None) -> Path:
    """A recipe's output folder: ``--out``, else ``build/<name>/`` under the current folder."""
    return out if out is not None else DEFAULT_OUT / loaded.recipe.name


def output_path(loaded: LoadedRecipe, target: str, out: Path | None = None) -> Path:
    """``<out>/<name>-<target>.gguf``."""
    return out_dir(loaded, out) / f"{loaded.recipe.name}-{target}.gguf"


def report_path(gguf_path: Path) -> Path:
    """The build report beside a GGUF."""
    return gguf_path.with_suffix(".build.json")


def eval_report_path(gguf_path: Path) -> Path:
    """The evaluation report beside a GGUF."""
    return gguf_path.with_suffix(".eval.json")


def imatrix_path(loaded: LoadedRecipe, out: Path | None = None) -> Path:
    """Where ``dynq imatrix RECIPE`` writes the imatrix computed from the calibration text."""
    return out_dir(loaded, out) / f"{loaded.recipe.name}.imatrix.gguf"


def baselines_dir(loaded: LoadedRecipe, out: Path | None = None) -> Path:
    return out_dir(loaded, out) / "baselines"


def baseline_path(loaded: LoadedRecipe, mix: str, out: Path | None = None) -> Path:
    """A stock-mix baseline of the recipe: ``<out>/baselines/<name>-<MIX>.gguf``."""
    return baselines_dir(loaded, out) / f"{loaded.recipe.name}-{mix}.gguf"
