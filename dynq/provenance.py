"""The key/values dynq sets in every output GGUF: provenance and llama.cpp's imatrix keys.

The Plan sizes the output's metadata from this same function, so the predicted file size and
the built file agree to the byte. Values here are those whose size is known before the build;
integer values are placeholders of the right width that the build fills in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dynq import __version__
from dynq.errors import RecipeError
from dynq.recipe import LoadedRecipe

KEY_RECIPE = "dynq.recipe.name"
KEY_RECIPE_VERSION = "dynq.recipe.version"
KEY_RECIPE_SHA256 = "dynq.recipe.sha256"
KEY_TARGET = "dynq.target"
KEY_VERSION = "dynq.version"

# llama.cpp's own keys (llama-quantize writes them; see LLM_KV_QUANTIZE_IMATRIX_* in llama-arch)
KEY_FILE_TYPE = "general.file_type"
KEY_QUANT_VERSION = "general.quantization_version"
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_CHUNKS = "quantize.imatrix.chunks_count"
IMATRIX_KEYS = (KEY_IMATRIX_FILE, KEY_IMATRIX_DATASET, KEY_IMATRIX_ENTRIES, KEY_IMATRIX_CHUNKS)

# a recipe's replacement chat template (model.chat_template): the template, and what it replaced
KEY_CHAT_TEMPLATE = "tokenizer.chat_template"
KEY_TEMPLATE_REPLACED = "dynq.chat_template.replaced"
KEY_TEMPLATE_SHA256 = "dynq.chat_template.sha256"
KEY_TEMPLATE_SOURCE_SHA256 = "dynq.chat_template.source_sha256"  # 64 zeros: source had none


@dataclass(frozen=True)
class ImatrixRef:
    """What an output records of its imatrix: the file's name and its first dataset."""

    file: str
    dataset: str | None


def default_imatrix_ref(loaded: LoadedRecipe) -> ImatrixRef | None:
    """The imatrix a build of this recipe uses by default: the imported file, or the one
    ``dynq imatrix`` computes from the calibration text; None without a calibration section."""
    cal = loaded.recipe.calibration
    if cal is None:
        return None
    if cal.imatrix is not None:
        return ImatrixRef(Path(cal.imatrix.path).name, Path(cal.imatrix.path).name)
    dataset = ",".join(Path(t.path).name for t in cal.text) or None
    return ImatrixRef(f"{loaded.recipe.name}.imatrix.gguf", dataset)


def chat_template_text(loaded: LoadedRecipe) -> str | None:
    """The recipe's replacement chat template (``model.chat_template``), or None."""
    ref = loaded.recipe.model.chat_template
    if ref is None:
        return None
    path = loaded.resolve(ref.path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{loaded.path}: model.chat_template: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{loaded.path}: model.chat_template: {path}: cannot read: {e}") from None


def output_metadata(
    loaded: LoadedRecipe, target: str, imatrix: ImatrixRef | None
) -> dict[str, object]:
    """Keys the build sets (replacing the source's) with values of their final size."""
    out: dict[str, object] = {
        KEY_FILE_TYPE: 0,
        KEY_QUANT_VERSION: 2,
        KEY_RECIPE: loaded.recipe.name,
        KEY_RECIPE_VERSION: loaded.recipe.version,
        KEY_RECIPE_SHA256: "0" * 64,
        KEY_TARGET: target,
        KEY_VERSION: __version__,
    }
    if imatrix is not None:
        out[KEY_IMATRIX_FILE] = imatrix.file
        if imatrix.dataset:
            out[KEY_IMATRIX_DATASET] = imatrix.dataset
        out[KEY_IMATRIX_ENTRIES] = 0
        out[KEY_IMATRIX_CHUNKS] = 0
    template = chat_template_text(loaded)
    if template is not None:
        out[KEY_CHAT_TEMPLATE] = template
        out[KEY_TEMPLATE_REPLACED] = True
        out[KEY_TEMPLATE_SHA256] = hashlib.sha256(template.encode()).hexdigest()
        out[KEY_TEMPLATE_SOURCE_SHA256] = "0" * 64  # the build fills in the source's
    return out
